"""Continue a loop whose flow cannot go on (a job failed for good), from its newest state."""

from __future__ import annotations

import datetime as _dt
import os
import socket
from typing import TYPE_CHECKING

from monty.json import MontyDecoder

from uq_flows.labeling.labels import Label
from uq_flows.manager.status import loop_status
from uq_flows.manager.stores import open_jobstore
from uq_flows.manager.advance import submit_iteration
from uq_flows.manager.submit import loop_fw_ids
from uq_flows.stages import DFT_LABEL, ITERATION, LOOP_KEY, LOOP_STATE, STAGE_KEY

if TYPE_CHECKING:
    from fireworks import LaunchPad

REBUILT_KEY = "uq_flows_rebuilt"  # workflow metadata: who claimed the rebuild of this broken iteration, when


def rebuild_loop(lp: LaunchPad, loop: str) -> dict | None:
    """Submit again the iteration a failed job stopped, reusing every DFT label the loop has.

    Called by ``uq-flows resume`` after the reruns. Nothing happens while any job of the loop
    can still run, or when the loop converged. Otherwise the broken fireworks are defused and
    the next iteration is submitted again: from the newest loop-state document, or for
    iteration 0 from the first iteration job's own inputs (the candidates are references into
    the campaign database). Every ok DFT label the loop already made is reused, so no structure
    goes to DFT twice. Jobs are found by their stage tag. The broken iteration's workflow is
    claimed first with a conditional update (``metadata.uq_flows_rebuilt``), so two resumers
    never rebuild it twice.
    """
    entries = loop_status(lp, loop)["loops"]
    fw_ids = loop_fw_ids(lp, loop)
    first = lp.fireworks.find_one({"fw_id": {"$in": fw_ids}, f"spec._tasks.job.metadata.{STAGE_KEY}": ITERATION,
                                   "spec._tasks.job.metadata.iteration": 0})
    if not entries:  # not a uq-flows loop (or nothing submitted): not ours to rebuild
        return None
    states = entries[0]["states"]
    # WAITING jobs below a failed one never become ready: only READY/RUNNING/RESERVED can go on
    if any(states.get(s) for s in ("READY", "RUNNING", "RESERVED")) or not states.get("FIZZLED"):
        return None
    decode = MontyDecoder().process_decoded

    def outputs(stage: str, properties=("output",)):
        return store.query({f"metadata.{STAGE_KEY}": stage, f"metadata.{LOOP_KEY}": loop},
                           properties=list(properties), load=True)

    store = open_jobstore()
    with store:
        summaries = [decode(d["output"]) for d in outputs(LOOP_STATE)]
        known = [decode(d["output"]) for d in outputs(DFT_LABEL)]
    n_known = sum(isinstance(label, Label) and label.ok
                  for output in known for label in (output if isinstance(output, list) else [output]))
    newest = max(summaries, key=lambda state: state.iteration, default=None)
    if newest is not None and newest.converged:
        return None
    if newest is None:
        if first is None:
            return None
        config, iteration, candidates, dft_so_far = decode(first["spec"]["_tasks"][0]["job"]["function_args"])[:4]
    else:
        config, candidates = newest.continuation["config"], newest.continuation["next_candidates"]
        iteration, dft_so_far = newest.iteration + 1, newest.dft_total
    broken = [fw["fw_id"] for fw in lp.fireworks.find({"fw_id": {"$in": fw_ids}, "state": "FIZZLED"}, {"fw_id": 1})]
    stuck = [fw["fw_id"] for fw in lp.fireworks.find({"fw_id": {"$in": fw_ids}, "state": "WAITING"}, {"fw_id": 1})]
    claim = {"nodes": {"$in": broken}, f"metadata.{LOOP_KEY}": loop, "metadata.iteration": iteration}
    mark = {"by": f"{socket.gethostname()}:{os.getpid()}", "at": _dt.datetime.now(_dt.UTC).isoformat()}
    if lp.workflows.update_one({**claim, f"metadata.{REBUILT_KEY}": {"$exists": False}},
                               {"$set": {f"metadata.{REBUILT_KEY}": mark}}).modified_count != 1:
        return None  # another resumer is rebuilding it
    try:
        for fw_id in broken + stuck:
            lp.defuse_fw(fw_id)
        submission = submit_iteration(lp, config, iteration, candidates, dft_so_far, reuse_dft=True)
    except BaseException:
        lp.workflows.update_one({**claim, f"metadata.{REBUILT_KEY}": mark}, {"$unset": {f"metadata.{REBUILT_KEY}": ""}})
        raise
    return {"iteration": iteration, "defused": broken + stuck, "reused_dft_labels": n_known,
            "workflow_id": submission.workflow_id}
