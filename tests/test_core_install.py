"""`pip install uq-flows` without extras: the engine-free science and its commands work, and a
command that needs an extra says which one (exit 2), instead of a traceback.

The extras' packages are made unimportable in a subprocess (a meta-path finder refuses them),
as they would be in an environment without the extras.
"""

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import emt_dataset, perturbed
from uq_flows.errors import EXTRAS
from uq_flows.io import write_extxyz

REPO = Path(__file__).resolve().parents[1]
CORE_ONLY = """
import importlib.abc, sys
EXTRAS = {extras!r}
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in EXTRAS:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, NotInstalled())
from uq_flows.cli import app
app(sys.argv[1:], prog_name="uq-flows")
"""


def core_cli(tmp_path, *args):
    script = tmp_path / "core_only.py"
    script.write_text(CORE_ONLY.format(extras=sorted(EXTRAS)))
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                                                          "UQ_FLOWS_HOME": str(tmp_path / "home")})


def test_the_core_install_evaluates_mixes_and_generates_and_names_the_extra_it_lacks(tmp_path):
    reference = emt_dataset()
    write_extxyz(tmp_path / "ref.extxyz", reference)
    write_extxyz(tmp_path / "a.extxyz", perturbed(reference, 0.05, seed=1))
    write_extxyz(tmp_path / "b.extxyz", perturbed(reference, 0.1, seed=2))
    members = ("--prediction", "a=a.extxyz", "--prediction", "b=b.extxyz")
    evaluated = core_cli(tmp_path, "evaluate", "--reference", "ref.extxyz", *members, "--uc", "0.1", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["n_configs"] == len(reference)
    mixed = core_cli(tmp_path, "mix", "--reference", "ref.extxyz", *members, "--uc", "0.1", "--energy-from", "a",
                     "--forces-from", "b", "--out", "mixed.extxyz", "--json")
    assert mixed.returncode == 0 and (tmp_path / "mixed.extxyz").exists(), mixed.stderr
    generated = core_cli(tmp_path, "generate", "Cu", "--n", "2", "--out", "cells.extxyz", "--json")
    assert generated.returncode == 0 and json.loads(generated.stdout)["n_structures"] > 2, generated.stderr

    for args, extra in ((("status", "--json"), "workflow"),
                        (("fit", "ref.extxyz", "--backend", "linear", "--out", "ace", "--json"), "ace")):
        refused = core_cli(tmp_path, *args)
        error = json.loads(refused.stdout)["error"]
        assert refused.returncode == 2 and error["kind"] == "bad_input", refused.stderr
        assert f"pip install 'uq-flows[{extra}]'" in error["message"] and "Traceback" not in refused.stderr
    assert not (tmp_path / "ace").exists()
    doctor = core_cli(tmp_path, "doctor", "--no-database", "--json")
    checks = {row["check"]: row for row in json.loads(doctor.stdout)["checks"]}
    assert doctor.returncode == 1 and checks["member chgnet-0.3.0"]["hint"] == "pip install 'uq-flows[umlip]'"
