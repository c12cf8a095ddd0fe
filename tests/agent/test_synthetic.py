"""Tests of the synthetic scene renderer (agent.synthetic): determinism, exact boxes, domains, files."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np
import pytest
import yaml

from agent.synthetic import (
    CLASS_NAMES,
    DOMAINS,
    DatasetExistsError,
    DomainParams,
    SyntheticFrame,
    UnknownDomainError,
    VideoWriterError,
    get_domain,
    iter_frames,
    render_frame,
    render_stream_frame,
    render_video,
    write_yolo_dataset,
)
from agent.synthetic.render import _stream_context

SMALL = (96, 128)


def _clean(domain: str = "factory", **changes: object) -> DomainParams:
    """A domain with every pixel effect off that would blur or shift an object's outline."""
    base = dataclasses.replace(
        get_domain(domain),
        noise_sigma=0.0,
        blur_sigma=(0.0, 0.0),
        motion_blur=0.0,
        shadow=0.0,
        jpeg_quality=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _same(a: SyntheticFrame, b: SyntheticFrame) -> bool:
    return (
        a.image.tobytes() == b.image.tobytes()
        and a.boxes.tobytes() == b.boxes.tobytes()
        and a.class_ids.tobytes() == b.class_ids.tobytes()
    )


# --- determinism -----------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_render_frame_is_deterministic_and_independent_of_call_order(domain: str) -> None:
    first = [render_frame(domain, 5, index, SMALL) for index in (0, 1, 2)]
    reverse = [render_frame(domain, 5, index, SMALL) for index in (2, 1, 0)][::-1]
    for a, b in zip(first, reverse):
        assert _same(a, b)
    assert not _same(first[0], first[1])
    assert not _same(first[0], render_frame(domain, 6, 0, SMALL))


def test_stream_frames_are_deterministic_whatever_was_rendered_before() -> None:
    _stream_context.cache_clear()
    fresh = render_stream_frame("drifted", 3, 7, SMALL)
    render_stream_frame("drifted", 3, 40, SMALL)
    render_stream_frame("factory", 3, 7, SMALL)
    assert _same(fresh, render_stream_frame("drifted", 3, 7, SMALL))
    _stream_context.cache_clear()
    assert _same(fresh, render_stream_frame("drifted", 3, 7, SMALL))


def test_frame_metadata_and_array_types() -> None:
    frame = render_frame("night", 2, 9, SMALL)
    assert (frame.domain, frame.seed, frame.index) == ("night", 2, 9)
    assert frame.image.shape == (*SMALL, 3) and frame.image.dtype == np.uint8
    assert frame.boxes.dtype == np.float32 and frame.boxes.shape == (len(frame.class_ids), 4)
    assert frame.class_ids.dtype == np.int64


def test_dataset_frames_hold_1_to_8_valid_boxes() -> None:
    counts = []
    for index in range(20):
        frame = render_frame("factory", 8, index, (128, 128))
        counts.append(len(frame.boxes))
        assert ((frame.boxes[:, :2] >= 0) & (frame.boxes[:, 2:] <= 128)).all()
        assert (frame.boxes[:, 2:] > frame.boxes[:, :2]).all()
        assert set(frame.class_ids.tolist()) <= set(range(len(CLASS_NAMES)))
        sides = np.maximum(frame.boxes[:, 2] - frame.boxes[:, 0], frame.boxes[:, 3] - frame.boxes[:, 1]) / 128
        assert ((sides > 0.04) & (sides < 0.3)).all()
    assert min(counts) >= 1 and max(counts) <= 8 and len(set(counts)) > 2


# --- exact boxes ------------------------------------------------------------------------------------

CAMERAS = [(0.0, 0.0), (0.3, 0.0), (0.2, 12.0), (0.4, -25.0)]


@pytest.mark.parametrize("camera", CAMERAS, ids=lambda c: f"tilt{c[0]}-roll{c[1]}")
@pytest.mark.parametrize("class_id", range(len(CLASS_NAMES)), ids=lambda c: CLASS_NAMES[c])
def test_box_covers_exactly_the_drawn_part(class_id: int, camera: Tuple[float, float]) -> None:
    tilt, roll = camera
    weights = tuple(1.0 if c == class_id else 0.0 for c in range(len(CLASS_NAMES)))
    scene = _clean(class_weights=weights, tilt=(tilt, tilt), rotation_deg=(roll, roll), objects=(1, 1))
    empty = dataclasses.replace(scene, objects=(0, 0))
    for index in range(3):
        with_part = render_frame(scene, 4, index, (160, 200))
        without = render_frame(empty, 4, index, (160, 200))
        assert len(without.boxes) == 0 and with_part.class_ids.tolist() == [class_id]
        changed = np.any(with_part.image != without.image, axis=2)
        ys, xs = np.nonzero(changed)
        drawn = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
        # Pixel bounds are whole numbers and OpenCV fills pixels whose centre lies up to about half a
        # pixel outside the polygon: a tight box is within 1.1 px of them.
        np.testing.assert_allclose(with_part.boxes[0], drawn, atol=1.1)


@pytest.mark.parametrize("domain", sorted(DOMAINS))
def test_stream_boxes_stay_inside_the_image(domain: str) -> None:
    for index in (0, 13, 250):
        frame = render_stream_frame(domain, 1, index, SMALL)
        assert (frame.boxes[:, :2] >= 0).all()
        assert (frame.boxes[:, 2] <= SMALL[1]).all() and (frame.boxes[:, 3] <= SMALL[0]).all()


def test_stream_parts_move_along_the_belt_between_frames() -> None:
    straight = _clean(tilt=(0.0, 0.0), rotation_deg=(0.0, 0.0))
    size = (128, 256)
    speed = straight.belt_speed * min(size) / 256.0
    a, b = render_stream_frame(straight, 9, 30, size), render_stream_frame(straight, 9, 31, size)
    inner_a = [tuple(box) for box in a.boxes.tolist() if box[0] > 0 and box[2] < size[1] - speed]
    assert inner_a, "expected parts fully inside the frame"
    moved = {tuple(np.round(box, 3)) for box in b.boxes.tolist()}
    for x0, y0, x1, y1 in inner_a:
        assert tuple(np.round([x0 + speed, y0, x1 + speed, y1], 3)) in moved


def test_iter_frames_counts_up_from_start() -> None:
    stream = iter_frames("factory", 2, SMALL, start=5)
    frames = [next(stream) for _ in range(3)]
    assert [f.index for f in frames] == [5, 6, 7]
    assert _same(frames[1], render_stream_frame("factory", 2, 6, SMALL))


# --- YOLO labels ------------------------------------------------------------------------------------


def test_yolo_labels_round_trip_to_the_boxes() -> None:
    frame = render_frame("drifted", 3, 1, (120, 200))
    lines = frame.yolo_labels().splitlines()
    assert len(lines) == len(frame.boxes) > 0
    pattern = re.compile(r"^\d+( \d\.\d{6}){4}$")
    parsed: List[List[float]] = []
    for line in lines:
        assert pattern.match(line), line
        cls, cx, cy, w, h = line.split()
        parsed.append([int(cls), float(cx), float(cy), float(w), float(h)])
    values = np.array(parsed)
    assert values[:, 0].tolist() == frame.class_ids.tolist()
    back = np.stack(
        [
            (values[:, 1] - values[:, 3] / 2) * 200,
            (values[:, 2] - values[:, 4] / 2) * 120,
            (values[:, 1] + values[:, 3] / 2) * 200,
            (values[:, 2] + values[:, 4] / 2) * 120,
        ],
        axis=1,
    )
    np.testing.assert_allclose(back, frame.boxes, atol=2e-4 * 200)


def test_empty_frame_has_empty_label_file() -> None:
    frame = render_frame(dataclasses.replace(get_domain("factory"), objects=(0, 0)), 1, 0, SMALL)
    assert frame.yolo_labels() == "" and frame.boxes.shape == (0, 4)


# --- domains ----------------------------------------------------------------------------------------


def _mean_bgr(domain: str) -> np.ndarray:
    return np.mean(
        [render_frame(domain, 11, i, (128, 128)).image.reshape(-1, 3).mean(axis=0) for i in range(6)], axis=0
    )


def _mean_part_side(domain: str) -> float:
    sides = []
    for i in range(8):
        boxes = render_frame(domain, 11, i, (128, 128)).boxes
        sides.extend(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).tolist())
    return float(np.mean(sides))


