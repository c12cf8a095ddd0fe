"""The fleet pages' documents, as pure functions over store rows and records (no I/O).

Each is built through its declaration in ``documents.py`` (validated, then dumped): what is served is what
the committed JSON Schemas say. An undeclared document raises ``pydantic.ValidationError`` (the server
answers that request with a 500 and logs it).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from agent.strict import StrictModel
from trainer.fleet_pages.documents import (
    CommandSent,
    FleetDocument,
    RolloutsDocument,
    RolloutState,
    RoundsDocument,
    SamplesDocument,
)
from trainer.store import DeviceRow, SampleRow

__all__ = [
    "command_sent",
    "fleet_view",
    "label_studio_link",
    "rollout_reply",
    "rollout_view",
    "rounds_view",
    "samples_view",
]


def _declared(model: Type[StrictModel], document: Mapping[str, Any]) -> Dict[str, Any]:
    """``document`` as ``model`` declares it (keys left out stay out)."""
    return model.model_validate(document).model_dump(mode="json", by_alias=True, exclude_unset=True)


def _matches(row: DeviceRow, site: Optional[str], group: Optional[str], version: Optional[str]) -> bool:
    return (
        (not site or row.site == site)
        and (not group or group in row.groups)
        and (not version or (row.model_version or "") == version)
    )


def fleet_view(
    rows: Sequence[DeviceRow],
    now: float,
    site: Optional[str] = None,
    group: Optional[str] = None,
    version: Optional[str] = None,
) -> Dict[str, Any]:
    """Every device matching the filters (site, group, model version), and the values each filter can take."""
    devices = []
    for row in rows:
        if not _matches(row, site, group, version):
            continue
        doc = row.as_dict()
        doc["last_seen_s"] = max(0.0, now - row.last_seen)
        doc["samples_per_hour_total"] = sum(doc["samples_per_hour"].values())
        devices.append(doc)
    return _declared(
        FleetDocument,
        {
            "devices": devices,
            "filters": {"site": site, "group": group, "version": version},
            "sites": sorted({r.site for r in rows}),
            "groups": sorted({g for r in rows for g in r.groups}),
            "versions": sorted({r.model_version for r in rows if r.model_version}),
            "window_s": rows[0].window_s if rows else None,
        },
    )


def rollout_view(
    current: Optional[Dict[str, Any]],
    history: Sequence[Dict[str, Any]],
    bounds: Mapping[str, Any],
    configured: bool = True,
) -> Dict[str, Any]:
    """The current rollout (its stages, devices with their signals, the halt and why) and the earlier ones;
    ``configured``: trainer.yaml has a rollout section."""
    summary = []
    for state in reversed(history):
        release = state["release"]
        summary.append(
            {
                "id": state["id"],
                "release": f"{release['name']} {release['version']} (#{release['counter']})",
                "state": state["state"],
                "started_at": state["started_at"],
                "stage": state["stages"][min(state["stage"], len(state["stages"]) - 1)]["name"],
                "halt": "; ".join((state.get("halt") or {}).get("reasons", [])) or None,
            }
        )
    doc: Dict[str, Any] = {"configured": configured, "current": None, "history": summary, "bounds": dict(bounds)}
    if current is not None:
        stages = []
        reached = (current.get("halt") or {}).get("stage", current["stage"])
        for index, stage in enumerate(current["stages"]):
            # the status names the devices of the stages reached so far; later stages: not yet known
            members = [d for d in current.get("devices", []) if stage["group"] is None or stage["group"] in d["groups"]]
            known = index <= reached
            stages.append(
                {
                    **stage,
                    "index": index,
                    "here": index == current["stage"],
                    "devices": [d["device"] for d in members] if known else None,
                    "committed": sum(1 for d in members if d["committed_new"]) if known else None,
                }
            )
        doc["current"] = {**current, "stage_rows": stages, "events": current.get("events", [])[-30:]}
    return _declared(RolloutsDocument, doc)


def rollout_reply(state: Mapping[str, Any]) -> Dict[str, Any]:
    """The reply of promote and halt: the rollout's state after it."""
    return _declared(RolloutState, state)


