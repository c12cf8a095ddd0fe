"""File output: YOLO data sets and conveyor videos (the I/O layer over ``render``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple, Union

import cv2
import yaml

from agent.synthetic.domains import DomainParams, get_domain
from agent.synthetic.errors import DatasetExistsError, VideoWriterError
from agent.synthetic.parts import CLASS_NAMES
from agent.synthetic.render import Size, iter_frames, render_frame

ProgressCallback = Callable[[int, int], None]
IMAGE_FORMATS = ("png", "jpg")


def write_yolo_dataset(
    out_dir: Union[str, Path],
    domain: Union[str, DomainParams],
    seed: int,
    count: int,
    *,
    size: Size = (256, 256),
    val_fraction: float = 0.0,
    progress: Optional[ProgressCallback] = None,
    image_format: str = "png",
    overwrite: bool = False,
) -> Path:
    """Render frames ``0 .. count-1`` of ``(domain, seed)`` as a YOLO data set; return its data.yaml.

    Layout: ``images/{train,val}/NNNNNN.<fmt>``, ``labels/{train,val}/NNNNNN.txt`` and ``data.yaml``
    (absolute ``path``, ``train``, ``val``, ``names`` as id -> name, ``nc``), written last. The last
    ``round(count * val_fraction)`` frames go to ``val``. With ``val_fraction=0`` everything is ``train``
    and ``val`` points at the train images too: a holdout is simply another data set rendered with
    another seed, whose ``val`` (= its ``train``) is the evaluation split.

    Images are PNG by default, so the pixels are exactly the rendered ones (the domain's JPEG round trip
    already happened in ``render_frame``); ``image_format="jpg"`` saves space (quality 95).

    Raises:
        DatasetExistsError: ``out_dir`` holds files and ``overwrite`` is false.
        UnknownDomainError, ValueError: bad domain, seed, count, size, fraction or format.
    """
    params = get_domain(domain)
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie within [0, 1), got {val_fraction}")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    root = Path(out_dir).resolve()
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise DatasetExistsError(root)
        for owned in ("images", "labels"):
            shutil.rmtree(root / owned, ignore_errors=True)
        _unlink(root / "data.yaml")
    n_val = round(count * val_fraction)
    splits = ("train", "val") if n_val else ("train",)
    for split in splits:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    params_write = [cv2.IMWRITE_PNG_COMPRESSION, 1] if image_format == "png" else [cv2.IMWRITE_JPEG_QUALITY, 95]
    for index in range(count):
        split = "val" if index >= count - n_val else "train"
        frame = render_frame(params, seed, index, size)
        stem = f"{index:06d}"
        image_path = root / "images" / split / f"{stem}.{image_format}"
        if not cv2.imwrite(str(image_path), frame.image, params_write):
            raise OSError(f"{image_path}: cv2.imwrite failed")
        (root / "labels" / split / f"{stem}.txt").write_text(frame.yolo_labels(), encoding="utf-8")
        if progress is not None:
            progress(index + 1, count)
    names: Dict[int, str] = dict(enumerate(CLASS_NAMES))
    data = {
        "path": str(root),
        "train": "images/train",
        "val": "images/val" if n_val else "images/train",
        "nc": len(CLASS_NAMES),
        "names": names,
    }
    header = (
        f"# Synthetic data set: domain={params.name} seed={seed} count={count} "
        f"size={size[0]}x{size[1]} val_fraction={val_fraction}\n"
        f"# Re-create with: edge-trainer synth --domain {params.name} --seed {seed} --count {count} "
        f"--size {size[0]}x{size[1]} --val-fraction {val_fraction} --out <dir>\n"
    )
    data_yaml = root / "data.yaml"
    data_yaml.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return data_yaml


def _unlink(path: Path) -> None:
    if path.exists():
        path.unlink()


def render_video(
    path: Union[str, Path],
    domain: Union[str, DomainParams],
    seed: int,
    frames: int,
    *,
    fps: float = 15.0,
    size: Size = (1080, 1920),
    codec: str = "mp4v",
    start: int = 0,
    progress: Optional[ProgressCallback] = None,
) -> Path:
    """Write ``frames`` conveyor-stream frames (``iter_frames``) from ``start`` to a video file.

    Raises:
        VideoWriterError: OpenCV could not open a writer for this path/codec (checked before rendering).
        UnknownDomainError, ValueError: bad domain, seed, size, frame count, fps or codec string.
    """
    params = get_domain(domain)
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if len(codec) != 4:
        raise ValueError(f"codec must be a four-character code such as 'mp4v' or 'MJPG', got {codec!r}")
    target = Path(path)
    height, width = size
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter.fourcc(*codec), float(fps), (int(width), int(height)))
    if not writer.isOpened():
        raise VideoWriterError(target, codec)
    try:
        stream = iter_frames(params, seed, size, start)
        for done in range(1, frames + 1):
            writer.write(next(stream).image)
            if progress is not None:
                progress(done, frames)
    finally:
        writer.release()
    return target


__all__: Tuple[str, ...] = ("IMAGE_FORMATS", "ProgressCallback", "render_video", "write_yolo_dataset")
