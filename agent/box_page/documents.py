"""The box page's JSON documents, declared: ``GET /api/state`` (:class:`PageState`) and the daemon's status
document inside it (:class:`StatusDocument`: status.json, what ``edge-agent status`` reads).

Their JSON Schemas are generated like the MQTT messages' (``agent.json_schema``) and committed under
``docs/schemas/pages/``: ``python -m agent.box_page.documents docs/schemas/pages [--check]``.

The status document is built as a dict every few seconds by the daemon (``agent.app.report``); it is not
validated there (a status that cannot be written must never stop the daemon). The page validates what it
serves (``views.page_state``), and the tests build real status documents and validate them here. Every
section is declared field by field from its owner's snapshot (the link's ``LinkMetrics``, the writer's
``OutputCounters``, the pipeline's ``PipelineCounters``...); the only open parts are maps keyed by names
(cameras, threads, spool kinds and counters, push topics), never a model's own keys.
"""

from __future__ import annotations

import sys
from typing import Dict, List, Literal, Optional, Union

from pydantic import ConfigDict, Field

from agent.json_schema import SchemaSet
from agent.json_schema import main as schema_main
from agent.strict import FrozenModel

__all__ = [
    "DOCUMENTS",
    "SCHEMA_BASE_ID",
    "CameraRecord",
    "Health",
    "InstallerStatus",
    "PageState",
    "RecentOutput",
    "StatusDocument",
]

SCHEMA_BASE_ID = "https://schemas.edge-vision-loop.invalid/pages/"


class _Document(FrozenModel):
    """A declared JSON document: unknown keys are errors, values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class Empty(_Document):
    """An empty section: the part behind it does not run (before the start, without a model, after a failed
    start)."""


class SectionError(_Document):
    """A section its owner could not read right now."""

    error: str = Field(description="Why the section could not be read.")


# ------------------------------------------------------------------ the status document's sections


class ReleaseIdentity(_Document):
    """A signed release, as the installer names it."""

    name: str = Field(description="Release name.")
    version: str = Field(description="Release version string.")
    counter: int = Field(description="Monotonic release counter (the anti-rollback floor compares it).")


class ModelSection(_Document):
    """The model the pipeline runs (``agent.app.pipeline.ModelInfo`` and its file)."""

    name: str = Field(description="Release name, or the model file's name for a factory model.")
    version: str = Field(description="Release version, or the version in the model's metadata.")
    sha256: str = Field(description="SHA-256 of the model file.")
    path: str = Field(description="The model file the pipeline loaded.")


class ModelError(_Document):
    """No model runs."""

    error: str = Field(description="Why no model runs (the daemon waits for a signed release).")


class DecodeRecord(_Document):
    """A camera's video decoder, summed over every connection (``agent.sources.frame.DecodeStats``)."""

    codec: str = Field(description="Codec of the stream (h264, h265, ...).")
    decoder: str = Field(description="The decoder in use (software or hardware, by name).")
    received: int = Field(description="Access units received.")
    waited_for_keyframe: int = Field(description="Access units dropped while waiting for a keyframe.")
    decoded: int = Field(description="Frames the decoder produced.")
    decode_errors: int = Field(description="Access units the decoder dropped as undecodable.")
    decode_ms: Optional[float] = Field(description="Mean CPU milliseconds per decoded frame (null: none timed).")
    decode_cpu_s: float = Field(description="CPU seconds spent decoding.")


class MainStreamRecord(_Document):
    """A camera's main stream: received, decoded only for stills (``agent.sources.frame.MainStreamStatus``)."""

    address: str = Field(description="Where the main stream comes from, without credentials.")
    state: str = Field(description="Its source state (starting, streaming, stalled, reconnecting, stopped, failed).")
    reason: str = Field(description="Why the last state change happened ('' when nothing to say).")
    codec: str = Field(description="Codec of the main stream.")
    received_units: int = Field(description="Access units received.")
    received_bytes: int = Field(description="Bytes received.")
    buffered_units: int = Field(description="Access units buffered now (from the last keyframe).")
    buffered_bytes: int = Field(description="Bytes buffered now.")
    reconnects: int = Field(description="Successful re-opens.")
    stills: int = Field(description="Stills decoded from it.")
    still_failures: int = Field(description="Stills that could not be decoded.")
    still_ms: Optional[float] = Field(description="Mean wall milliseconds to decode a still (null: none yet).")
    width: int = Field(description="Width of its frames (0 before the first still).")
    height: int = Field(description="Height of its frames (0 before the first still).")


