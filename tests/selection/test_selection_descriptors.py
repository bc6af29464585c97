"""Descriptors by name: ACE projections, CHGNet and SevenNet embeddings, and the disk cache."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from uqf_selection_data import small_cells

from uq_flows.errors import InputError
from uq_flows.selection.descriptors import (
    DescriptorCache,
    compute_descriptors,
    parse_descriptor,
)
from uq_flows.settings import get_settings


def shuffled(atoms, seed=0):
    order = np.random.default_rng(seed).permutation(len(atoms))
    return atoms[order]


def test_names_and_bad_names(ace_files, tmp_path):
    assert parse_descriptor(None).name == "chgnet-0.3.0"
    assert parse_descriptor("sevennet-0-11jul2024").kind == "sevennet"
    assert parse_descriptor(f"ace:{ace_files['a']}").kind == "ace"
    with pytest.raises(InputError, match="unknown descriptor"):
        parse_descriptor("soap")
    with pytest.raises(InputError, match="only CHGNet and SevenNet"):
        parse_descriptor("emt=ase:ase.calculators.emt:EMT")
    with pytest.raises(InputError, match="does not exist"):
        parse_descriptor(f"ace:{tmp_path / 'missing.yaml'}")
    yace = tmp_path / "p.yace"
    yace.write_text("x")
    with pytest.raises(InputError, match="B-basis .yaml"):
        parse_descriptor(f"ace:{yace}")


def test_ace_descriptor_is_per_species_mean_plus_composition(ace_files):
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    cusi = si.copy()
    cusi.numbers[:2] = 29  # 2 Cu, 6 Si
    result = compute_descriptors([si, cusi, shuffled(cusi)], f"ace:{ace_files['a']}", cache=False)
    assert result.status == ["ok"] * 3
    features = result.features
    assert features[0, -2:].tolist() == [0.0, 1.0]  # fractions of Cu, Si (basis order)
    assert features[1, -2:].tolist() == [0.25, 0.75]
    n = (features.shape[1] - 2) // 2
    assert np.all(features[0, :n] == 0)  # no Cu atoms: a zero Cu block
    assert np.allclose(features[1], features[2])  # atom order does not matter
    assert not np.allclose(features[0], features[1])


def test_descriptor_failures_are_statuses(ace_files):
    al = bulk("Al", "fcc", a=4.05)
    result = compute_descriptors([bulk("Si", "diamond", a=5.43), al], f"ace:{ace_files['a']}", cache=False)
    assert result.status == ["ok", "error"] and "Z=[13]" in result.reasons[1]
    assert np.isnan(result.features[1]).all()
    with pytest.raises(InputError, match="no structures"):
        compute_descriptors([], f"ace:{ace_files['a']}")
    with pytest.raises(InputError, match="no atoms"):
        compute_descriptors([Atoms()], f"ace:{ace_files['a']}")


def test_cache_is_keyed_by_structure_and_descriptor(ace_files, tmp_path):
    cells = small_cells(4)
    name = f"ace:{ace_files['a']}"
    first = compute_descriptors(cells, name)
    assert first.n_cached == 0
    assert (get_settings().home / "cache" / "descriptors.sqlite").exists()
    second = compute_descriptors(cells[::-1], name)
    assert second.n_cached == 4 and np.array_equal(second.features, first.features[::-1])
    other = compute_descriptors(cells, f"ace:{ace_files['c']}")  # another file: not the cached rows
    assert other.n_cached == 0
    assert np.allclose(other.features, first.features)  # same basis functions, other coefficients
    moved = cells[0].copy()
    moved.positions[0, 0] += 0.01
    assert compute_descriptors([moved], name).n_cached == 0
    # a poisoned cache entry shows that cached rows are really read back
    spec = parse_descriptor(name)
    DescriptorCache().put(spec.cache_key, {first.ids[0]: np.full(first.features.shape[1], 7.0)})
    assert (compute_descriptors(cells[:1], name).features == 7.0).all()
    assert (compute_descriptors(cells[:1], name, cache=False).features != 7.0).any()


@pytest.mark.slow
@pytest.mark.parametrize("name, width", [("chgnet-0.3.0", 64), ("sevennet-0-11jul2024", 128)])
def test_umlip_embeddings_are_invariant_and_discriminate(name, width):
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    rattled = si.copy()
    rattled.rattle(0.1, seed=1)
    translated = rattled.copy()
    translated.translate([0.3, -0.2, 0.1])
    cu = bulk("Cu", "fcc", a=3.61, cubic=True)
    result = compute_descriptors([si, rattled, shuffled(rattled), translated, cu], name, cache=False)
    assert result.status == ["ok"] * 5 and result.features.shape == (5, width)
    f = result.features
    assert np.allclose(f[1], f[2], atol=1e-5) and np.allclose(f[1], f[3], atol=1e-5)
    assert np.linalg.norm(f[0] - f[4]) > 3 * np.linalg.norm(f[0] - f[1]) > 0


@pytest.mark.slow
def test_chgnet_embedding_needs_a_periodic_cell():
    molecule = Atoms("Si2", positions=[[0, 0, 0], [0, 0, 2.3]])
    result = compute_descriptors([molecule, bulk("Si", "diamond", a=5.43)], "chgnet-0.3.0", cache=False)
    assert result.status == ["error", "ok"] and "3D-periodic" in result.reasons[0]
