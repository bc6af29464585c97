"""Campaign scale on FireWorks (embedded): job inputs are references, so no document grows with the campaign.

The models cost nearly nothing (EMT members, reference and teacher), so what is measured is the
workflow: every FireWorks spec, launch record and JobStore document stays under 100 kB, whatever
the number of candidates. ``benchmarks/loop_scale.py`` runs the same loop at 10^3-10^5.
"""

import json
import os

import bson
import numpy as np
import pytest
import yaml
from ase.build import bulk

from tests.cli_helpers import run_json
from uq_flows.io import write_structures

EMT = "emt=ase:ase.calculators.emt:EMT"
LIMIT = 100_000


def rattled_cells(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    cells = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", 3.61 * (1 + 0.01 * (k % 5 - 2)), cubic=True)
        atoms.positions += rng.normal(0, 0.03 + 0.02 * (k % 4), atoms.positions.shape)
        cells.append(atoms)
    return cells


def launchpad_documents(home):
    """Every fireworks, launches and workflows document, live and archived (finished iterations)."""
    from bson import json_util

    live = json_util.loads((home / "launchpad.json").read_text())["uq_flows"]
    docs = {name: list(live[name]["documents"]) for name in ("fireworks", "launches", "workflows")}
    for path in (home / "launchpad-archive").rglob("*.json"):
        archived = json_util.loads(path.read_text())
        docs["fireworks"] += archived["fireworks"]
        docs["launches"] += archived["launches"]
        docs["workflows"].append(archived["workflow"])
    return docs


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_no_spec_launch_or_jobstore_document_grows_with_the_candidates(tmp_path):
    n = int(os.environ.get("UQ_TEST_SCALE_CANDIDATES", "3000"))  # 20000: the size, ~10 min here
    write_structures(tmp_path / "candidates.extxyz", rattled_cells(n))
    config = {
        "name": "scale", "elements": ["Cu"], "structures": [str(tmp_path / "candidates.extxyz")], "generate": None,
        "members": [EMT, "stretched=ase:tests.flows.slow_calculators:StretchedEMT"], "uc": 0.05,
        "dft": {"labeller": "calculator", "calculator": EMT, "batch_size": 4},
        "teacher": {"energy_from": EMT},
        "fit": {"backend": "linear", "n_functions": 8, "ensemble_size": 2},
        "explore": {"n_seeds": 2, "md": {"steps": 20, "snapshot_every": 10}, "cago": None},
        "select": {"max_candidates": 20, "qbc_config": {"energy_threshold": 1e-6, "force_threshold": 1e-6,
                                                        "stress_threshold": 1e-6}},
        "convergence": {"max_iterations": 2, "dft_budget_per_iteration": 40},
    }
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump(config))
    (loop,) = run_json("run", tmp_path / "loop.yaml")["loops"]
    assert loop["state"] == "completed" and loop["fizzled"] == [] and len(loop["iterations"]) == 2
    assert loop["iterations"][0]["n_candidates"] == n

    home = tmp_path / "uq-home"
    docs = launchpad_documents(home)
    specs = {fw["name"]: len(bson.encode(fw)) for fw in docs["fireworks"]}
    assert len(specs) > 20 and max(specs.values()) < LIMIT, sorted(specs.items(), key=lambda kv: -kv[1])[:3]
    assert max(len(bson.encode(wf)) for wf in docs["workflows"]) < LIMIT
    assert len(docs["workflows"]) == 2  # one workflow per iteration

    from uq_flows.manager.stores import open_jobstore

    store = open_jobstore()
    with store:
        outputs = {d["name"]: len(bson.encode(d)) for d in store.docs_store.query({})}
    assert max(outputs.values()) < LIMIT, sorted(outputs.items(), key=lambda kv: -kv[1])[:3]
    # the candidates were stored once, in chunks, and no job carried them
    from uq_flows.campaign import STRUCTURES, Campaign

    with Campaign.open() as campaign:
        assert campaign[STRUCTURES].count_documents({"loop": loop["id"], "iteration": 0, "stage": {"$ne": "explored"}}) == n
    largest_launch = max(len(bson.encode(x)) for x in docs["launches"])  # the job specs a job made at run time
    assert largest_launch < LIMIT, largest_launch
    print(json.dumps({"largest_spec": max(specs.values()), "largest_launch": largest_launch,
                      "largest_jobstore_document": max(outputs.values())}))
