"""``rounds:`` in trainer.yaml: what a learning round trains on, how, how its candidate is gated, and where a
passing one is released."""

from __future__ import annotations

from pathlib import Path
from typing import List, Literal, Optional

from pydantic import Field, field_validator

from agent.strict import StrictModel


class BaselineModel(StrictModel):
    """The release the fleet runs before the first round (later rounds start from the last published one)."""

    name: str = Field(default="demo", description="Release name.")
    version: str = Field(default="1.0.0", description="Its version; a round publishes the next minor version.")
    weights: Path = Field(default=Path("models/demo/demo.pt"), description="Its weights, to fine-tune from.")
    onnx: Path = Field(default=Path("models/demo/demo.onnx"), description="Its FP32 ONNX model.")
    onnx_int8: Path = Field(default=Path("models/demo/demo-int8.onnx"), description="Its INT8 model (what ships).")


class TrainingConfig(StrictModel):
    """Fine-tuning (``trainer.train``: Ultralytics, DDP across ``devices``, AMP on GPU)."""

    epochs: int = Field(default=10, ge=1, le=1000, description="Epochs of fine-tuning.")
    imgsz: int = Field(default=256, ge=32, le=4096, description="Training and export input size.")
    batch: int = Field(default=16, ge=1, le=4096, description="Total batch size (split across GPUs under DDP).")
    optimizer: Literal["AdamW", "SGD", "Adam"] = Field(
        default="AdamW", description="Optimizer (Ultralytics' 'auto' would ignore lr0)."
    )
    lr0: float = Field(default=0.001, gt=0, le=1, description="Initial learning rate (fine-tuning: low).")
    lrf: float = Field(default=0.1, gt=0, le=1, description="Final learning rate as a fraction of lr0.")
    warmup_epochs: float = Field(default=0.5, ge=0, description="Warm-up epochs.")
    close_mosaic: int = Field(default=3, ge=0, description="Last epochs without mosaic augmentation.")
    freeze: Optional[int] = Field(default=None, ge=0, description="Freeze the first N layers (null: none).")
    replay_fraction: float = Field(
        default=0.5,
        ge=0,
        lt=1,
        description="Share of the training list drawn from the base set (the domains the fleet already handles): "
        "the guard against forgetting them.",
    )
    devices: str = Field(default="cpu", description="'cpu', '0', or '0,1,2,3' (DDP on several GPUs).")
    amp: bool = Field(default=True, description="Mixed precision on GPU.")
    workers: int = Field(default=2, ge=0, le=64, description="Data loader workers per process.")
    seed: int = Field(default=0, ge=0, description="Seed of the training run and of the replay draw.")


class GateConfig(StrictModel):
    """When a candidate may ship: scored as INT8 through the agent's engine, on both holdouts."""

    min_new_domain_gain: float = Field(
        default=0.01, description="mAP50-95 the new-domain (field) holdout must gain over the running model."
    )
    max_base_regression: float = Field(default=0.01, ge=0, description="mAP50-95 the base holdout may lose at most.")
    max_int8_loss: float = Field(
        default=0.02,
        ge=0,
        description="Largest mAP50-95 the candidate's INT8 model may lose to its FP32 (base holdout).",
    )


class ReleaseTarget(StrictModel):
    """Where a passing round is signed (``trainer.release``; the keys of the online trainer role)."""

    repo: Path = Field(description="TUF repository directory.")
    keys: Path = Field(description="Key directory (needs the trainer, snapshot and timestamp keys).")
    channel: str = Field(default="stable", description="Release channel.")
    device_types: List[str] = Field(default_factory=list, description="Compatible device types (empty: any).")
    golden: List[Path] = Field(
        default_factory=list, description="Golden images of the health check (default: generated)."
    )
    health_role: Literal["onnx", "onnx_int8"] = Field(
        default="onnx_int8", description="Which model file the devices serve (the health check's expectations)."
    )


class PolicyConfig(StrictModel):
    """When ``edge-trainer serve`` starts a round by itself."""

    enabled: bool = Field(default=False, description="Start rounds automatically.")
    min_new_labelled: int = Field(
        default=200, ge=1, description="Start when this many samples were labelled since the last round."
    )
    every_hours: Optional[float] = Field(
        default=None, gt=0, description="Also start on this schedule (when anything new was labelled)."
    )
    check_interval_s: float = Field(default=60.0, gt=0, description="How often the policy looks.")


class RoundsConfig(StrictModel):
    """Learning rounds (``edge-trainer round``, ``edge-trainer rounds``)."""

    workdir: Path = Field(default=Path("/var/lib/edge-trainer/rounds"), description="One folder per round.")
    base_data: Path = Field(description="data.yaml of the base training set (replayed against forgetting).")
    base_holdout: Path = Field(description="data.yaml of the base holdout (the domains the fleet handles).")
    baseline: BaselineModel = Field(default_factory=BaselineModel, description="The model before the first round.")
    label_sources: List[str] = Field(
        default_factory=lambda: ["human", "oracle", "import"],
        description="Label sources taken as ground truth (add 'pseudo' to train on a teacher's labels).",
    )
    holdout_fraction: float = Field(
        default=0.25,
        gt=0,
        lt=1,
        description="Share of the field samples kept out of training as the new-domain holdout (by image digest: "
        "a sample is in the holdout in every round, never trained on).",
    )
    min_train_samples: int = Field(default=50, ge=1, description="Fewer labelled training samples: refuse.")
    min_holdout_samples: int = Field(default=20, ge=1, description="Fewer new-domain holdout samples: refuse.")
    calib_count: int = Field(default=200, ge=8, description="INT8 calibration images.")
    calib_field_share: float = Field(
        default=0.5, ge=0, le=1, description="Share of the calibration images drawn from the field samples."
    )
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Fine-tuning.")
    gate: GateConfig = Field(default_factory=GateConfig, description="The gate.")
    release: Optional[ReleaseTarget] = Field(default=None, description="Sign passing rounds here; null: do not.")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="Automatic rounds in serve.")

    @field_validator("label_sources")
    @classmethod
    def _sources(cls, value: List[str]) -> List[str]:
        unknown = set(value) - {"human", "oracle", "import", "pseudo"}
        if unknown or not value:
            raise ValueError(f"label sources are human, oracle, import, pseudo; got {value}")
        return value
