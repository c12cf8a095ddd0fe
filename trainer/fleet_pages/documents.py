"""The fleet pages' JSON documents, declared: ``/api/fleet``, ``/api/rollouts``, ``/api/rounds``,
``/api/samples`` and the replies of the POSTs (promote, halt, device command). ``views.py`` builds each
document through its model, so what is served is what is declared.

Their JSON Schemas are generated like the MQTT messages' (``agent.json_schema``) and committed under
``docs/schemas/pages/``: ``python -m trainer.fleet_pages.documents docs/schemas/pages [--check]``.

Open parts (maps keyed by names aside): what a learning round records of its own steps (``from``,
``candidate``, ``split``, ``training``, ``release``, the gate's ``figures``), a sample's predicted boxes
and a device command's JSON are passed through as objects: their layout belongs to the round runner
(``trainer.rounds.run``) and to the MQTT messages (``docs/schemas/*.schema.json``), not to the page.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional

from pydantic import ConfigDict, Field

from agent.json_schema import SchemaSet
from agent.json_schema import main as schema_main
from agent.strict import FrozenModel

__all__ = [
    "DOCUMENTS",
    "SCHEMA_BASE_ID",
    "CommandSent",
    "FleetDocument",
    "RolloutState",
    "RolloutsDocument",
    "RoundsDocument",
    "SamplesDocument",
]

SCHEMA_BASE_ID = "https://schemas.edge-vision-loop.invalid/pages/"


class _Document(FrozenModel):
    """A declared JSON document: unknown keys are errors, values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), populate_by_name=True)


# ------------------------------------------------------------------ /api/fleet


class FleetCamera(_Document):
    """A camera of a device, from its retained camera status (``trainer.store.CameraRow``)."""

    camera: str = Field(description="The camera's name.")
    state: str = Field(description="Its state (starting, streaming, stalled, reconnecting, stopped, error).")
    source: str = Field(description="Where its frames come from, without credentials.")
    fps: float = Field(description="Processed frames per second.")
    frames: int = Field(description="Frames delivered by the camera.")
    drops: int = Field(description="Frames replaced before inference took them.")
    reconnects: int = Field(description="Successful reconnects.")
    last_frame_time: Optional[float] = Field(description="When its newest frame was captured (Unix time).")
    error: Optional[str] = Field(description="Its last error (null: none).")
    status_time: float = Field(description="When its status was sent (Unix time).")
    samples_by_reason: Dict[str, int] = Field(description="Samples from it in the window, by triage reason.")


class FleetDevice(_Document):
    """A device of the registry (``trainer.store.DeviceRow``) with its rates over the window."""

    device: str = Field(description="The device's id.")
    site: str = Field(description="Its site.")
    state: Optional[str] = Field(description="Its retained state (online, offline; null: never reported).")
    agent_version: Optional[str] = Field(description="Its agent's version.")
    model_name: Optional[str] = Field(description="The model it runs: name.")
    model_version: Optional[str] = Field(description="The model it runs: version.")
    model_sha256: Optional[str] = Field(description="The model it runs: SHA-256 of the file.")
    status_time: Optional[float] = Field(description="When its device status was sent (Unix time).")
    groups: List[str] = Field(description="Its groups (their push topics reach it).")
    first_seen: float = Field(description="When the registry first heard of it (Unix time).")
    last_seen: float = Field(description="When the registry last heard of it (Unix time).")
    ota_phase: Optional[str] = Field(description="Its last OTA report's phase.")
    ota_release: Optional[Dict[str, Any]] = Field(
        description="The release its last OTA report concerns (a ReleaseRef of ota_state.schema.json)."
    )
    ota_active: Optional[Dict[str, Any]] = Field(
        description="The release it runs, per its last OTA report (a ReleaseRef of ota_state.schema.json)."
    )
    ota_detail: Optional[str] = Field(description="Its last OTA report's detail.")
    ota_time: Optional[float] = Field(description="When its last OTA report was sent (Unix time).")
    window_s: float = Field(description="The window the rates are counted over, in seconds.")
    alerts_in_window: int = Field(description="Alerts in the window.")
    samples_in_window: Dict[str, int] = Field(description="Samples in the window, by triage reason.")
    drops: Dict[str, int] = Field(description="Messages the device dropped, by reason.")
    cameras: List[FleetCamera] = Field(description="Its cameras.")
    alerts_per_hour: float = Field(description="Alerts per hour over the window.")
    samples_per_hour: Dict[str, float] = Field(description="Samples per hour over the window, by triage reason.")
    last_seen_s: float = Field(description="Seconds since it was last heard of.")
    samples_per_hour_total: float = Field(description="Samples per hour over the window, all reasons.")


