"""Is a sample's body a whole JPEG, and how big is it? Pure: bytes in, ``(width, height)`` out, or
:class:`JpegError` on anything else. The header is read, the pixels are not decoded.

A JPEG is a run of marker segments: ``FF D8`` (start of image), then segments ``FF xx`` with a two-byte length
(APPn, DQT, DHT, the frame header SOFn holding the size, ...), then the scan (``FF DA``) whose entropy-coded data
ends at ``FF D9`` (end of image). Inside the data a ``FF`` byte is always followed by ``00`` (stuffing) or a
restart marker ``D0``-``D7``, so the first other marker after the scan is where the image ends. Bytes after the
end of image are ignored, as decoders ignore them.

Refused: no start of image, a segment running past the end (random bytes after the first three make one), no
frame header before the scan, a frame header with no size, and no end of image (a truncated upload).
"""

from __future__ import annotations

from typing import Tuple

__all__ = ["JpegError", "jpeg_size"]

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
# frame headers (SOF0-SOF15 without DHT C4, JPG C8 and DAC CC): they carry the image's size
_FRAME_HEADERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and the restart markers: no length follows


class JpegError(ValueError):
    """The bytes are not a whole JPEG."""


def jpeg_size(data: bytes) -> Tuple[int, int]:
    """``(width, height)`` of the JPEG in ``data`` (see the module docstring for what is refused)."""
    if data[:2] != b"\xff\xd8":
        raise JpegError("no start-of-image marker")
    size = None
    at = 2
    while True:
        if at + 2 > len(data) or data[at] != 0xFF:
            raise JpegError(f"no marker at byte {at}")
        while at + 1 < len(data) and data[at + 1] == 0xFF:  # fill bytes before a marker
            at += 1
        if at + 2 > len(data):
            raise JpegError("ends inside a marker")
        marker = data[at + 1]
        if marker in _STANDALONE:
            at += 2
            continue
        if marker in (_SOI, _EOI):
            raise JpegError(f"marker FF{marker:02X} before the scan")
        if at + 4 > len(data):
            raise JpegError("ends inside a segment's length")
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        end = at + 2 + length
        if length < 2 or end > len(data):
            raise JpegError(f"segment FF{marker:02X} at byte {at} runs past the end")
        if marker in _FRAME_HEADERS:
            if length < 8:
                raise JpegError("frame header too short")
            height = int.from_bytes(data[at + 5 : at + 7], "big")
            width = int.from_bytes(data[at + 7 : at + 9], "big")
            if not (width and height):
                raise JpegError("frame header without a size")
            size = (width, height)
        at = end
        if marker == _SOS:
            break
    if size is None:
        raise JpegError("no frame header before the scan")
    while True:  # the scan's entropy-coded data, up to the end of image
        at = data.find(b"\xff", at)
        if at < 0 or at + 1 >= len(data):
            raise JpegError("no end-of-image marker: truncated")
        following = data[at + 1]
        if following == _EOI:
            return size
        if following in (0x00, 0xFF) or following in _STANDALONE:  # stuffing, fill, restart markers
            at += 1
            continue
        if following == _SOS or following in (0xC4, 0xDB, 0xDD) or 0xE0 <= following <= 0xEF or following == 0xFE:
            # progressive JPEGs have more tables and scans after the first: walk their segments
            if at + 4 > len(data):
                raise JpegError("no end-of-image marker: truncated")
            length = int.from_bytes(data[at + 2 : at + 4], "big")
            if length < 2 or at + 2 + length > len(data):
                raise JpegError("no end-of-image marker: truncated")
            at += 2 + length
            continue
        raise JpegError(f"marker FF{following:02X} inside the scan")
