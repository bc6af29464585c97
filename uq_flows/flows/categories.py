"""FireWorks queue categories of jobs (DESIGN.md, "Queues and resume")."""

from __future__ import annotations


def set_category(job, category: str | None):
    """Run ``job`` on workers of ``category`` (``gpu``, ``cpu``, ...); returns the job.

    Jobs that create jobs at run time (``Response(replace=...)``) must not hand their own
    category down, so every new job keeps the category its Maker chose: jobflow would by
    default (``pass_manager_config``, and ``update_config(dynamic=True)``).
    """
    if category:
        job.update_config({"manager_config": {"_category": category}}, dynamic=False)
    job.config.pass_manager_config = False
    return job
