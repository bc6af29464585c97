"""The README's commands, as written: every one parses (options, types, required values), and the
ones that run in minutes on a workstation run here, in order, on small data in a scratch folder."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer

from tests.cli_helpers import run
from tests.conftest import emt_dataset
from uq_flows.cli import app
from uq_flows.cli.common import with_current_spellings
from uq_flows.io import read_many, with_labels, write_extxyz, write_structures

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
PLACEHOLDERS = {"[LOOP]": None, "LOOP": "demo"}  # `status [LOOP]`: optional; `results LOOP`: a loop's name


def readme_commands() -> list[list[str]]:
    """Every command line of the README's ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = [PLACEHOLDERS.get(word, word) for word in shlex.split(line, comments=True)]
            if words:
                commands.append([word for word in words if word is not None])
    return commands


def readme_command(*start: str) -> list[str]:
    """The README's one `uq-flows` command whose arguments start with ``start``."""
    found = [words[1:] for words in readme_commands() if words[0] == "uq-flows" and tuple(words[1:1 + len(start)]) == start]
    assert len(found) == 1, (start, found)
    return found[0]


def test_every_readme_command_parses():
    group = typer.main.get_command(app)
    makefile = (ROOT / "Makefile").read_text()
    commands = readme_commands()
    assert len(commands) >= 25
    for words in commands:
        if words[0] == "make":
            assert re.search(rf"^{re.escape(words[1])}:", makefile, re.M), words
            continue
        if words[0] != "uq-flows":  # shell lines around them (source FILE, a rendered script)
            continue
        assert with_current_spellings(words[1:], group.commands) == words[1:], words  # no earlier spelling
        context = group.make_context("uq-flows", words[1:])
        (name, *rest) = context._protected_args + context.args
        command = group.commands[name]
        command.make_context(name, rest, parent=context)  # raises on an unknown option, a bad value, a missing one


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path, monkeypatch):
    """Score → evaluate → mix → measure-rmse → label (CP2K and a teacher) → generate → fit → explore
    → calibrate → cago → gamma → select → status → doctor, each the README's own line. Stand-in
    inputs where the README assumes the user's data: dft.extxyz is SevenNet's labels of the scored
    structures, cp2k.extxyz CHGNet's shifted by 3 eV/atom (what alignment is for), train, test and
    validation sets EMT-labelled Cu; explore starts from two of the generated structures and CAGO
    from three MD snapshots, to keep the test short. `run`, `submit`, `results`, `report`, `resume`
    and the pacemaker fit run in tests/flows, tests/manager and tests/ace; here they parse."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "examples" / "structures", tmp_path / "examples" / "structures")

    scored = json.loads(run(*readme_command("score")).stdout)
    assert scored["n_structures"] == 7 and scored["n_failed"] == 0
    write_extxyz("dft.extxyz", read_many([Path("preds/sevennet-0-11jul2024.extxyz")]))
    shutil.copy("preds/chgnet-0.3.0.extxyz", "preds/a.extxyz")
    shutil.copy("preds/chgnet-0.3.0.extxyz", "a.extxyz")
    shutil.copy("preds/chgnet-0.2.0.extxyz", "b.extxyz")
    write_structures("b.pkl.gz", read_many([Path("b.extxyz")]))
    write_extxyz("cp2k.extxyz", [with_labels(atoms, atoms.get_potential_energy() + 3.0 * len(atoms), atoms.get_forces())
                                 for atoms in read_many([Path("a.extxyz")])])

    run(*readme_command("evaluate"))
    assert any(Path("figs").iterdir())
    run(*readme_command("mix", "--reference", "dft.extxyz"))
    alignment = json.loads(run(*readme_command("mix", "--reference", "cp2k.extxyz")).stdout)["alignment"]
    assert alignment["applied"] and all(abs(shift - 3.0) < 1e-6 for shift in alignment["shifts"].values())
    run(*readme_command("measure-rmse"))
    assert set(json.loads(Path("rmse.json").read_text())["rmse"]) == {"chgnet-0.3.0", "sevennet-l3i5"}

    write_extxyz("structures.extxyz", read_many([Path("examples/structures/POSCAR_Si2_compressed")]))
    labelled = json.loads(run(*readme_command("label", "structures.extxyz", "--model", "cp2k")).stdout)
    assert labelled["n_failed"] == 0 and labelled["labels"][0]["source"] == "cp2k"
    assert Path("labelled.extxyz").is_file() and any(Path("runs").iterdir())
    run(*readme_command("label", "structures.extxyz", "--model", "chgnet-0.3.0"))
    assert Path("teacher.pkl.gz").is_file()

    run(*readme_command("generate"))
    write_structures("train.pkl.gz", emt_dataset(16, seed=0))
    write_structures("test.pkl.gz", emt_dataset(6, seed=1))
    write_extxyz("validation.extxyz", emt_dataset(8, seed=2))
    fitted = json.loads(run(*readme_command("fit", "train.pkl.gz", "--backend", "linear")).stdout)
    assert fitted["potentials"] == [f"ace/member-{k}/potential.yaml" for k in range(4)]
    starts = read_many([Path("start.extxyz")])
    write_extxyz("start.extxyz", starts[:2])
    run(*readme_command("explore"))
    write_extxyz("md.extxyz", read_many([Path("md.extxyz")])[::13][:3])
    run(*readme_command("calibrate"))
    adversarial = json.loads(run(*readme_command("cago")).stdout)
    assert adversarial["n_seeds"] == 3 and Path("adversarial.extxyz").is_file()
    write_extxyz("new.extxyz", starts)
    assert json.loads(run(*readme_command("gamma")).stdout)["n_structures"] == len(starts)

    run("generate", "Cu", "--n", 50, "--out", "candidates.extxyz")  # enough for the README's 100 clusters
    selected = json.loads(run(*readme_command("select", "candidates.extxyz")).stdout)
    assert 0 < selected["n_selected"] <= 100 and Path("selected.extxyz").is_file() and Path("pca.png").is_file()
    np.save("features.npy", np.random.default_rng(0).normal(size=(2500, 8)))
    assert json.loads(run(*readme_command("select", "--features", "features.npy")).stdout)["n_selected"] == 2000
    assert json.loads(run(*readme_command("status")).stdout) == {"loops": []}
    run(*readme_command("doctor"))