class CameraRecord(_Document):
    """One enabled camera: its configuration, its source's snapshot (``SourceStatus.as_record``, once the
    source reported) and its figures in the pipeline (once a model runs)."""

    name: str = Field(description="The camera's name.")
    source: str = Field(description="Where the frames come from (without credentials), or the source type.")
    # the source's snapshot: absent until the source reported once
    camera: Optional[str] = Field(default=None, description="The camera's name, as the source reports it.")
    kind: Optional[str] = Field(default=None, description="The source type (rtsp, file, folder, usb, synthetic).")
    state: Optional[str] = Field(
        default=None, description="The source's state (starting, streaming, stalled, reconnecting, stopped, failed)."
    )
    previous: Optional[str] = Field(default=None, description="The state before the last change.")
    reason: Optional[str] = Field(default=None, description="Why the last change happened ('' when nothing to say).")
    since: Optional[float] = Field(default=None, description="When the last change happened (Unix time).")
    frames: Optional[int] = Field(default=None, description="Frames delivered into the latest-frame slot.")
    dropped: Optional[int] = Field(default=None, description="Frames replaced in the slot before inference took them.")
    skipped: Optional[int] = Field(default=None, description="Frames read but not delivered (the fps limit).")
    reconnects: Optional[int] = Field(default=None, description="Successful re-opens after the first open.")
    reconnect_attempts: Optional[int] = Field(
        default=None, description="Every open tried after the first one, failed or not."
    )
    failed_attempts: Optional[int] = Field(default=None, description="Consecutive failed opens (0 once streaming).")
    width: Optional[int] = Field(default=None, description="Width of the newest frame (0 before the first).")
    height: Optional[int] = Field(default=None, description="Height of the newest frame (0 before the first).")
    address: Optional[str] = Field(default=None, description="The source's address without credentials.")
    decode: Optional[DecodeRecord] = Field(
        default=None, description="The decoder's figures (null for sources without a counted decoder)."
    )
    main: Optional[MainStreamRecord] = Field(default=None, description="The main stream, when the camera has one.")
    # the pipeline's figures: absent while no model runs
    processed: Optional[int] = Field(default=None, description="Frames run through the model.")
    stale: Optional[int] = Field(default=None, description="Frames refused as older than the camera's stall limit.")
    alerts: Optional[int] = Field(default=None, description="Alerts fired.")
    samples: Optional[int] = Field(default=None, description="Triage samples selected.")
    fps: Optional[float] = Field(default=None, description="Processed frames per second.")
    latency_p50_ms: Optional[float] = Field(
        default=None, description="Capture-to-rules latency, median (null before the first frame)."
    )
    latency_p99_ms: Optional[float] = Field(
        default=None, description="Capture-to-rules latency, 99th percentile (null before the first frame)."
    )


class InferenceSection(_Document):
    """The inference loop's counters (``PipelineCounters``) and the rules' timing (``RulesTiming``)."""

    steps: int = Field(description="Pipeline steps run.")
    batches: int = Field(description="Inference batches.")
    frames: int = Field(description="Frames run through the model.")
    swaps: int = Field(description="Hot model swaps.")
    swap_failures: int = Field(description="Model swaps refused or failed.")
    inference_errors: int = Field(description="Failed inference batches.")
    preprocess_ms: float = Field(description="Milliseconds of the last batch's preprocessing.")
    inference_ms: float = Field(description="Milliseconds of the last batch's inference.")
    postprocess_ms: float = Field(description="Milliseconds of the last batch's decoding and NMS.")
    preprocess_ms_total: float = Field(description="Milliseconds of preprocessing in all.")
    inference_ms_total: float = Field(description="Milliseconds of inference in all.")
    postprocess_ms_total: float = Field(description="Milliseconds of decoding and NMS in all.")
    last_batch_size: int = Field(description="Frames in the last batch.")
    rules_ms: float = Field(description="Milliseconds of tracker, alert rules and triage for the last frame.")
    rules_ms_total: float = Field(description="Milliseconds of tracker, alert rules and triage in all.")
    busy_s: Optional[float] = Field(description="Seconds the batch in progress has run (null: between batches).")
    aggregate_fps: float = Field(description="Processed frames per second, all cameras.")