def _sharpness(domain: DomainParams) -> float:
    grey = [cv2.cvtColor(render_frame(domain, 11, i, (128, 128)).image, cv2.COLOR_BGR2GRAY) for i in range(4)]
    return float(np.mean([cv2.Laplacian(g, cv2.CV_64F).var() for g in grey]))


def test_domains_differ_measurably() -> None:
    factory, drifted, night = _mean_bgr("factory"), _mean_bgr("drifted"), _mean_bgr("night")
    assert (drifted[0] - drifted[2]) - (factory[0] - factory[2]) > 25  # strong blue cast
    assert night.mean() < 0.7 * factory.mean()  # dim
    assert _mean_part_side("drifted") < 0.8 * _mean_part_side("factory")  # smaller parts
    sharp = _clean("factory", blur_sigma=(0.0, 0.0))
    blurred = _clean("factory", blur_sigma=(1.5, 1.5))
    assert _sharpness(blurred) < 0.5 * _sharpness(sharp)


def test_unknown_domain_lists_the_known_ones() -> None:
    with pytest.raises(UnknownDomainError) as info:
        get_domain("moon")
    assert isinstance(info.value, ValueError)
    assert info.value.name == "moon"
    for name in DOMAINS:
        assert name in str(info.value)
    with pytest.raises(UnknownDomainError):
        render_frame("moon", 0, 0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"brightness": (1.2, 1.0)}, "low > high"),
        ({"scale": (0.001, 0.1)}, "scale"),
        ({"belt_texture": "carpet"}, "belt_texture"),
        ({"jpeg_quality": (0, 50)}, "jpeg_quality"),
        ({"objects": (3, 2)}, "objects"),
        ({"class_weights": (1.0, 1.0)}, "class_weights"),
        ({"class_weights": (0.0,) * len(CLASS_NAMES)}, "class_weights"),
        ({"vignette": 1.5}, "vignette"),
        ({"noise_sigma": -1.0}, "noise"),
    ],
)
def test_inconsistent_domain_parameters_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(get_domain("factory"), **change)


