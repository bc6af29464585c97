"""One workflow per iteration: each iteration's workflow ends in an advance firework.

A loop iteration is submitted as its own workflow: the iteration job (which replaces itself by
the whole iteration, through FireWorks detours) and, as its child, an advance firework that
runs once everything the iteration made has completed. The advance task reads the
iteration's loop-state document in the campaign database; if it names a next iteration it
claims it atomically (``next_status`` pending → submitted, so a rerun or a concurrent
resumer never submits it twice) and submits it, with its own advance firework, to the
launchpad of this worker's settings. The loop-state document records the new workflow.
No workflow grows with the campaign, and resume and rebuild work iteration by iteration.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from fireworks import Firework, FiretaskBase, FWAction, Workflow, explicit_serialize

from uq_flows.campaign import LOOPS, Campaign, StructureSet
from uq_flows.flows.config import LoopConfig
from uq_flows.flows.loop import _tagged, new_iteration
from uq_flows.manager.submit import Submission, submit_workflow, to_workflow

if TYPE_CHECKING:
    from fireworks import LaunchPad

ADVANCE_CATEGORY = "cpu"


def submit_iteration(lp: LaunchPad, config: LoopConfig, iteration: int, candidates: StructureSet, dft_so_far: int,
                     reuse_dft: bool = False) -> Submission:
    """Submit iteration ``iteration`` of a loop as a workflow of its own, ending in its advance firework."""
    from jobflow import Flow

    first = new_iteration(config, iteration, candidates, dft_so_far, reuse_dft)
    flow = _tagged(Flow([first], output=first.output, name=f"{config.name} iteration {iteration}"), config, iteration)
    wf = to_workflow(flow, loop=config.name, name=f"{config.name} iteration {iteration}",
                     metadata={"iteration": iteration})
    (root,) = wf.fws
    advance = Firework([AdvanceLoop(loop=config.name, iteration=iteration)], name=f"advance {iteration}",
                       spec={"_category": ADVANCE_CATEGORY}, parents=[root])
    return submit_workflow(Workflow([root, advance], name=wf.name, metadata=wf.metadata), lp, loop=config.name)


@explicit_serialize
class AdvanceLoop(FiretaskBase):
    """Submit the next iteration named by this iteration's loop-state document (once)."""

    required_params = ["loop", "iteration"]

    def run_task(self, fw_spec):
        from uq_flows.manager.launchpad import is_embedded, open_launchpad

        loop, iteration = self["loop"], self["iteration"]
        with Campaign.open() as campaign:
            state = campaign.loop_document(loop, iteration, "state")
            if state is None:
                raise RuntimeError(f"iteration {iteration} of loop {loop} has no loop-state document: "
                                   "it did not finish (uq-flows resume rebuilds it)")
            if state.get("converged") or "next" not in state:
                return FWAction(stored_data={"advanced": False, "reason": state.get("reason")})
            if not campaign.claim_next(loop, iteration, f"{socket.gethostname()}:{os.getpid()}"):
                return FWAction(stored_data={"advanced": False, "reason": "already submitted"})
            following = state["next"]
            lp = open_launchpad()
            try:
                submission = submit_iteration(lp, LoopConfig.model_validate(following["config"]),
                                              following["iteration"], StructureSet.model_validate(following["candidates"]),
                                              following["dft_so_far"])
            except BaseException:
                campaign.release_next(loop, iteration)
                raise
            finally:
                if not is_embedded(lp):
                    lp.connection.close()
            campaign[LOOPS].update_one({"loop": loop, "iteration": iteration, "kind": "state"},
                                       {"$set": {"next_workflow": submission.workflow_id}})
        return FWAction(stored_data={"advanced": True, "iteration": following["iteration"],
                                     "workflow_id": submission.workflow_id})