class SpoolSection(_Document):
    """The durable queue (``agent.spool.SpoolStats``)."""

    items: int = Field(description="Messages queued.")
    bytes: int = Field(description="Payload bytes queued.")
    max_bytes: int = Field(description="The spool's bound in bytes.")
    in_flight: int = Field(description="Messages handed to the link and not acknowledged yet.")
    by_kind: Dict[str, int] = Field(description="Messages queued per kind (alert, sample, ...).")
    oldest_by_kind: Dict[str, str] = Field(description="Per kind, when its oldest queued message was queued (ISO).")
    counters: Dict[str, int] = Field(
        description="The spool's persisted counters by name ('evicted.<kind>', 'refused_full.<kind>', ...)."
    )


class OutputSection(_Document):
    """What the output writer did (``agent.app.pipeline.OutputCounters``) and its queue."""

    alerts_spooled: int = Field(description="Alerts written to the spool.")
    samples_spooled: int = Field(description="Samples written to the spool.")
    snapshots_spooled: int = Field(description="Snapshots written to the spool.")
    samples_dropped_queue_full: int = Field(description="Samples dropped: the writer's queue was full.")
    alerts_dropped_queue_full: int = Field(description="Alerts dropped: the writer's queue was full.")
    snapshots_dropped_queue_full: int = Field(description="Snapshots dropped: the writer's queue was full.")
    spool_full: int = Field(description="Writes the full spool refused.")
    spool_write_errors: int = Field(description="Failed spool writes.")
    encode_errors: int = Field(description="Pictures that could not be encoded.")
    main_stream_stills: int = Field(description="Pictures taken from a camera's main stream.")
    main_stream_fallbacks: int = Field(
        description="Pictures from the detect frame: the main stream had none of the moment."
    )
    last_error: Optional[str] = Field(description="The last spool write error (null: none).")
    last_error_wall: Optional[float] = Field(description="When the last write failed (Unix time).")
    last_ok_wall: Optional[float] = Field(description="When the last write succeeded (Unix time).")
    disk_ok: bool = Field(description="False while the latest spool write failed (disk full, I/O error).")
    queued: int = Field(description="Outputs waiting in the writer's queue.")


class MqttSection(_Document):
    """The MQTT link's counters (``agent.link.LinkMetrics``) and since when the broker is out of reach."""

    connect_attempts: int = Field(description="Connections tried.")
    connects: int = Field(description="Connections made.")
    connect_errors: int = Field(description="TCP/TLS failures and CONNACK timeouts.")
    refused: int = Field(description="CONNACKs with a failure reason code (bad credentials, not authorised, ...).")
    protocol_fallbacks: int = Field(description="Falls back from MQTT 5 to 3.1.1.")
    disconnects: int = Field(description="Connections lost.")
    subscribe_failures: int = Field(description="Subscriptions the broker refused.")
    published: int = Field(description="Messages published.")
    acked: int = Field(description="Messages the broker acknowledged (PUBACK).")
    rejected: int = Field(description="PUBACKs with a failure reason code.")
    quarantined: int = Field(description="Spooled messages set aside after repeated rejections.")
    retained_published: int = Field(description="Retained messages published (statuses).")
    commands: int = Field(description="Commands received.")
    commands_malformed: int = Field(description="Commands refused as malformed.")
    command_handler_errors: int = Field(description="Commands whose handler raised.")
    serve_errors: int = Field(description="Exceptions while serving a connection (it is made again with backoff).")
    pushes: int = Field(description="Model pushes received.")
    pushes_malformed: int = Field(description="Model pushes refused as malformed.")
    spool_errors: int = Field(description="Spool reads or acknowledgements that failed.")
    connected: bool = Field(description="Connected to the broker now.")
    protocol: Optional[str] = Field(description="The MQTT version in use (null: never connected).")
    last_connack: Optional[str] = Field(description="The last CONNACK's reason (null: none yet).")
    last_backoff_s: float = Field(description="The last wait before a reconnection, in seconds.")
    window: int = Field(description="Messages that may be in flight at once.")
    down_since: Optional[str] = Field(description="Since when the broker is out of reach (ISO; null: connected).")


