"""Per-loop summaries of a launchpad: fireworks by state and by category, failures with reasons."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from uq_flows.manager.config import load_settings
from uq_flows.manager.submit import LOOP_KEY, loop_workflows

if TYPE_CHECKING:
    from fireworks import LaunchPad

ACTIVE_STATES = ("READY", "WAITING", "RESERVED", "RUNNING")
RETRY_KEY = "_uq_retry"


def fizzle_reason(lp: LaunchPad, fw_doc: dict[str, Any]) -> str:
    """Why a firework failed: last line of its exception, else the last recorded retry reason."""
    launches = fw_doc.get("launches") or []
    if launches:
        launch = lp.launches.find_one({"launch_id": launches[-1]}, {"action": 1})
        exception = (((launch or {}).get("action") or {}).get("stored_data") or {}).get("_exception") or {}
        text = exception.get("_stacktrace") or ""
        lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
        if lines:
            return lines[-1][:500]
    history = ((fw_doc.get("spec") or {}).get(RETRY_KEY) or {}).get("history") or []
    if history:
        return history[-1].get("reason") or "unknown"
    return "fizzled without a recorded exception"


HEARTBEAT_KEY = "uq_flows_heartbeat"  # a launch's fworker.env: its uq-flows worker's ping interval (s)


def heartbeat_of(launch: dict) -> float | None:
    """The ping interval the uq-flows worker of a launch recorded (None: another worker's launch)."""
    return ((launch.get("fworker") or {}).get("env") or {}).get(HEARTBEAT_KEY)


def lost_after_of(launch: dict, settings) -> float:
    """Seconds without a ping after which this RUNNING launch is lost: ``lost_after_pings``
    heartbeats of the uq-flows worker that runs it, or ``lost_run_seconds`` for other workers."""
    heartbeat = heartbeat_of(launch)
    return settings.lost_after_pings * float(heartbeat) if heartbeat else settings.lost_run_seconds


def silent_runs(lp: LaunchPad, fw_ids: list[int] | None, settings, now=None) -> list[dict]:
    """RUNNING launches (of ``fw_ids``) whose worker has missed at least two heartbeats:
    ``{fw_id, launch_id, silent_s, lost_after_s}``, the worker probably dead."""
    import datetime as dt

    now = now or dt.datetime.now(dt.UTC)
    query: dict[str, Any] = {"state": "RUNNING"}
    if fw_ids is not None:
        if not fw_ids:  # nothing running (and an empty $in is not every server's friend)
            return []
        query["fw_id"] = {"$in": list(fw_ids)}
    rows = []
    for launch in lp.launches.find(query, {"fw_id": 1, "launch_id": 1, "fworker": 1, "state_history": 1}):
        pings = [h.get("updated_on") for h in launch.get("state_history") or [] if h.get("state") == "RUNNING"]
        if not pings or not pings[-1]:
            continue
        last = pings[-1] if isinstance(pings[-1], dt.datetime) else dt.datetime.fromisoformat(str(pings[-1]))
        last = last if last.tzinfo else last.replace(tzinfo=dt.UTC)
        silent, lost_after = (now - last).total_seconds(), lost_after_of(launch, settings)
        if silent > 2 * lost_after / settings.lost_after_pings:
            rows.append({"fw_id": launch["fw_id"], "launch_id": launch["launch_id"], "silent_s": round(silent, 1),
                         "lost_after_s": lost_after})
    return rows


def loop_status(lp: LaunchPad, loop: str | None = None) -> dict[str, Any]:
    """``{"loops": [...]}``: per loop (or the one asked for) its workflows, state counts, failures.

    Each loop entry: ``loop``, ``state`` (COMPLETED, FIZZLED, RUNNING, READY, WAITING...),
    ``n_fireworks``, ``states`` {state: n}, ``categories`` {category: {state: n}},
    ``workflows`` [{fw_id, name, state}], ``fizzled`` [{fw_id, name, category, retries, reason}],
    ``silent`` [{fw_id, name, launch_id, silent_s, lost_after_s}]: RUNNING with two or more missed heartbeats.
    Workflows without a loop id are grouped under ``loop: null``.
    """
    from uq_flows.manager.launchpad import archived_workflows

    groups: dict[str | None, list[dict]] = {}
    for wf in loop_workflows(lp, loop):
        groups.setdefault((wf.get("metadata") or {}).get(LOOP_KEY), []).append(wf)
    archived: dict[str, list[dict]] = {}
    for summary in archived_workflows(lp, loop):
        archived.setdefault(summary["loop"], []).append(summary)
        groups.setdefault(summary["loop"], [])
    return {"loops": [_summary(lp, name, wfs, archived.get(name, []))
                      for name, wfs in sorted(groups.items(), key=lambda kv: str(kv[0]))]}


def _summary(lp: LaunchPad, loop: str | None, workflows: list[dict], archived: list[dict] = ()) -> dict[str, Any]:
    nodes = sorted({fw_id for wf in workflows for fw_id in wf["nodes"]})
    fields = {"fw_id": 1, "name": 1, "state": 1, "spec._category": 1, f"spec.{RETRY_KEY}": 1, "launches": 1}
    docs = list(lp.fireworks.find({"fw_id": {"$in": nodes}}, fields))
    states = Counter(doc["state"] for doc in docs)
    categories: dict[str, Counter] = {}
    for summary in archived:  # finished iterations moved out of the embedded launchpad
        for category, counts in summary["categories"].items():
            categories.setdefault(category, Counter()).update(counts)
            states.update(counts)
    fizzled = []
    for doc in docs:
        category = (doc.get("spec") or {}).get("_category") or "(none)"
        categories.setdefault(category, Counter())[doc["state"]] += 1
        if doc["state"] == "FIZZLED":
            retry = (doc.get("spec") or {}).get(RETRY_KEY) or {}
            fizzled.append(
                {
                    "fw_id": doc["fw_id"],
                    "name": doc.get("name"),
                    "category": category,
                    "retries": retry.get("count", 0),
                    "reason": fizzle_reason(lp, doc),
                }
            )
    return {
        "loop": loop,
        "state": overall_state(states),
        "n_fireworks": len(docs) + sum(summary["n_fireworks"] for summary in archived),
        "states": dict(sorted(states.items())),
        "categories": {k: dict(sorted(v.items())) for k, v in sorted(categories.items())},
        "workflows": [
            *({"fw_id": a["fw_id"], "name": a["name"], "state": a["state"], "archive": a["path"]} for a in archived),
            *({"fw_id": min(wf["nodes"]) if wf["nodes"] else None, "name": wf.get("name"), "state": wf.get("state")}
              for wf in workflows),
        ],
        "fizzled": sorted(fizzled, key=lambda row: row["fw_id"]),
        "silent": _named(silent_runs(lp, [d["fw_id"] for d in docs if d["state"] == "RUNNING"], load_settings()),
                         {d["fw_id"]: d.get("name") for d in docs}),
    }


def _named(rows: list[dict], names: dict[int, str | None]) -> list[dict]:
    return [{**row, "name": names.get(row["fw_id"])} for row in rows]


def overall_state(states: Counter | dict[str, int]) -> str:
    """One word for a set of fireworks: RUNNING while any runs, COMPLETED when all did, ..."""
    present = {state for state, n in states.items() if n}
    if not present:
        return "EMPTY"
    for state in ("RUNNING", "RESERVED", "READY"):
        if state in present:
            return state
    if present <= {"COMPLETED"}:
        return "COMPLETED"
    if "FIZZLED" in present:
        return "FIZZLED"  # something failed and nothing can run: resume or inspect
    if "WAITING" in present:
        return "WAITING"
    return min(present)
