"""The loop config's model choices: stored-prediction members, a teacher named by member, top_n."""

import json

import pytest
import yaml

from tests.conftest import emt_dataset
from uq_flows.errors import InputError
from uq_flows.flows.config import LoopConfig, load_config
from uq_flows.io import write_extxyz


@pytest.fixture
def replay_folder(tmp_path):
    """A config folder with two members' stored predictions and an RMSE file, named relatively."""
    for name in ("a", "b", "c"):
        write_extxyz(tmp_path / f"{name}.extxyz", emt_dataset(2))
    (tmp_path / "rmse.json").write_text(json.dumps({"rmse": {"a": 0.30, "b": 0.10, "c": 0.20}}))
    return tmp_path


def write(folder, **config):
    base = {"name": "replay", "elements": ["Cu"], "generate": {"n": 2, "max_atoms": 8},
            "members": ["a=precomputed:a.extxyz", "b=precomputed-per-atom:b.extxyz", "c=precomputed:c.extxyz"],
            "dft": {"labeller": "calculator"}, "select": {"formation_energy_prefilter": False}}
    path = folder / "loop.yaml"
    path.write_text(yaml.safe_dump(base | config))
    return path


def test_member_files_are_found_beside_the_config_and_a_teacher_may_name_a_member(replay_folder, monkeypatch):
    monkeypatch.chdir(replay_folder.parent)  # not the config's folder
    config = load_config(write(replay_folder, teacher={"energy_from": "b", "forces_from": "a"}))
    assert config.members[0] == f"a=precomputed:{replay_folder / 'a.extxyz'}"
    assert config.teacher.energy_from == f"b=precomputed-per-atom:{replay_folder / 'b.extxyz'}"
    assert config.teacher.forces_from == config.members[0]
    assert LoopConfig.model_validate(config.model_dump()) == config  # a stored config reads back the same


def test_top_n_keeps_the_members_of_lowest_rmse(replay_folder):
    config = load_config(write(replay_folder, weights="rmse.json", top_n=2))
    assert [text.split("=")[0] for text in config.members] == ["b", "c"]
    assert LoopConfig.model_validate(config.model_dump()).members == config.members  # idempotent
    with pytest.raises(InputError, match="top_n ranks members by force RMSE: give weights"):
        load_config(write(replay_folder, weights="equal", top_n=2))
    with pytest.raises(InputError, match=r"top_n \(4\) exceeds the 3 members"):
        load_config(write(replay_folder, weights="rmse.json", top_n=4))
    with pytest.raises(InputError, match="no force RMSE for a, b, c in paper weights"):
        load_config(write(replay_folder, top_n=2))
    with pytest.raises(InputError, match="stored predictions .* do not exist"):
        load_config(write(replay_folder, members=["a=precomputed:a.extxyz", "x=precomputed:missing.extxyz"]))


def test_two_loops_of_one_config_get_two_folders(tmp_path):
    from uq_flows.flows.loop import loop_folder

    base = {"elements": ["Cu"], "members": ["chgnet-0.3.0", "chgnet-0.2.0"], "workdir": str(tmp_path),
            "select": {"formation_energy_prefilter": False}}
    first, second = (LoopConfig(name=f"cu-2026120{k}", **base) for k in (1, 2))
    assert loop_folder(first) == tmp_path / "cu-20261201" and loop_folder(second) == tmp_path / "cu-20261202"
