"""jobflow flows → FireWorks workflows on a launchpad, tagged with a loop id.

Each job's ``manager_config`` (``_category`` set by the Makers' ``category`` field) becomes
its firework's spec, so a ``gpu`` job only runs on an fworker with ``category: gpu``. Jobs
without a category get ``default_category``. The workflow's ``metadata`` holds the loop id
(``LOOP_KEY``); status and resume find a loop's fireworks through it, including fireworks
added later by jobs that replace themselves (they join the same workflow). A loop has one
workflow per iteration (``uq_flows.manager.advance``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from uq_flows.manager.config import ManagerError
from uq_flows.manager.stores import ConfiguredJobStore, describe_jobstore
from uq_flows.stages import LOOP_KEY

if TYPE_CHECKING:
    from fireworks import LaunchPad, Workflow
    from jobflow import Flow, Job, JobStore



@dataclass
class Submission:
    """What ``submit_flow`` added: the workflow (any of its fw_ids names it) and each job's fw_id."""

    loop: str | None
    workflow_id: int
    fw_ids: dict[str, int] = field(default_factory=dict)  # job uuid -> fw_id
    categories: dict[str, int] = field(default_factory=dict)  # category -> number of fireworks

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def to_workflow(
    flow: Flow | Job | list[Job],
    *,
    loop: str | None = None,
    store: JobStore | None = None,
    default_category: str | None = "cpu",
    name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Workflow:
    """The FireWorks workflow of ``flow`` with categories, loop tag and a store reference.

    ``store=None`` (recommended) puts a reference in each firework: the worker running it
    uses the JobStore of its own uq-flows settings. A store passed explicitly is serialised
    into the launchpad, so it must carry no credentials.
    """
    from jobflow.managers.fireworks import flow_to_workflow

    if store is None:
        store_arg = ConfiguredJobStore.reference()
    else:
        _refuse_credentials(store)
        store_arg = store
    meta = dict(metadata or {})
    if loop is not None:
        if not isinstance(loop, str) or not loop.strip():
            raise ManagerError(f"a loop id must be a non-empty string, got {loop!r}")
        meta[LOOP_KEY] = loop
    kwargs: dict[str, Any] = {"metadata": meta}
    if name:
        kwargs["name"] = name
    wf = flow_to_workflow(flow, store_arg, **kwargs)
    for fw in wf.fws:
        category = fw.spec.get("_category")
        if category is None and default_category:
            fw.spec["_category"] = category = default_category
        if category is not None and (not isinstance(category, str) or not category.strip()):
            raise ManagerError(f"job {fw.name!r}: FireWorks category must be a non-empty string, got {category!r}")
    return wf


def submit_flow(
    flow: Flow | Job | list[Job],
    launchpad: LaunchPad | None = None,
    *,
    loop: str | None = None,
    store: JobStore | None = None,
    default_category: str | None = "cpu",
    name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Submission:
    """Convert ``flow`` (``to_workflow``) and add it to ``launchpad`` (default: ``open_launchpad()``)."""
    wf = to_workflow(flow, loop=loop, store=store, default_category=default_category, name=name, metadata=metadata)
    return submit_workflow(wf, launchpad, loop=loop)


def submit_workflow(wf: Workflow, launchpad: LaunchPad | None = None, *, loop: str | None = None) -> Submission:
    """Add a converted workflow to ``launchpad`` (default: ``open_launchpad()``); what was added."""
    from uq_flows.manager.launchpad import open_launchpad, save_launchpad

    uuids = {fw.fw_id: fw.tasks[0]["job"].uuid for fw in wf.fws if "job" in fw.tasks[0]}
    categories: dict[str, int] = {}
    for fw in wf.fws:
        key = fw.spec.get("_category") or "(none)"
        categories[key] = categories.get(key, 0) + 1
    lp = launchpad or open_launchpad()
    id_map = lp.add_wf(wf)
    save_launchpad(lp)
    fw_ids = {uuids[old]: new for old, new in id_map.items() if old in uuids}
    return Submission(loop=loop, workflow_id=min(id_map.values()), fw_ids=fw_ids, categories=categories)


def loop_workflows(lp: LaunchPad, loop: str | None = None) -> list[dict[str, Any]]:
    """Workflow documents (nodes, state, name, metadata) of ``loop``, or of every loop if None."""
    query = {f"metadata.{LOOP_KEY}": loop} if loop is not None else {}
    fields = {"nodes": 1, "state": 1, "name": 1, "metadata": 1, "links": 1, "updated_on": 1}
    return list(lp.workflows.find(query, fields))


def loop_fw_ids(lp: LaunchPad, loop: str) -> list[int]:
    """Every fw_id of ``loop``'s workflows (dynamic additions included)."""
    return sorted({fw_id for wf in loop_workflows(lp, loop) for fw_id in wf["nodes"]})


def list_loops(lp: LaunchPad) -> list[str]:
    """Loop ids present on the launchpad (with those whose finished workflows were archived)."""
    from uq_flows.manager.launchpad import archived_workflows

    live = {wf["metadata"][LOOP_KEY] for wf in lp.workflows.find({f"metadata.{LOOP_KEY}": {"$exists": True}}, {"metadata": 1})}
    return sorted(live | {summary["loop"] for summary in archived_workflows(lp)})


def _refuse_credentials(store: JobStore) -> None:
    text = str(describe_jobstore(store))
    parts = [store.docs_store, *store.additional_stores.values()]
    if any(getattr(p, "password", "") for p in parts) or "***" in text:
        raise ManagerError(
            "this JobStore holds credentials and would be written into the launchpad; pass store=None "
            "so workers use the JobStore of their own settings"
        )