class FleetFilters(_Document):
    """The filters a fleet page applies (null: not filtered)."""

    site: Optional[str] = Field(description="Only this site's devices.")
    group: Optional[str] = Field(description="Only this group's devices.")
    version: Optional[str] = Field(description="Only devices running this model version.")


class FleetDocument(_Document):
    """``GET /api/fleet``: the devices matching the filters, and the values each filter can take."""

    devices: List[FleetDevice] = Field(description="The devices matching the filters.")
    filters: FleetFilters = Field(description="The filters applied.")
    sites: List[str] = Field(description="Every site of the registry.")
    groups: List[str] = Field(description="Every group of the registry.")
    versions: List[str] = Field(description="Every model version the devices run.")
    window_s: Optional[float] = Field(description="The window the rates are counted over (null: no device).")


# ------------------------------------------------------------------ /api/rollouts and the POST replies


class RolloutRelease(_Document):
    """The release a rollout pushes (``trainer.rollout.driver.release_of_bundle``)."""

    name: str = Field(description="Release name.")
    version: str = Field(description="Release version.")
    counter: int = Field(description="Release counter.")
    channel: str = Field(description="Release channel (the devices follow one).")
    bundle: str = Field(description="The online bundle it was read from.")
    model_sha256s: List[str] = Field(description="SHA-256 of its model files: a device running one runs it.")
    repo: Optional[str] = Field(description="The repository the devices fetch it from (null: the configured one).")


class RolloutStage(_Document):
    """A stage of a rollout and how far it got."""

    name: str = Field(description="The stage's name (canary, wide, fleet, ...).")
    group: Optional[str] = Field(description="The device group whose push topic it uses (null: the fleet topic).")
    min_committed: int = Field(description="Devices of the stage that must report committed.")
    watch_s: float = Field(description="Seconds to watch their figures before promoting.")
    pushed: bool = Field(description="The release was pushed on its topic.")
    pushed_at: Optional[float] = Field(description="When (Unix time).")
    ready_since: Optional[float] = Field(description="Since when enough devices committed (Unix time).")
    promoted_at: Optional[float] = Field(description="When it was promoted (Unix time).")


class RolloutHalt(_Document):
    """Why and where a rollout was halted."""

    stage: int = Field(description="The stage it was halted at (index).")
    reasons: List[str] = Field(description="Why.")
    at: float = Field(description="When (Unix time).")
    rollbacks: Dict[str, int] = Field(description="Rollback commands sent, by device.")


class RolloutEvent(_Document):
    """A step of a rollout."""

    at: float = Field(description="When (Unix time).")
    event: str = Field(description="What (started, pushed, ready, promoted, completed, halted).")
    detail: str = Field(description="More about it, in words.")


class RolloutDecision(_Document):
    """The driver's last decision on the current stage (``trainer.rollout.plan.decide_stage``)."""

    at: float = Field(description="When (Unix time).")
    action: str = Field(description="wait, ready, promote or halt.")
    reasons: List[str] = Field(description="Why.")
    committed: int = Field(description="Devices of the stage that committed.")
    devices: int = Field(description="Devices of the stage.")


class RolloutState(_Document):
    """A rollout as the driver keeps it (``trainer.rollout.state``): the reply of promote and halt."""

    id: str = Field(description="The rollout's id.")
    started_at: float = Field(description="When it started (Unix time).")
    updated_at: Optional[float] = Field(default=None, description="When its state was last written (Unix time).")
    site: str = Field(description="The site it rolls out to.")
    release: RolloutRelease = Field(description="The release it pushes.")
    stages: List[RolloutStage] = Field(description="Its stages, in order.")
    stage: int = Field(description="The current stage (index).")
    state: str = Field(description="running, halted or completed.")
    snapshots: Dict[str, str] = Field(
        description="Per push topic, base64 of its retained push before the rollout ('' = none): a halt restores it."
    )
    halt: Optional[RolloutHalt] = Field(description="The halt (null: not halted).")
    events: List[RolloutEvent] = Field(description="Its steps, oldest first.")
    previous_models: Dict[str, str] = Field(
        default_factory=dict, description="Each device's model (SHA-256) before the rollout: its own baseline."
    )
    last_decision: Optional[RolloutDecision] = Field(default=None, description="The driver's last decision.")


class QualitySignal(_Document):
    """A device's figure under the previous and the new model, against its bound (``trainer.rollout.plan.Signal``)."""

    name: str = Field(description="alerts per frame, uncertain frames, mean confidence or FPS.")
    before: float = Field(description="The figure under the previous model.")
    after: float = Field(description="The figure under the new model.")
    change: str = Field(description="The change, in words (x1.20, +0.031, -12%).")
    bound: str = Field(description="The bound it is held to.")
    ok: bool = Field(description="Within its bound.")
    message: str = Field(description="What a halt says about it.")