class OtaEventRecord(_Document):
    """The OTA worker's latest event (``LiveState.record_ota_event``)."""

    kind: str = Field(description="The step (downloading, verified, installed, committed, rolled_back, ...).")
    release: Optional[ReleaseIdentity] = Field(description="The release it concerns (null: none known).")
    reason: Optional[str] = Field(description="Why it was rejected or failed (a reason code).")
    detail: Optional[str] = Field(description="What happened, in words.")
    ts: str = Field(description="When the worker recorded it (ISO).")


class ProbationRecord(_Document):
    """The release on probation, as the model-update service sees it."""

    release: Optional[ReleaseIdentity] = Field(description="The release on probation.")
    served_by_daemon: bool = Field(description="This daemon serves it now.")
    serving_since: Optional[str] = Field(description="When this daemon began serving it (ISO; null: not served).")
    served_s: float = Field(description="Seconds of probation served so far.")
    period_s: float = Field(description="Seconds of probation needed to commit it.")
    starts: int = Field(description="Daemon runs that served it.")
    crashes: int = Field(description="Unclean ends on the same boot while it was served.")
    power_losses: int = Field(description="Unclean ends on another boot (power cut, hard reset).")


class QueuedRecord(_Document):
    """A release verified during a probation, kept on the box until the trial ends (``agent.ota.state.Queued``)."""

    slot: str = Field(description="SHA-256 of its manifest: its slot once installed.")
    release: ReleaseIdentity = Field(description="The release.")
    bundle: str = Field(description="Its copy on the box (a directory or a .tar).")
    source: str = Field(description="Where it was installed from.")
    queued_at: str = Field(description="When it was queued (ISO).")
    attempts: int = Field(description="Install attempts begun.")


class TransferRecord(_Document):
    """A chunked transfer in progress (``agent.ota.chunks.TransferCounters`` and its position)."""

    release: ReleaseIdentity = Field(description="The release being received.")
    offset: int = Field(description="Bytes assembled in order so far.")
    size: int = Field(description="Size of the whole bundle in bytes.")
    chunks: int = Field(description="Chunks received.")
    bytes_appended: int = Field(description="Bytes appended in order.")
    duplicates: int = Field(description="Chunks received again.")
    spilled: int = Field(description="Chunks kept ahead of a gap.")
    refused: int = Field(description="Chunks refused (bad header or digest).")
    dropped_backpressure: int = Field(description="Chunks dropped while the worker was busy.")
    resubscribes: int = Field(description="Subscriptions made again to fill a gap.")
    bytes_spilled: int = Field(description="New bytes kept ahead of a gap.")


class ModelUpdatesSection(_Document):
    """The model-update service (``agent.app.model_updates.ModelUpdateService.status``)."""

    installs: int = Field(description="Installs this daemon ran.")
    reports: int = Field(description="OTA state reports published.")
    desired: Dict[str, ReleaseIdentity] = Field(description="The newest push per push topic.")
    probation: Optional[ProbationRecord] = Field(description="The release on probation (null: none).")
    queued: Optional[QueuedRecord] = Field(description="A release waiting for the trial to end (null: none).")
    deferred: Optional[ReleaseIdentity] = Field(
        description="The push waiting for the trial (or the queued bundle) to end (null: none)."
    )
    transfer: Optional[TransferRecord] = Field(description="The chunked transfer in progress (null: none).")


