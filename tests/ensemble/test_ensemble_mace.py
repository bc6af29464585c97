"""A MACE member from a local model file: a tiny randomly initialised model, no downloads."""

import warnings

import numpy as np
import pytest
from ase.build import bulk

from uq_flows.ensemble import load_calculator, parse_member, predict_member, supported_numbers
from uq_flows.errors import MemberError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mace_file(tmp_path_factory):
    """A 1-interaction MACE for Si with random weights, pickled like a trained model file."""
    import torch

    from uq_flows.ensemble.members import prepare_torch

    prepare_torch()  # e3nn 0.4 needs this under torch >= 2.6 before import
    from e3nn import o3
    from mace import modules

    torch.manual_seed(0)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    with warnings.catch_warnings():  # e3nn scripts modules noisily while building
        warnings.simplefilter("ignore", UserWarning)
        model = modules.MACE(
            r_max=4.0,
            num_bessel=4,
            num_polynomial_cutoff=3,
            max_ell=1,
            interaction_cls=block,
            interaction_cls_first=block,
            num_interactions=1,
            num_elements=1,
            hidden_irreps=o3.Irreps("4x0e+4x1o"),
            MLP_irreps=o3.Irreps("4x0e"),
            atomic_energies=np.array([-5.0]),
            avg_num_neighbors=8.0,
            atomic_numbers=[14],
            correlation=2,
            gate=torch.nn.functional.silu,
        )
    path = tmp_path_factory.mktemp("mace") / "tiny-si.model"
    torch.save(model, path)
    return path


@pytest.fixture(scope="module")
def mace_member(mace_file):
    spec = parse_member(f"tiny=mace:{mace_file}")
    return spec, load_calculator(spec, "cpu")


def test_mace_file_member_predicts(mace_member):
    spec, calc = mace_member
    assert spec.kind == "mace" and spec.name == "tiny" and spec.functional is None
    assert "mace-torch" in spec.version and "sha256" in spec.version
    assert str(next(calc.models[0].parameters()).dtype) == "torch.float64"
    rattled = bulk("Si", "diamond", a=5.43, cubic=True)
    rattled.rattle(0.1, seed=7)
    perfect = bulk("Si", "diamond", a=5.43, cubic=True)
    p = predict_member(spec, [rattled, perfect], calculator=calc)
    assert p.status == ["ok", "ok"]
    assert np.isfinite(p.energies).all() and np.isfinite(p.forces).all() and np.isfinite(p.stresses).all()
    assert np.abs(p.structure_forces(0)).max() > 1e-6  # random weights: small but real forces
    assert np.abs(p.structure_forces(1)).max() < 1e-10  # symmetry, in float64
    # F = -dE/dx on the real loading path
    h = 1e-4
    plus, minus = rattled.copy(), rattled.copy()
    plus.positions[3, 1] += h
    minus.positions[3, 1] -= h
    e = predict_member(spec, [plus, minus], calculator=calc).energies
    assert p.forces[3, 1] == pytest.approx(-(e[0] - e[1]) / (2 * h), rel=1e-4, abs=1e-9)


def test_mace_coverage_comes_from_the_model(mace_member):
    spec, calc = mace_member
    assert supported_numbers(spec, calc) == frozenset({14})
    copper = bulk("Cu", "fcc", a=3.61, cubic=True)
    p = predict_member(spec, [copper], calculator=calc)
    assert p.status == ["unsupported_element"] and p.reasons == ["tiny does not cover Cu (Z=29)"]


def test_broken_mace_file_is_a_member_error(tmp_path):
    path = tmp_path / "broken.model"
    path.write_bytes(b"this is not a torch file")
    spec = parse_member(f"broken=mace:{path}")
    with pytest.raises(MemberError, match="cannot load member broken"):
        load_calculator(spec, "cpu")


def test_mace_file_removed_after_parsing(tmp_path):
    path = tmp_path / "gone.model"
    path.write_bytes(b"x")
    spec = parse_member(f"mace:{path}")
    path.unlink()
    with pytest.raises(MemberError, match="does not exist"):
        load_calculator(spec, "cpu")
