"""OTA configuration (pydantic, ``extra="forbid"``): where state lives, what to trust, every size limit."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class OtaLimits(BaseModel):
    """Every size limit in one place (like ngclient's ``UpdaterConfig``): nothing is read past these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_target_bytes: int = Field(
        2 * 1024**3, ge=1, description="Largest single release file accepted, whatever the metadata says."
    )
    max_release_bytes: int = Field(4 * 1024**3, ge=1, description="Largest sum of all files of one release.")
    max_manifest_bytes: int = Field(1024 * 1024, ge=1024, description="Largest release manifest / channel pointer.")
    max_bundle_bytes: int = Field(
        8 * 1024**3, ge=1, description="Largest total unpacked size of a USB / pushed bundle."
    )
    max_bundle_members: int = Field(10_000, ge=1, description="Most entries a bundle archive may hold.")
    max_compression_ratio: float = Field(
        200.0, gt=1.0, description="Unpacked size / archive size above which an archive is a bomb."
    )
    chunk_bytes: int = Field(256 * 1024, ge=4096, description="Read size of downloads and hashing.")
    http_timeout_s: float = Field(30.0, gt=0, description="Socket timeout of HTTP requests.")
    fetch_deadline_s: float = Field(
        3600.0, gt=0, description="One HTTP fetch (metadata or target) must finish within this (else too_slow)."
    )
    fetch_min_rate: float = Field(
        1024.0,
        ge=0,
        description="Bytes/s a fetch must average once fetch_grace_s passed (slow-retrieval attacks end too_slow).",
    )
    fetch_grace_s: float = Field(
        30.0, gt=0, description="Headers must arrive within this; the average rate is judged after it."
    )


class DeviceConfig(BaseModel):
    """What this device is, for the release's compatibility constraints."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_type: str = Field("x86-cpu", description="Device type name matched against compatibility.device_types.")
    tensorrt_version: Optional[str] = Field(None, description="TensorRT version (None: no TensorRT here).")
    jetpack_version: Optional[str] = Field(None, description="JetPack version (None: not a Jetson).")
    compute_capability: Optional[str] = Field(None, description="GPU compute capability, e.g. '8.7'.")


class ProbationConfig(BaseModel):
    """When a freshly switched release is committed or rolled back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_crashes: int = Field(
        2, ge=1, description="Unclean restarts (crash or watchdog kill) during probation that trigger a rollback."
    )
    period_s: float = Field(
        600.0,
        ge=0,
        description="Seconds of running after which a trial commits (runs that ended cleanly and the current one; "
        "a run that ended in a crash or a power loss gives no credit).",
    )
    max_power_losses: int = Field(
        5,
        ge=1,
        description="Unclean ends on another kernel boot (power cut, hard reset) during probation after which the "
        "trial is ended by a rollback to the known-good release, without marking the release bad: they are not "
        "crashes of the model, but a model that takes the whole box down looks the same.",
    )


class HealthCheckConfig(BaseModel):
    """How the health check runs the golden images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_role: Literal["onnx", "onnx_int8"] = Field(
        "onnx", description="Which model file of the release is health-checked and served."
    )
    intra_op_threads: int = Field(1, ge=0, le=64, description="ONNX Runtime threads for the check.")
    latency_repeats: int = Field(3, ge=1, le=100, description="Timed runs per golden image (median is used).")
    min_agreement: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of the current model's confident detections on the golden images this device trusts "
        "(the active release's and the candidate's images, run through the current model) that the candidate "
        "must find too; 0 disables the comparison.",
    )
    agreement_conf: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Current-model detections at or above this confidence are the reference; the candidate is "
        "decoded at half of it (a retrained model may be less sure and still agree).",
    )
    agreement_iou: float = Field(0.5, gt=0, le=1, description="IoU at which a candidate box matches a reference box.")
    runtime_agreement: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Share of the candidate's own confident detections (>= agreement_conf) in its portable run "
        "(graph optimisations off: the same on every CPU, what the golden expectations are recorded in) that its "
        "optimised run, what the daemon serves, must find on the golden images (same class, IoU >= "
        "agreement_iou); 0 disables it. Measured on the shipped INT8 demo model under AVX2 without VNNI: 888 of 888.",
    )


class OtaConfig(BaseModel):
    """The OTA installer's configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state_dir: Path = Field(
        Path("/var/lib/edge-agent/ota"), description="Install state, TUF metadata caches, staging and slots."
    )
    trusted_root: Path = Field(
        Path("/etc/edge-agent/trust/root.json"),
        description="Pinned root metadata of the online repository (shipped with the agent).",
    )
    offline_root: Optional[Path] = Field(
        Path("/etc/edge-agent/trust/offline-root.json"),
        description="Pinned root metadata of the offline (USB) repository; None disables offline bundles.",
    )
    repository_url: Optional[str] = Field(
        None, description="Base URL of the online repository (serves metadata/ and targets/)."
    )
    channel: str = Field("stable", description="Release channel followed by this device.")
    device: DeviceConfig = Field(default_factory=DeviceConfig, description="This device, for compatibility.")
    limits: OtaLimits = Field(default_factory=OtaLimits, description="Size limits.")
    probation: ProbationConfig = Field(default_factory=ProbationConfig, description="Probation policy.")
    health: HealthCheckConfig = Field(default_factory=HealthCheckConfig, description="Health check settings.")
    accept_class_changes: bool = Field(
        False,
        description="Take a release whose class list differs from the running model's when its manifest declares "
        "the change, even if alert rules name classes by id (rules naming classes only by name, all present, "
        "accept it without this).",
    )
    accept_input_size_changes: bool = Field(
        False, description="Take a release whose model input size differs (declared in its manifest)."
    )
    accept_output_layout_changes: bool = Field(
        False, description="Take a release whose output layout (raw / end2end / efficient_nms) differs (declared)."
    )
    keep_slots: int = Field(
        3, ge=2, le=16, description="Most release slots kept on disk (active, previous and known-good always are)."
    )


class ModelUpdatesConfig(BaseModel):
    """Timing and bounds of the daemon's model-update service (pushes over MQTT, chunked transfers, retries).

    Here, with the rest of the OTA configuration, so that loading the agent's configuration does not import
    the update service (and the installer, tuf and requests with it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tick_s: float = Field(default=0.5, gt=0, le=60, description="Period of retry, stall and deferral checks.")
    retry_initial_s: float = Field(default=5.0, gt=0, description="First wait after a failed transport.")
    retry_max_s: float = Field(default=300.0, gt=0, description="Longest wait between transport retries.")
    retry_jitter: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Random fraction of each retry wait, so that boxes that failed together do not retry together.",
    )
    chunk_stall_s: float = Field(
        default=30.0,
        gt=0,
        description="A chunked transfer without progress for this long re-subscribes (retained chunks again).",
    )
    chunk_deadline_s: float = Field(
        default=3600.0, gt=0, description="A chunked transfer must finish within this (this run), else too_slow."
    )
    chunk_min_rate: float = Field(
        default=1024.0,
        ge=0,
        description="Bytes/s of new chunks a transfer must average once chunk_grace_s passed, else too_slow.",
    )
    chunk_grace_s: float = Field(default=60.0, gt=0, description="Before this, a transfer's rate is not judged.")
    max_queued_chunk_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Chunk bytes waiting for the worker; beyond this chunks are dropped and fetched again later.",
    )
    health_grace_s: float = Field(
        default=60.0, ge=0, description="Seconds after a switch before the FPS health check can fail a trial."
    )
    progress_step: float = Field(
        default=0.1, gt=0, le=1, description="Chunk progress is reported each time it grows by this fraction."
    )