class ThreadRecord(_Document):
    """A supervised worker (``agent.threads.WorkerState``)."""

    state: str = Field(description="starting, running, restarting, stopped, died or gave_up.")
    deaths: int = Field(description="Deaths of the thread (restarted or not).")
    restarts: int = Field(description="Restarts of the thread.")
    last_error: Optional[str] = Field(description="The last death's error (null: none).")


class WatchdogSection(_Document):
    """The systemd watchdog."""

    enabled: bool = Field(description="systemd expects watchdog pings.")
    pings: int = Field(description="Pings sent (from the inference loop).")


class StatusDocument(_Document):
    """The daemon's status document: status.json, what ``edge-agent status`` reads, and the box page's
    ``status`` (built by ``agent.app.report``)."""

    version: int = Field(description="Version of this document's layout (1).")
    agent_version: str = Field(description="Version of the agent.")
    pid: int = Field(description="The daemon's process id.")
    state: str = Field(description="The daemon's phase: starting, running, stopping or stopped.")
    started: str = Field(description="When the daemon started (ISO).")
    updated: str = Field(description="When this document was built (ISO).")
    device: str = Field(description="The device's id.")
    site: str = Field(description="The device's site.")
    model: Union[ModelSection, ModelError, Empty] = Field(
        description="The model that runs, why none runs, or {} before the start."
    )
    cameras: Dict[str, CameraRecord] = Field(description="The enabled cameras by name ({} before the start).")
    inference: Union[InferenceSection, Empty] = Field(description="The inference loop ({} while no model runs).")
    spool: Union[SpoolSection, SectionError, Empty] = Field(
        description="The durable queue ({} before the start; an error while it cannot be read)."
    )
    output: Union[OutputSection, Empty] = Field(description="The output writer ({} before the start).")
    mqtt: Union[MqttSection, Empty] = Field(description="The MQTT link ({} before the start).")
    ota: Optional[OtaEventRecord] = Field(description="The OTA worker's latest event (null: none yet).")
    model_updates: Optional[ModelUpdatesSection] = Field(
        description="The model-update service (null: OTA is not configured, or before the start)."
    )
    threads: Dict[str, ThreadRecord] = Field(description="The supervised threads by name.")
    watchdog: WatchdogSection = Field(description="The systemd watchdog (pinged from the inference loop).")
    reloads: int = Field(description="Configuration reloads applied.")
    problems: List[str] = Field(description="What a person should look at (recent errors, threads that died, ...).")


# ------------------------------------------------------------------ the installer's own status


class SlotRecord(_Document):
    """An installed release (``agent.ota.state.SlotRecord``)."""

    slot: str = Field(description="Its slot: the SHA-256 of its manifest.")
    name: str = Field(description="Release name.")
    version: str = Field(description="Release version.")
    counter: int = Field(description="Release counter.")
    channel: str = Field(description="Release channel.")
    model: str = Field(description="The served model file, relative to the slot directory.")
    health_passed: bool = Field(description="It passed the health check (golden images).")


class TrialRecord(_Document):
    """The active release's probation (``agent.ota.state.Trial``)."""

    slot: str = Field(description="The slot on trial.")
    since: str = Field(description="When it was switched to (ISO).")
    starts: int = Field(description="Daemon runs that served it.")
    crashes: int = Field(description="Unclean ends on the same boot.")
    running: bool = Field(description="A daemon serves it now (still set at the next start: an unclean end).")
    boot_id: Optional[str] = Field(description="The kernel boot on which 'running' was set (null: unknown).")
    power_losses: int = Field(description="Unclean ends on another boot (power cut, hard reset).")
    serving_since: Optional[str] = Field(description="When the running daemon began serving it (ISO; null: not).")
    served_s: float = Field(description="Probation served by earlier runs that ended cleanly, in seconds.")