class RolloutDevice(_Document):
    """A device of the stages reached, with its signals."""

    device: str = Field(description="The device's id.")
    groups: List[str] = Field(description="Its groups.")
    model_version: Optional[str] = Field(description="The model version it runs.")
    ota_phase: Optional[str] = Field(description="Its last OTA report's phase.")
    running_new: bool = Field(description="It runs the new release.")
    committed_new: bool = Field(description="It committed the new release.")
    problem: Optional[str] = Field(description="Its OTA failure on the new release (null: none).")
    after_frames: int = Field(description="Frames it ran under the new model.")
    signals: List[QualitySignal] = Field(description="Its quality signals (empty until enough frames).")


class StageRow(RolloutStage):
    """A stage as the page shows it."""

    index: int = Field(description="The stage's index.")
    here: bool = Field(description="It is the current stage.")
    devices: Optional[List[str]] = Field(description="Its devices (null: a stage not reached yet).")
    committed: Optional[int] = Field(description="Its devices that committed (null: not reached yet).")


class CurrentRollout(RolloutState):
    """The current rollout with its devices and the page's stage rows."""

    devices: List[RolloutDevice] = Field(description="The devices of the stages reached.")
    stage_rows: List[StageRow] = Field(description="Its stages with their devices.")


class RolloutSummary(_Document):
    """A rollout in the history."""

    id: str = Field(description="The rollout's id.")
    release: str = Field(description="Its release, in words (name version (#counter)).")
    state: str = Field(description="running, halted or completed.")
    started_at: float = Field(description="When it started (Unix time).")
    stage: str = Field(description="The stage it is at (or ended at).")
    halt: Optional[str] = Field(description="Why it was halted (null: not halted).")


class RolloutsDocument(_Document):
    """``GET /api/rollouts``."""

    configured: bool = Field(description="trainer.yaml has a rollout section.")
    current: Optional[CurrentRollout] = Field(description="The running or halted rollout (null: none).")
    history: List[RolloutSummary] = Field(description="Every rollout, newest first.")
    bounds: Dict[str, float] = Field(
        description="The quality bounds devices are held to (rollout.bounds; {} when not configured)."
    )


class CommandSent(_Document):
    """The reply of ``POST /api/devices/<device>/command``: the command sent and the device's reply."""

    device: str = Field(description="The device it was sent to.")
    request_id: str = Field(description="The command's request id.")
    command: Dict[str, Any] = Field(description="The command sent (command.schema.json).")
    reply: Optional[Dict[str, Any]] = Field(
        description="The device's reply (command_reply.schema.json, or a bad_reply error; null: none in time)."
    )
    waited_s: float = Field(description="How long the reply was waited for, in seconds.")


# ------------------------------------------------------------------ /api/rounds


class GateVerdict(_Document):
    """The gate's verdict on a round's candidate."""

    passed: bool = Field(description="The candidate passed.")
    reasons: List[str] = Field(description="Why (or why not).")
    figures: Dict[str, Any] = Field(description="The figures it judged (open: trainer.rounds.gate's own).")


class HoldoutScores(_Document):
    """mAP50-95 before and after the round on each holdout (null: not scored)."""

    base_before: Optional[float] = Field(description="The base holdout, the running model.")
    base_after: Optional[float] = Field(description="The base holdout, the candidate.")
    new_before: Optional[float] = Field(description="The new-domain holdout, the running model.")
    new_after: Optional[float] = Field(description="The new-domain holdout, the candidate.")


class RoundSummary(_Document):
    """A learning round (its record: ``<rounds.workdir>/<id>/round.json``)."""

    id: str = Field(description="The round's id.")
    state: Optional[str] = Field(description="preparing, training, exporting, gating, releasing, published, ...")
    started_at: Optional[float] = Field(description="When it started (Unix time).")
    finished_at: Optional[float] = Field(description="When it ended (Unix time).")
    from_: Optional[Dict[str, Any]] = Field(
        alias="from", description="The model it started from (name, version, files; open: the round runner's)."
    )
    candidate: Optional[Dict[str, Any]] = Field(description="The model it trained (open: the round runner's).")
    gate: Optional[GateVerdict] = Field(description="The gate's verdict (null: not judged).")
    reasons: List[str] = Field(description="Why it ended as it did.")
    error: Optional[str] = Field(description="Its error, when it failed.")
    split: Optional[Dict[str, Any]] = Field(description="Its data split (open: the round runner's).")
    training: Optional[Dict[str, Any]] = Field(description="Its training run (open: the round runner's).")
    release: Optional[Dict[str, Any]] = Field(description="The release it published (open: the round runner's).")
    map50_95: HoldoutScores = Field(description="mAP50-95 per holdout, before and after.")
    per_class: Dict[str, Dict[str, Optional[float]]] = Field(
        description="Per class: mAP50-95 per holdout before and after (base_before, base_after, ...)."
    )
    plots: Dict[str, str] = Field(description="Its report's plots: name -> URL.")


