"""trainer/ingest/jpeg.py: what the ingest takes as a sample's image (issue 28, item 7: a body passed as JPEG
when it merely started with the three header bytes, and boxes were later drawn against dimensions nobody
checked). Table-driven on real OpenCV encodings, then through the ingest's decode."""

from __future__ import annotations

import os
from typing import Callable, Optional

import cv2
import numpy as np
import pytest

from agent.protocol import ProtocolLimits
from tests.trainer import helpers as h
from trainer.ingest.decode import decode
from trainer.ingest.jpeg import JpegError, jpeg_size
from trainer.store import DropReason, SampleIn
from trainer.store.records import DropIn


def _encode(width: int, height: int, *flags: int) -> bytes:
    image = np.random.default_rng(7).integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image, list(flags))
    assert ok
    return bytes(data.tobytes())


BASELINE = _encode(320, 240)
SCAN_HEADER = b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00"


@pytest.mark.parametrize(
    ("name", "data", "size"),
    [
        ("baseline", BASELINE, (320, 240)),
        ("progressive", _encode(640, 360, cv2.IMWRITE_JPEG_PROGRESSIVE, 1), (640, 360)),
        ("restart markers", _encode(1920, 1080, cv2.IMWRITE_JPEG_RST_INTERVAL, 4), (1920, 1080)),
        ("bytes after the end of image", BASELINE + b"EVLTEST-trailer", (320, 240)),
    ],
)
def test_whole_jpegs_give_their_size(name: str, data: bytes, size: tuple) -> None:
    assert jpeg_size(data) == size


@pytest.mark.parametrize(
    ("name", "make", "why"),
    [
        ("empty", lambda: b"", "start-of-image"),
        ("the three magic bytes and random bytes", lambda: b"\xff\xd8\xff" + os.urandom(5000), None),
        ("truncated in the scan", lambda: BASELINE[: len(BASELINE) // 2], "truncated"),
        ("truncated in the headers", lambda: BASELINE[:100], None),
        (
            "no frame header",
            lambda: b"\xff\xd8\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00\x01\x02\xff\xd9",
            "frame header",
        ),
        ("a PNG", lambda: b"\x89PNG\r\n\x1a\n" + bytes(100), "start-of-image"),
    ],
)
def test_anything_else_is_refused(name: str, make: Callable[[], bytes], why: Optional[str]) -> None:
    with pytest.raises(JpegError, match=why):
        jpeg_size(make())


def _decode(jpeg: bytes, width: int = 320, height: int = 240) -> object:
    topic, payload, _header = h.sample(jpeg=jpeg, width=width, height=height)
    return decode(topic, payload, "edge", ProtocolLimits(), 0.0, "w1")


def test_the_ingest_stores_a_whole_jpeg_of_the_size_its_metadata_says() -> None:
    assert isinstance(_decode(BASELINE), SampleIn)


@pytest.mark.parametrize(
    ("name", "jpeg", "width", "height", "detail"),
    [
        ("truncated", BASELINE[: len(BASELINE) - 200], 320, 240, "not a whole JPEG"),
        ("random bytes after the magic", b"\xff\xd8\xff" + bytes(range(256)) * 8, 320, 240, "not a whole JPEG"),
        ("another size than its metadata", BASELINE, 640, 480, "is 320x240, its metadata says 640x480"),
    ],
)
def test_the_ingest_drops_what_is_not(name: str, jpeg: bytes, width: int, height: int, detail: str) -> None:
    record = _decode(jpeg, width, height)
    assert isinstance(record, DropIn) and record.reason is DropReason.INVALID and detail in record.detail