class PendingRecord(_Document):
    """An install attempt that has not switched yet (``agent.ota.state.Pending``)."""

    phase: str = Field(description="downloading, verified, installed or health_checked.")
    slot: Optional[str] = Field(description="Its slot, once verified.")
    release: Optional[ReleaseIdentity] = Field(description="The release, once verified.")
    source: str = Field(description="Where it comes from.")
    started: str = Field(description="When the attempt began (ISO).")


class LastAttempt(_Document):
    """The last install attempt's outcome."""

    kind: str = Field(description="How it ended (committed, rejected, failed, rolled_back, ...).")
    release: Optional[ReleaseIdentity] = Field(description="The release it concerned (null: none known).")
    reason: Optional[str] = Field(description="Why it was rejected or failed (a reason code).")
    detail: Optional[str] = Field(description="What happened, in words.")
    at: str = Field(description="When (ISO).")


class InstallerStatus(_Document):
    """The OTA installer's own status, read from its state on disk (``Installer.status``, ``ota status --json``)."""

    active: Optional[SlotRecord] = Field(description="The release served (null: the factory model).")
    previous: Optional[SlotRecord] = Field(description="The release before it.")
    known_good: Optional[SlotRecord] = Field(description="The last release that passed its probation.")
    probation: Optional[TrialRecord] = Field(description="The active release's probation (null: committed).")
    pending: Optional[PendingRecord] = Field(description="An install attempt in progress (null: none).")
    floor: int = Field(description="The anti-rollback floor: no release with a lower counter installs.")
    last: Optional[LastAttempt] = Field(description="The last attempt's outcome (null: none recorded).")
    time_floor: str = Field(description="The trusted time floor (ISO): metadata expiry is judged against it.")
    bad: List[str] = Field(description="Slots refused for good (rolled back).")
    queued: Optional[QueuedRecord] = Field(description="A release waiting for the trial to end (null: none).")


# ------------------------------------------------------------------ the page's document


class Health(_Document):
    """The verdict ``edge-agent status`` gives on the status document (``agent.app.status.assess``)."""

    code: int = Field(ge=0, le=3, description="Its exit code: 0 healthy, 1 degraded, 2 no status, 3 not running.")
    verdict: Literal["healthy", "degraded", "no status", "not running"] = Field(description="The code in words.")
    problems: List[str] = Field(description="What a person should look at.")


class RecentOutput(_Document):
    """An alert or sample the box produced lately (the output writer keeps the last few)."""

    id: str = Field(description="The message's id.")
    camera: str = Field(description="The camera it came from.")
    at: str = Field(description="When its frame was captured (ISO).")
    what: str = Field(description="What it is (the alert rule, or the sample's reason).")
    detail: str = Field(description="More about it, in words.")
    image: Optional[str] = Field(description="Its picture's URL on this page (null: sent without one).")


class PageState(_Document):
    """The box page's ``GET /api/state``."""

    status: StatusDocument = Field(description="The daemon's status document.")
    health: Health = Field(description="The verdict on it.")
    source: Literal["live", "file"] = Field(
        description="'live': built by the daemon for this request; 'file': status.json (the daemon was slow)."
    )
    ota: Optional[Union[InstallerStatus, SectionError]] = Field(
        description="The OTA installer's status (null: OTA is not configured; an error: its state is unreadable)."
    )
    alerts: List[RecentOutput] = Field(description="Recent alerts, newest first.")
    samples: List[RecentOutput] = Field(description="Recent samples, newest first.")
    commands: List[str] = Field(description="The commands the page's buttons send (agent.web.forms).")
    preview_fps: float = Field(description="How often the page may ask for a camera's preview.")


#: the box page's schemas (docs/schemas/pages/box_*.schema.json)
DOCUMENTS: SchemaSet = {
    "box_state": ("BoxPageState", PageState),
    "box_status": ("StatusDocument", StatusDocument),
}


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m agent.box_page.documents OUT_DIR [--check]``."""
    return schema_main(DOCUMENTS, SCHEMA_BASE_ID, argv, "The box page's JSON Schemas.", prefix="box_")


if __name__ == "__main__":
    sys.exit(main())