@pytest.mark.parametrize(
    "seed, index, size",
    [(-1, 0, SMALL), (0, -1, SMALL), (0, 0, (8, 100)), (0, 0, (100, 9000))],
)
def test_bad_arguments_raise_value_error(seed: int, index: int, size: Tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        render_frame("factory", seed, index, size)
    with pytest.raises(ValueError):
        render_stream_frame("factory", seed, index, size)


# --- files ------------------------------------------------------------------------------------------


def test_write_yolo_dataset_layout_and_data_yaml(tmp_path: Path) -> None:
    calls: List[Tuple[int, int]] = []
    out = tmp_path / "set"
    data_yaml = write_yolo_dataset(
        out, "factory", 3, 10, size=SMALL, val_fraction=0.2, progress=lambda d, t: calls.append((d, t))
    )
    assert data_yaml == out.resolve() / "data.yaml"
    assert calls == [(i, 10) for i in range(1, 11)]
    data = yaml.safe_load(data_yaml.read_text())
    assert data["path"] == str(out.resolve()) and Path(data["path"]).is_absolute()
    assert (data["train"], data["val"], data["nc"]) == ("images/train", "images/val", len(CLASS_NAMES))
    assert data["names"] == dict(enumerate(CLASS_NAMES))
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == [f"{i:06d}.png" for i in range(8)]
    assert sorted(p.name for p in (out / "images" / "val").iterdir()) == ["000008.png", "000009.png"]
    assert sorted(p.name for p in (out / "labels" / "val").iterdir()) == ["000008.txt", "000009.txt"]
    frame = render_frame("factory", 3, 9, SMALL)
    assert (out / "labels" / "val" / "000009.txt").read_text() == frame.yolo_labels()
    assert np.array_equal(cv2.imread(str(out / "images" / "val" / "000009.png")), frame.image)


def test_dataset_without_val_split_points_val_at_train(tmp_path: Path) -> None:
    data_yaml = write_yolo_dataset(tmp_path / "hold", "drifted", 4, 3, size=SMALL, image_format="jpg")
    data = yaml.safe_load(data_yaml.read_text())
    assert data["val"] == data["train"] == "images/train"
    assert len(list((tmp_path / "hold" / "images" / "train").glob("*.jpg"))) == 3
    assert not (tmp_path / "hold" / "images" / "val").exists()


def test_existing_dataset_is_kept_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "set"
    write_yolo_dataset(out, "factory", 1, 4, size=SMALL)
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetExistsError):
        write_yolo_dataset(out, "factory", 2, 2, size=SMALL)
    assert len(list((out / "images" / "train").iterdir())) == 4
    write_yolo_dataset(out, "factory", 2, 2, size=SMALL, overwrite=True)
    assert len(list((out / "images" / "train").iterdir())) == 2
    assert len(list((out / "labels" / "train").iterdir())) == 2
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "kwargs",
    [{"count": 0}, {"val_fraction": 1.0}, {"val_fraction": -0.1}, {"image_format": "bmp"}],
)
def test_dataset_argument_errors(tmp_path: Path, kwargs: dict) -> None:
    arguments = {"count": 2, **kwargs}
    with pytest.raises(ValueError):
        write_yolo_dataset(tmp_path / "x", "factory", 0, size=SMALL, **arguments)
    assert not (tmp_path / "x").exists()


def test_render_video_writes_the_requested_frames(tmp_path: Path) -> None:
    path = render_video(tmp_path / "belt.mp4", "factory", 2, frames=12, fps=10, size=(120, 160))
    capture = cv2.VideoCapture(str(path))
    try:
        assert capture.isOpened()
        read = 0
        while True:
            ok, image = capture.read()
            if not ok:
                break
            assert image.shape == (120, 160, 3)
            read += 1
    finally:
        capture.release()
    assert read == 12


def test_render_video_reports_a_writer_that_does_not_open(tmp_path: Path) -> None:
    with pytest.raises(VideoWriterError) as info:
        render_video(tmp_path / "missing-folder" / "belt.mp4", "factory", 2, frames=2, size=(64, 64))
    assert info.value.codec == "mp4v"
    with pytest.raises(ValueError):
        render_video(tmp_path / "belt.mp4", "factory", 2, frames=2, size=(64, 64), codec="h264x")
