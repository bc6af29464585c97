"""What every stage's jobs share: FireWorks queue categories and stage tags (DESIGN.md).

A job's stage is recorded in its metadata (``uq_flows_stage``), so ``status``, ``results``,
``report`` and ``resume`` find a loop's documents by what they are, never by job names,
which users may change. This module imports nothing of the workflow engines or of the stage
packages, so every stage's ``jobs.py`` can use it without an import cycle.
"""

from __future__ import annotations

LOOP_KEY = "uq_flows_loop"  # job and workflow metadata: the loop id
STAGE_KEY = "uq_flows_stage"  # job metadata: what the job's output is

# the stages a loop's documents are looked up by
MEMBER_PREDICTION = "member prediction"  # one member on one chunk (MemberPredictions); metadata MEMBER_KEY, CHUNK_KEY
MEMBER_KEY, CHUNK_KEY = "uq_flows_member", "uq_flows_chunk"
SCORE = "score"  # combined ensemble uncertainty (UncertaintyDocument)
THRESHOLD = "threshold"  # routes (RoutingDocument)
DFT_LABEL = "dft label"  # one DFT (or stand-in reference) Label per structure
TEACHER_LABEL = "teacher label"
ASSEMBLE = "assemble"  # DistilledDataset
RECORD = "record iteration"  # IterationRecord: the iteration written into the campaign database
ITERATION = "iteration"  # the job that becomes one iteration's flow
LOOP_STATE = "loop state"  # IterationSummary
# the long stages between them, tagged so progress lines show them
ACE_FIT = "ace fit"  # one ACE member fitted
MD_EXPLORE = "md explore"
CALIBRATE = "calibrate"  # the committee's σ calibration
CAGO = "cago"
QBC = "qbc"  # the committee's verdicts (its prediction jobs are not member predictions of the score)
DIRECT = "direct"


def set_category(job, category: str | None):
    """Run ``job`` on workers of ``category`` (``gpu``, ``cpu``, ...); returns the job.

    Jobs that create jobs at run time (``Response(replace=...)``) must not hand their own
    category down, so every new job keeps the category its Maker chose: jobflow would by
    default (``pass_manager_config``, and ``update_config(dynamic=True)``).
    """
    if category:
        job.update_config({"manager_config": {**job.config.manager_config, "_category": category}}, dynamic=False)
    job.config.pass_manager_config = False
    return job


WAITS_FOR_RETRIES = "_uq_waits_for_retries"  # firework spec: released by resume once a failed parent's retries are spent


def tolerate_failed_parents(job):
    """Run ``job`` with None for the output of a parent that failed for good (jobflow's
    ``OnMissing.NONE``), but only once that parent's retries are spent; returns the job.

    FireWorks would start such a job as soon as a parent fizzles (``_allow_fizzled_parents``)
    and so consume a failure that ``resume`` was about to retry. The job's firework instead
    waits (``_allow_fizzled_parents`` False, ``_uq_waits_for_retries``) until ``resume`` finds
    the failed parent out of retries and releases it.
    """
    on_missing = type(job.config.on_missing_references)  # jobflow's OnMissing, not imported here
    job.config.on_missing_references = on_missing("none")
    job.config.manager_config = {**job.config.manager_config, "_allow_fizzled_parents": False,
                                 WAITS_FOR_RETRIES: True}
    return job


def tag_stage(job, stage: str):
    """Record ``stage`` in the job's metadata (``uq_flows_stage``); returns the job."""
    job.metadata[STAGE_KEY] = stage
    return job