def command_sent(
    device: str, request_id: str, command: Dict[str, Any], reply: Optional[Dict[str, Any]], waited_s: float
) -> Dict[str, Any]:
    """The reply of a device command: what was sent and what the device answered (None: nothing in time)."""
    document = {"device": device, "request_id": request_id, "command": command, "reply": reply, "waited_s": waited_s}
    return _declared(CommandSent, document)


def _score(scores: Mapping[str, Any], key: str) -> Optional[float]:
    value = (scores.get(key) or {}).get("map50_95")
    return None if value is None else float(value)


def rounds_view(records: Sequence[Dict[str, Any]], configured: bool = True) -> Dict[str, Any]:
    """Every round, newest first: the gate's figures, per-class mAP before/after per holdout, samples by reason
    and device, its plots (URLs), and the learning curve over the rounds that were judged; ``configured``:
    trainer.yaml has a rounds section."""
    rounds = []
    curve: List[Dict[str, Any]] = []
    for record in records:
        scores = record.get("scores") or {}
        per_class: Dict[str, Dict[str, Any]] = {}  # class -> {"base_before": mAP, "base_after", "new_before", ...}
        for key in ("base_before", "base_after", "new_before", "new_after"):
            for name, figures in ((scores.get(key) or {}).get("per_class") or {}).items():
                per_class.setdefault(name, {})[key] = (figures or {}).get("map50_95")
        report = record.get("report") or {}
        plots = [p for p in report.get("plots", []) if isinstance(p, str)]
        summary = {
            "id": record["id"],
            "state": record.get("state"),
            "started_at": record.get("started_at"),
            "finished_at": record.get("finished_at"),
            "from": record.get("from"),
            "candidate": record.get("candidate"),
            "gate": record.get("gate"),
            "reasons": record.get("reasons") or [],
            "error": record.get("error"),
            "split": record.get("split"),
            "training": record.get("training"),
            "release": record.get("release"),
            "map50_95": {k: _score(scores, k) for k in ("base_before", "base_after", "new_before", "new_after")},
            "per_class": per_class,
            "plots": {p.rsplit(".", 1)[0]: f"/api/rounds/{record['id']}/{p}" for p in plots},
        }
        rounds.append(summary)
        if scores:
            curve.append({"id": record["id"], "state": record.get("state"), **summary["map50_95"]})
    document = {"configured": configured, "rounds": list(reversed(rounds)), "learning_curve": curve}
    return _declared(RoundsDocument, document)


def label_studio_link(url: str, task: Optional[Tuple[str, int]]) -> Optional[str]:
    """The Label Studio page of a task (project id, task id), or None when the sample was never sent there."""
    if task is None:
        return None
    project, task_id = task
    return f"{url.rstrip('/')}/projects/{project}/data?task={task_id}"


def samples_view(
    rows: Sequence[SampleRow],
    tasks: Mapping[int, Tuple[str, int]],
    label_studio_url: str,
    stats: Mapping[str, Any],
    filters: Mapping[str, Optional[str]],
) -> Dict[str, Any]:
    """A page of samples: image URL, predicted boxes (in image pixels), labels, the Label Studio task link;
    ``filters``: those applied."""
    document = {
        "samples": [
            {
                "sid": row.sid,
                "id": row.id,
                "device": row.device,
                "camera": row.camera,
                "reason": row.reason,
                "note": row.note,
                "label_state": row.label_state,
                "model": f"{row.model_name} {row.model_version}",
                "frame_time": row.frame_time,
                "received_at": row.received_at,
                "width": row.width,
                "height": row.height,
                "predictions": row.predictions,
                "labels": [{"source": label.source, "boxes": len(label.boxes)} for label in row.labels],
                "image": f"/api/samples/{row.sid}.jpg",
                "label_studio": label_studio_link(label_studio_url, tasks.get(row.sid)),
            }
            for row in rows
        ],
        "stats": dict(stats),
        "filters": dict(filters),
    }
    return _declared(SamplesDocument, document)
