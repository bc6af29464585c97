"""Automatic resume: rerun fizzled and lost fireworks with a retry limit and exponential backoff.

Retries are recorded in the firework's spec under ``_uq_retry``: ``{"count", "history":
[{"at", "kind", "reason"}]}``. A fizzled firework is rerun when ``count < max_retries`` and
``backoff * 2**count`` seconds have passed since it failed, and only while its children have
not run: a child that already consumed the failure (``_allow_fizzled_parents``, jobflow's
``OnMissing.NONE``) must not be rerun, or its work would be done twice. uq-flows' own tolerant
jobs (``stages.tolerate_failed_parents``: assembly, combine, QBC) wait instead, and are
released here only when the failed parent is out of retries. A lost run (RUNNING,
no ping for ``lost_after`` seconds) is rerun through FireWorks' ``detect_lostruns`` under the
same limit; "lost" means ``lost_after_pings`` missed heartbeats of the uq-flows worker that ran
it (the interval its launch records), or ``lost_run_seconds`` for other workers, unless
``lost_after`` is given. Updates are conditional on the recorded count, so two resumers never
rerun the same failure twice.

``rebuild(launchpad, loop)`` is the loop's hook: after the reruns it is called for every loop
in scope with no retry still due, and may add the rest of a loop whose flow cannot continue;
its results are reported.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from uq_flows.manager.config import load_settings
from uq_flows.manager.status import HEARTBEAT_KEY, RETRY_KEY, fizzle_reason, heartbeat_of, lost_after_of
from uq_flows.manager.submit import list_loops, loop_fw_ids
from uq_flows.stages import WAITS_FOR_RETRIES

if TYPE_CHECKING:
    from fireworks import LaunchPad

Rebuild = Callable[["LaunchPad", str], Any]
_CHILD_STATES_OK = {"WAITING", "READY", "FIZZLED"}  # children that have not consumed a failure


@dataclass
class ResumeReport:
    """One pass of ``resume``; lists hold small JSON-able rows."""

    lost: list[int] = field(default_factory=list)  # fw_ids found lost (RUNNING, no ping)
    inconsistent: list[int] = field(default_factory=list)  # RUNNING with a finished launch: refreshed
    rerun: list[dict] = field(default_factory=list)  # {fw_id, name, kind, retry}
    waiting: list[dict] = field(default_factory=list)  # backoff not over: {fw_id, name, due_in}
    exhausted: list[dict] = field(default_factory=list)  # left FIZZLED: {fw_id, name, retries, reason}
    blocked: list[dict] = field(default_factory=list)  # children already ran: {fw_id, name, reason}
    released: list[int] = field(default_factory=list)  # waiting children let run without a failed parent
    rebuilt: dict[str, Any] = field(default_factory=dict)  # loop -> what rebuild returned

    @property
    def changed(self) -> bool:
        return bool(self.rerun or self.inconsistent or self.released or self.rebuilt)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resume(
    lp: LaunchPad,
    loop: str | None = None,
    *,
    max_retries: int | None = None,
    backoff: float | None = None,
    lost_after: float | None = None,
    rebuild: Rebuild | None = None,
    now: _dt.datetime | None = None,
    all_workflows: bool = False,
) -> ResumeReport:
    """One resume pass over ``loop``, or every uq-flows loop on the launchpad (every workflow
    with ``all_workflows``: another tool's too); defaults from settings."""
    from uq_flows.manager.launchpad import save_launchpad

    settings = load_settings()
    max_retries = settings.max_retries if max_retries is None else max_retries
    backoff = settings.retry_backoff if backoff is None else backoff
    now = now or _dt.datetime.now(_dt.UTC)
    if loop is not None:
        scope = loop_fw_ids(lp, loop)
    else:
        scope = None if all_workflows else [fw_id for name in list_loops(lp) for fw_id in loop_fw_ids(lp, name)]
    report = ResumeReport()
    if scope is None or scope:  # an empty scope has nothing to rerun
        _rerun_lost(lp, scope, max_retries, lost_after, settings, now, report)
        _rerun_fizzled(lp, scope, max_retries, backoff, now, report)
    if rebuild is not None:
        due_later = {row["fw_id"] for row in report.waiting}
        for name in [loop] if loop is not None else list_loops(lp):
            if due_later.intersection(loop_fw_ids(lp, name)):
                continue  # a failed job will be retried: the loop can still go on
            result = rebuild(lp, name)
            if result:
                report.rebuilt[name] = result
    save_launchpad(lp)
    return report


def watch(
    lp: LaunchPad,
    loop: str | None = None,
    *,
    interval: float,
    iterations: int | None = None,
    after_pass: Callable[[LaunchPad, ResumeReport], Any] | None = None,
    on_report: Callable[[int, ResumeReport], Any] | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    **resume_kwargs,
) -> list[ResumeReport]:
    """Repeat ``resume`` every ``interval`` seconds, ``iterations`` times (None: until interrupted).

    ``after_pass(lp, report)`` runs after each pass (e.g. in-process rockets on the embedded
    launchpad); ``on_report(i, report)`` sees every report. KeyboardInterrupt ends the watch
    and returns the reports so far.
    """
    reports: list[ResumeReport] = []
    i = 0
    try:
        while iterations is None or i < iterations:
            report = resume(lp, loop, **resume_kwargs)
            if after_pass is not None:
                after_pass(lp, report)
            reports.append(report)
            if on_report is not None:
                on_report(i, report)
            i += 1
            if iterations is None or i < iterations:
                sleep(max(0.0, interval))
    except KeyboardInterrupt:
        pass
    return reports


def _scoped(query: dict, scope: list[int] | None) -> dict:
    return query if scope is None else {**query, "fw_id": {"$in": scope}}


def _retry_record(doc: dict) -> dict:
    record = (doc.get("spec") or {}).get(RETRY_KEY) or {}
    return {"count": int(record.get("count", 0)), "history": list(record.get("history") or [])}


def _claim(lp: LaunchPad, fw_id: int, state: str, old: dict, new: dict) -> bool:
    """Write the new retry record only if nobody changed the firework meanwhile."""
    condition: dict[str, Any] = {"fw_id": fw_id, "state": state}
    if old["count"]:
        condition[f"spec.{RETRY_KEY}.count"] = old["count"]
    else:
        condition[f"spec.{RETRY_KEY}.count"] = {"$exists": False}
    result = lp.fireworks.update_one(condition, {"$set": {f"spec.{RETRY_KEY}": new}})
    return result.modified_count == 1


def _lost_groups(lp, scope, lost_after, settings) -> list[tuple[float, dict | None]]:
    """(seconds without a ping after which a RUNNING launch is lost, the launches it applies to):
    ``lost_after`` for all when given, else by the heartbeat each launch's worker recorded."""
    if lost_after is not None:
        return [(lost_after, None)]
    query: dict = {"state": "RUNNING"}
    if scope is not None:
        query["fw_id"] = {"$in": scope}
    groups: dict[float | None, float] = {}
    for launch in lp.launches.find(query, {"fworker": 1}):
        groups[heartbeat_of(launch)] = lost_after_of(launch, settings)
    return [(seconds, {f"fworker.env.{HEARTBEAT_KEY}": heartbeat if heartbeat else {"$exists": False}})
            for heartbeat, seconds in groups.items()]


def _rerun_lost(lp, scope, max_retries, lost_after, settings, now, report: ResumeReport) -> None:
    query = None if scope is None else {"fw_id": {"$in": scope}}
    lost, inconsistent, limit = [], [], {}
    for seconds, launches in _lost_groups(lp, scope, lost_after, settings):
        _, found, odd = lp.detect_lostruns(expiration_secs=seconds, query=query, launch_query=launches, refresh=True)
        lost += found
        inconsistent += odd
        limit.update(dict.fromkeys(found, seconds))
    report.lost = sorted(set(lost))
    report.inconsistent = sorted(set(inconsistent))
    retry, give_up = [], []
    for doc in lp.fireworks.find({"fw_id": {"$in": report.lost}}, {"fw_id": 1, "name": 1, f"spec.{RETRY_KEY}": 1}):
        old = _retry_record(doc)
        reason = (f"lost run: no heartbeat for more than {limit[doc['fw_id']]:g} s "
                  "(worker killed, out of time or node lost)")
        entry = {"at": now.isoformat(), "kind": "lost", "reason": reason}
        if old["count"] < max_retries:
            new = {"count": old["count"] + 1, "history": [*old["history"], entry]}
            if _claim(lp, doc["fw_id"], "RUNNING", old, new):
                retry.append(doc["fw_id"])
                report.rerun.append({"fw_id": doc["fw_id"], "name": doc.get("name"), "kind": "lost", "retry": new["count"]})
        else:
            new = {"count": old["count"], "history": [*old["history"], entry], "exhausted": True}
            if _claim(lp, doc["fw_id"], "RUNNING", old, new):
                give_up.append(doc["fw_id"])
                report.exhausted.append({"fw_id": doc["fw_id"], "name": doc.get("name"), "retries": old["count"], "reason": reason})
    # each was found lost under its own limit: act on them under the smallest
    if retry:
        lp.detect_lostruns(expiration_secs=min(limit[i] for i in retry), rerun=True, query={"fw_id": {"$in": retry}})
    if give_up:
        lp.detect_lostruns(expiration_secs=min(limit[i] for i in give_up), fizzle=True,
                           query={"fw_id": {"$in": give_up}})
        for fw_id in give_up:
            report.released += _release_waiting_children(lp, fw_id, max_retries)


def _rerun_fizzled(lp, scope, max_retries, backoff, now, report: ResumeReport) -> None:
    done = {row["fw_id"] for row in report.exhausted}
    fields = {"fw_id": 1, "name": 1, "launches": 1, "updated_on": 1, f"spec.{RETRY_KEY}": 1}
    for doc in lp.fireworks.find(_scoped({"state": "FIZZLED"}, scope), fields):
        fw_id, name = doc["fw_id"], doc.get("name")
        if fw_id in done:
            continue
        old = _retry_record(doc)
        if old["count"] >= max_retries:
            report.exhausted.append({"fw_id": fw_id, "name": name, "retries": old["count"], "reason": fizzle_reason(lp, doc)})
            report.released += _release_waiting_children(lp, fw_id, max_retries)
            continue
        busy = _consumed_children(lp, fw_id)
        if busy:
            report.blocked.append(
                {"fw_id": fw_id, "name": name, "reason": f"children {busy} already ran with this failure; not rerun"}
            )
            continue
        due = _as_utc(doc.get("updated_on"), now) + _dt.timedelta(seconds=backoff * 2 ** old["count"])
        if now < due:
            report.waiting.append({"fw_id": fw_id, "name": name, "due_in": round((due - now).total_seconds(), 3)})
            continue
        entry = {"at": now.isoformat(), "kind": "fizzled", "reason": fizzle_reason(lp, doc)}
        new = {"count": old["count"] + 1, "history": [*old["history"], entry]}
        if _claim(lp, fw_id, "FIZZLED", old, new):
            lp.rerun_fw(fw_id, rerun_duplicates=False)
            report.rerun.append({"fw_id": fw_id, "name": name, "kind": "fizzled", "retry": new["count"]})


def _links(lp: LaunchPad, fw_id: int) -> dict[int, list[int]]:
    """Parent → children of the workflow holding ``fw_id``."""
    wf = lp.workflows.find_one({"nodes": fw_id}, {"links": 1})
    return {int(p): [int(c) for c in children] for p, children in ((wf or {}).get("links") or {}).items()}


def _release_waiting_children(lp: LaunchPad, fw_id: int, max_retries: int) -> list[int]:
    """Let the children that wait for failed parents' retries (``tolerate_failed_parents``) run
    without their outputs once every parent has completed or failed for good; the released fw_ids."""
    links = _links(lp, fw_id)
    waiting = [doc["fw_id"] for doc in lp.fireworks.find(
        {"fw_id": {"$in": links.get(fw_id, [])}, "state": "WAITING", f"spec.{WAITS_FOR_RETRIES}": True,
         "spec._allow_fizzled_parents": False}, {"fw_id": 1})]
    released = []
    for child in waiting:
        parents = [parent for parent, children in links.items() if child in children]
        docs = lp.fireworks.find({"fw_id": {"$in": parents}}, {"state": 1, f"spec.{RETRY_KEY}": 1})
        if all(d["state"] == "COMPLETED" or (d["state"] == "FIZZLED" and _retry_record(d)["count"] >= max_retries)
               for d in docs):
            released.append(child)
    if released:
        lp.fireworks.update_many({"fw_id": {"$in": released}}, {"$set": {"spec._allow_fizzled_parents": True}})
        for child in released:
            lp._refresh_wf(child)  # FireWorks' own refresh makes it READY
    return released


def _consumed_children(lp: LaunchPad, fw_id: int) -> list[int]:
    children = _links(lp, fw_id).get(fw_id, [])
    if not children:
        return []
    return sorted(
        doc["fw_id"]
        for doc in lp.fireworks.find({"fw_id": {"$in": children}}, {"fw_id": 1, "state": 1})
        if doc["state"] not in _CHILD_STATES_OK
    )


def _as_utc(value: Any, default: _dt.datetime) -> _dt.datetime:
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value)
        except ValueError:
            return default
    if not isinstance(value, _dt.datetime):
        return default
    return value if value.tzinfo else value.replace(tzinfo=_dt.UTC)