class CurvePoint(HoldoutScores):
    """A judged round on the learning curve."""

    id: str = Field(description="The round's id.")
    state: Optional[str] = Field(description="Its state.")


class RoundsDocument(_Document):
    """``GET /api/rounds``."""

    configured: bool = Field(description="trainer.yaml has a rounds section.")
    rounds: List[RoundSummary] = Field(description="Every round, newest first.")
    learning_curve: List[CurvePoint] = Field(description="The judged rounds, oldest first.")


# ------------------------------------------------------------------ /api/samples


class LabelSummary(_Document):
    """A label of a sample."""

    source: str = Field(description="Who labelled it (human, oracle, import, ...).")
    boxes: int = Field(description="Its boxes.")


class SampleItem(_Document):
    """A stored sample."""

    sid: int = Field(description="Its row in the store (pages with 'before').")
    id: str = Field(description="Its message id.")
    device: str = Field(description="The device it came from.")
    camera: str = Field(description="The camera it came from.")
    reason: str = Field(description="Why triage picked it.")
    note: Optional[str] = Field(description="A note (a flag window's).")
    label_state: str = Field(description="Where it is in labelling.")
    model: str = Field(description="The model that saw it (name version).")
    frame_time: float = Field(description="When its frame was captured (Unix time).")
    received_at: float = Field(description="When the store received it (Unix time).")
    width: int = Field(description="Image width.")
    height: int = Field(description="Image height.")
    predictions: List[Dict[str, Any]] = Field(
        description="The model's boxes in image pixels, as the device sent them (sample_meta.schema.json)."
    )
    labels: List[LabelSummary] = Field(description="Its labels.")
    image: str = Field(description="Its image's URL on this page.")
    label_studio: Optional[str] = Field(description="Its Label Studio task (null: never sent there).")


class SampleStats(_Document):
    """Counts a person wants first (``trainer.store.sample_stats``) and the cameras to filter by."""

    samples: int = Field(description="Samples stored.")
    first_received_at: Optional[float] = Field(description="When the first was received (Unix time).")
    last_received_at: Optional[float] = Field(description="When the last was received (Unix time).")
    by_reason: Dict[str, int] = Field(description="Samples by triage reason.")
    by_device: Dict[str, int] = Field(description="Samples by device.")
    by_label_state: Dict[str, int] = Field(description="Samples by labelling state.")
    labels_by_source: Dict[str, int] = Field(description="Labels by source.")
    synthetic: int = Field(description="Samples from synthetic cameras.")
    alerts: int = Field(description="Alerts stored.")
    snapshots: int = Field(description="Snapshots stored.")
    blob_bytes: int = Field(description="Bytes of images held.")
    drops_by_reason: Dict[str, int] = Field(description="Messages devices dropped, by reason.")
    cameras: List[str] = Field(description="Every camera with samples.")


class SamplesDocument(_Document):
    """``GET /api/samples``: a page of samples, newest first."""

    samples: List[SampleItem] = Field(description="The samples of this page.")
    stats: SampleStats = Field(description="The store's counts.")
    filters: Dict[str, Optional[str]] = Field(
        description="The filters applied: device, camera, reason, label_state (null: not filtered)."
    )


#: the fleet pages' schemas (docs/schemas/pages/fleet_*.schema.json)
DOCUMENTS: SchemaSet = {
    "fleet_devices": ("FleetDocument", FleetDocument),
    "fleet_rollouts": ("RolloutsDocument", RolloutsDocument),
    "fleet_rollout_reply": ("RolloutState", RolloutState),
    "fleet_rounds": ("RoundsDocument", RoundsDocument),
    "fleet_samples": ("SamplesDocument", SamplesDocument),
    "fleet_command_reply": ("CommandSent", CommandSent),
}


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m trainer.fleet_pages.documents OUT_DIR [--check]``."""
    return schema_main(DOCUMENTS, SCHEMA_BASE_ID, argv, "The fleet pages' JSON Schemas.", prefix="fleet_")


if __name__ == "__main__":
    sys.exit(main())
