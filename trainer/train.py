"""``edge-trainer train``: fine-tune or train a YOLO detector with Ultralytics, offline.

Multi-GPU runs use Ultralytics' own DDP launcher (``--devices 0,1,2,3`` starts one process per GPU through
``torch.distributed.run``); ``--amp`` (on by default) enables mixed precision on GPU; on CPU AMP is off.
Fine-tuning on new samples can replay a fraction of the base data set against forgetting: the train list
becomes the new images plus a seeded random subset of the base training images.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import yaml

from trainer.offline import offline_environment

TINY_MODEL_YAML = Path(__file__).parent / "models" / "yolov8-edge-tiny.yaml"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class TrainError(Exception):
    """The training inputs are unusable (missing data set, bad model path, bad arguments)."""


# GPUs on which Ultralytics reports AMP producing NaN losses (Turing GTX 16xx and relatives): AMP stays off there.
_AMP_UNSAFE_GPUS = re.compile(
    r"(gtx|geforce|quadro|tesla|nvidia).*?(1630|1650|1660|t400|t550|t600|t1000|t1200|t2000|k40m)", re.I
)


def _first_tensor(out: Any) -> Any:
    while isinstance(out, (list, tuple)):
        out = out[0]
    return out


def check_amp_offline(model: Any) -> bool:
    """Whether mixed precision is safe for ``model`` on its device, without downloading anything.

    Ultralytics' own check downloads yolo26n.pt to compare FP32 with AMP inference: offline that is a refused
    network access (and ``offline_environment`` fails the run for it). The same question asked of the model being
    trained: one forward pass in FP32 and one under autocast on a fixed input, in eval mode (BatchNorm statistics
    untouched), outputs finite and close. CPU / MPS: False (AMP is a GPU feature).
    """
    import torch  # noqa: PLC0415 (torch: trainer extra only, seconds to import)

    try:
        device = next(model.parameters()).device
    except StopIteration:
        return False
    if device.type != "cuda":
        return False
    gpu = torch.cuda.get_device_name(device)
    if _AMP_UNSAFE_GPUS.search(gpu):
        print(f"train: AMP off: {gpu} is known to produce NaN losses with AMP", file=sys.stderr)
        return False
    was_training = model.training
    model.eval()
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.rand((2, 3, 256, 256), generator=gen).to(device)
        with torch.no_grad():
            full = _first_tensor(model(x)).float()
            with torch.autocast(device_type="cuda"):
                mixed = _first_tensor(model(x)).float()
        ok = bool(torch.isfinite(mixed).all()) and full.shape == mixed.shape
        ok = ok and bool(torch.allclose(full, mixed, atol=0.5, rtol=0.05))
    except Exception as exc:  # a model the check cannot run: no AMP rather than no training
        print(f"train: AMP check could not run ({type(exc).__name__}: {exc}); AMP off", file=sys.stderr)
        ok = False
    finally:
        model.train(was_training)
    print(f"train: AMP check on {gpu}: {'passed' if ok else 'failed, AMP off'}", file=sys.stderr)
    return ok


@contextlib.contextmanager
def amp_check_without_download() -> Iterator[None]:
    """Ultralytics' trainer calls :func:`check_amp_offline` instead of its downloading check, for this block.

    (Ultralytics' multi-GPU workers are separate processes started by its DDP launcher; they keep Ultralytics'
    check, whose download fails with a ConnectionError that it treats as "checks skipped, AMP on".)
    """
    import ultralytics.engine.trainer as ul_trainer  # noqa: PLC0415 (Ultralytics (torch): trainer extra only, seconds to import)

    original = ul_trainer.check_amp
    ul_trainer.check_amp = check_amp_offline
    try:
        yield
    finally:
        ul_trainer.check_amp = original


def _images_of(data_yaml: Path, split: str) -> List[Path]:
    """Image paths of ``split`` in an Ultralytics data.yaml (folders, lists or .txt files of paths)."""
    spec = yaml.safe_load(data_yaml.read_text())
    root = Path(spec.get("path") or data_yaml.parent)
    if not root.is_absolute():
        root = (data_yaml.parent / root).resolve()
    entries = spec.get(split)
    if entries is None:
        raise TrainError(f"{data_yaml}: no '{split}' entry")
    if isinstance(entries, str):
        entries = [entries]
    images: List[Path] = []
    for entry in entries:
        p = Path(entry)
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            images += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.suffix == ".txt" and p.is_file():
            images += [Path(line.strip()) for line in p.read_text().splitlines() if line.strip()]
        elif p.is_file():
            images.append(p)
        else:
            raise TrainError(f"{data_yaml}: '{split}' entry {entry} does not exist")
    return images


def build_replay_dataset(new_data: Path, base_data: Path, fraction: float, out_dir: Path, seed: int = 0) -> Path:
    """Write a data.yaml training on ``new_data`` plus ``fraction`` of ``base_data``'s training images.

    Validation stays on the new data set's ``val`` split. Class names must agree.
    """
    if not 0.0 <= fraction <= 1.0:
        raise TrainError(f"--replay-fraction must be in [0, 1], got {fraction}")
    new_spec = yaml.safe_load(new_data.read_text())
    base_spec = yaml.safe_load(base_data.read_text())
    if _names(new_spec) != _names(base_spec):
        raise TrainError(f"class names differ between {new_data} and {base_data}: cannot replay")
    new_images = _images_of(new_data, "train")
    base_images = _images_of(base_data, "train")
    rng = random.Random(seed)
    replay = rng.sample(
        base_images,
        k=min(
            len(base_images),
            round(len(new_images) * fraction / max(1e-9, 1 - fraction)) if fraction < 1 else len(base_images),
        ),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    train_list = out_dir / "train.txt"
    train_list.write_text("\n".join(str(p.resolve()) for p in new_images + replay) + "\n")
    val_list = out_dir / "val.txt"
    val_list.write_text("\n".join(str(p.resolve()) for p in _images_of(new_data, "val")) + "\n")
    merged: Dict[str, Any] = {
        "path": str(out_dir.resolve()),
        "train": "train.txt",
        "val": "val.txt",
        "names": _names(new_spec),
    }
    merged["nc"] = len(merged["names"])
    target = out_dir / "data.yaml"
    target.write_text(yaml.safe_dump(merged, sort_keys=False))
    print(f"replay: {len(new_images)} new + {len(replay)} base images ({fraction:.0%} replay)", file=sys.stderr)
    return target


def _names(spec: Dict[str, Any]) -> Dict[int, str]:
    names = spec.get("names")
    if isinstance(names, list):
        return dict(enumerate(names))
    return {int(k): str(v) for k, v in (names or {}).items()}


def parse_devices(devices: str) -> Any:
    """``cpu`` | ``0`` | ``0,1,2,3`` -> the value Ultralytics expects."""
    devices = devices.strip().lower()
    if devices in ("cpu", ""):
        return "cpu"
    parts = [p.strip() for p in devices.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise TrainError(f"--devices must be 'cpu' or GPU indices like 0,1,2,3; got {devices!r}")
    return ",".join(parts) if len(parts) > 1 else int(parts[0])


def train(
    data: Path,
    model: str,
    out: Path,
    epochs: int,
    imgsz: int,
    batch: int,
    devices: str = "cpu",
    amp: bool = True,
    resume: bool = False,
    workers: int = 2,
    seed: int = 0,
    patience: int = 100,
    replay_data: Optional[Path] = None,
    replay_fraction: float = 0.3,
    extra: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Train and return a summary (weights paths, metrics, images/s, whether AMP was active)."""
    if not data.is_file():
        raise TrainError(f"data set file not found: {data}")
    model_path = Path(model)
    if model_path.suffix in (".pt", ".yaml") and not model_path.is_file() and model != "tiny":
        raise TrainError(f"model not found: {model}")
    if model == "tiny":
        model_path = TINY_MODEL_YAML
    out = out.resolve()
    if replay_data is not None:
        data = build_replay_dataset(data, replay_data, replay_fraction, out / "replay")
    device = parse_devices(devices)
    extra = dict(extra or {})
    if "lr0" in extra and extra.get("optimizer", "auto") == "auto":
        # Ultralytics' optimizer=auto picks its own learning rate and ignores lr0: a fine-tune asking for one gets
        # AdamW with it (what auto picks for short runs, at the rate asked for)
        extra["optimizer"] = "AdamW"
        print(f"train: lr0={extra['lr0']} given: optimizer AdamW (auto would ignore lr0)", file=sys.stderr)
    with offline_environment(), amp_check_without_download():
        from ultralytics import YOLO  # noqa: PLC0415 (Ultralytics (torch): trainer extra only, seconds to import)

        yolo = YOLO(str(model_path), task="detect")
        n_train = len(_images_of(data, "train"))
        started = time.time()
        results = yolo.train(
            data=str(data),
            epochs=epochs,
            imgsz=imgsz,
            batch=batch,
            device=device,
            amp=amp,
            resume=resume,
            workers=workers,
            seed=seed,
            deterministic=True,
            patience=patience,
            project=str(out.parent),
            name=out.name,
            exist_ok=True,
            plots=True,
            verbose=False,
            **extra,
        )
        elapsed = time.time() - started
        trainer = yolo.trainer
    save_dir = Path(trainer.save_dir)
    amp_active = bool(getattr(trainer, "amp", False))
    metrics = {k: float(v) for k, v in (getattr(results, "results_dict", {}) or {}).items()}
    summary = {
        "data": str(data),
        "model": str(model_path),
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "device": str(device),
        "amp_requested": amp,
        "amp_active": amp_active,
        "train_images": n_train,
        "seconds": round(elapsed, 1),
        "images_per_second": round(n_train * epochs / max(elapsed, 1e-9), 2),
        "best": str(save_dir / "weights" / "best.pt"),
        "last": str(save_dir / "weights" / "last.pt"),
        "save_dir": str(save_dir),
        "metrics": metrics,
    }
    (save_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
