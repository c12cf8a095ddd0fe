"""Camera clips for the RTSP server: the synthetic renderer's frames, encoded once by ffmpeg (x264 / x265) and
cached, each frame carrying its own index as a barcode so a reader can say which frame it got and when it was
sent.

    clip = ensure_clip(ClipSpec(codec="h264", width=1920, height=1080, fps=15, gop_s=1.0))
    clip.path        # an Annex B elementary stream (.h264 / .h265): what the server pushes, access unit by unit
    clip.frames      # frames in one loop; the server plays the loop forever
    read_barcode(image) -> index within the loop, or None

The barcode (bottom-left corner): ``BARCODE_BITS`` blocks, white for 1 and black for 0, framed by a white guard
block on the left and a black one on the right; blocks are ``width // 80`` pixels (24 px at 1080p, 8 px at 360p),
big enough to survive the encoder at camera bit rates. The server pushes loop frame ``i`` of cycle ``c`` at
``epoch + (c * frames + i) / fps`` (tests/rtsp/gst_rtsp_server.py), so the barcode plus the server's epoch give
the moment the frame left the "camera": the capture time a real camera would stamp.

Clips are cached under ``$EVL_CACHE_DIR`` (default ``~/.cache/edge-vision-loop``)``/rtsp-clips``, keyed by the
spec, the renderer's source and ffmpeg's version, so a fresh clone on the same machine reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[2]
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
BARCODE_BITS = 16
CLIP_FORMAT = 2  # bumped when the encoding recipe or the barcode changes


def cache_dir() -> Path:
    root = Path(os.environ.get("EVL_CACHE_DIR") or Path.home() / ".cache" / "edge-vision-loop")
    return root / "rtsp-clips"


@dataclass(frozen=True)
class ClipSpec:
    """What to encode. ``profile``: H.264 ``main`` or ``high``, H.265 ``main``. ``bitrate_kbps`` 0: by size
    (about 4 Mbit/s at 1080p, as IP cameras send, scaled by pixel count)."""

    codec: str = "h264"
    width: int = 1920
    height: int = 1080
    fps: int = 15
    gop_s: float = 1.0
    seconds: float = 10.0
    profile: str = "main"
    bframes: int = 0
    bitrate_kbps: int = 0
    domain: str = "factory"
    seed: int = 7

    def __post_init__(self) -> None:
        if self.codec not in ("h264", "h265"):
            raise ValueError(f"codec must be h264 or h265, not {self.codec!r}")
        if self.width % 2 or self.height % 2:
            raise ValueError("width and height must be even (4:2:0)")

    @property
    def frames(self) -> int:
        return int(round(self.seconds * self.fps))

    @property
    def gop(self) -> int:
        return max(1, int(round(self.gop_s * self.fps)))

    @property
    def kbps(self) -> int:
        return self.bitrate_kbps or max(300, int(4000 * self.width * self.height / (1920 * 1080)))

    @property
    def suffix(self) -> str:
        return ".h264" if self.codec == "h264" else ".h265"


@dataclass(frozen=True)
class Clip:
    spec: ClipSpec
    path: Path

    @property
    def frames(self) -> int:
        return self.spec.frames

    @property
    def keyframes(self) -> int:
        return (self.spec.frames + self.spec.gop - 1) // self.spec.gop


# ------------------------------------------------------------------------------------------------ barcode


def _block(width: int) -> int:
    return max(4, width // 80)


def draw_barcode(image: np.ndarray, index: int) -> None:
    """Burn ``index`` (0 .. 2**BARCODE_BITS - 1) into the bottom-left corner of a BGR image, in place."""
    if not 0 <= index < 2**BARCODE_BITS:
        raise ValueError(f"index {index} does not fit {BARCODE_BITS} bits")
    height, width = image.shape[:2]
    block = _block(width)
    top = height - 2 * block
    cells = [1] + [(index >> bit) & 1 for bit in range(BARCODE_BITS)] + [0]
    image[top - block // 2 : height, 0 : (len(cells) + 1) * block] = 128  # a grey margin around the code
    for column, value in enumerate(cells):
        x = block // 2 + column * block
        image[top : top + block, x : x + block] = 255 if value else 0


def read_barcode(image: np.ndarray) -> Optional[int]:
    """The index :func:`draw_barcode` burnt into a decoded frame, or ``None`` when the guards do not read (a
    frame that is not one of ours, or one too damaged to trust)."""
    height, width = image.shape[:2]
    block = _block(width)
    top = height - 2 * block
    inner = max(1, block // 4)  # the middle of each block: compression smears the edges
    bits = []
    for column in range(BARCODE_BITS + 2):
        x = block // 2 + column * block
        cell = image[top + inner : top + block - inner, x + inner : x + block - inner]
        mean = float(np.asarray(cell, dtype=np.float32).mean())
        if 64 < mean < 192:
            return None
        bits.append(1 if mean >= 128 else 0)
    if bits[0] != 1 or bits[-1] != 0:
        return None
    return sum(bit << i for i, bit in enumerate(bits[1:-1]))


# ----------------------------------------------------------------------------------------------- encoding


def _renderer_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted((REPO / "agent" / "synthetic").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _ffmpeg_version() -> str:
    result = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True, check=True, timeout=30)
    return result.stdout.splitlines()[0]


def clip_key(spec: ClipSpec) -> str:
    material: Dict[str, Any] = {
        "spec": asdict(spec),
        "format": CLIP_FORMAT,
        "renderer": _renderer_digest(),
        "ffmpeg": _ffmpeg_version(),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:20]


def encoder_args(spec: ClipSpec) -> list:
    """ffmpeg's output options for ``spec``: a constant GOP with a closed IDR at every keyframe (a reader that
    joins mid-GOP must wait for the next one), no scene cuts, parameter sets repeated before every IDR and an
    access unit delimiter per frame, at a camera's bit rate."""
    rate = [
        "-b:v",
        f"{spec.kbps}k",
        "-maxrate",
        f"{spec.kbps}k",
        "-bufsize",
        f"{2 * spec.kbps}k",
    ]
    if spec.codec == "h264":
        return [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-profile:v",
            spec.profile,
            "-bf",
            str(spec.bframes),
            "-x264-params",
            f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0:aud=1:repeat-headers=1",
            *rate,
            "-pix_fmt",
            "yuv420p",
            "-f",
            "h264",
        ]
    return [
        "-c:v",
        "libx265",
        "-preset",
        "veryfast",
        "-profile:v",
        spec.profile,
        "-x265-params",
        f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0:open-gop=0:bframes={spec.bframes}:"
        "repeat-headers=1:aud=1:log-level=error",
        *rate,
        "-pix_fmt",
        "yuv420p",
        "-f",
        "hevc",
    ]


def _frames(spec: ClipSpec) -> Iterator[np.ndarray]:
    from agent.synthetic.render import render_stream_frames

    for index, frame in enumerate(
        render_stream_frames(spec.domain, spec.seed, range(spec.frames), size=(spec.height, spec.width))
    ):
        image = np.ascontiguousarray(np.asarray(frame.image)[:, :, :3])
        draw_barcode(image, index)
        yield image


def ensure_clip(spec: ClipSpec) -> Clip:
    """The cached clip for ``spec``, encoded first if needed (a few seconds at 1080p)."""
    directory = cache_dir()
    path = directory / f"{spec.codec}-{spec.width}x{spec.height}-{spec.fps}fps-{clip_key(spec)}{spec.suffix}"
    if path.is_file() and path.stat().st_size > 0:
        return Clip(spec, path)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=spec.suffix, delete=False) as tmp:
        partial = Path(tmp.name)
    command = [
        FFMPEG,
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "bgr24",
        "-s",
        f"{spec.width}x{spec.height}",
        "-r",
        str(spec.fps),
        "-i",
        "-",
        *encoder_args(spec),
        str(partial),
    ]
    try:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdin is not None and process.stderr is not None
        try:
            for image in _frames(spec):
                process.stdin.write(image.tobytes())
        finally:
            process.stdin.close()
        errors = process.stderr.read().decode(errors="replace")
        if process.wait(timeout=300) != 0:
            raise RuntimeError(f"ffmpeg failed to encode {spec}: {errors.strip()[-2000:]}")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return Clip(spec, path)


# The streams the tests and benchmarks serve (6-second loops for the tests; the benchmarks take 10 s).
TEST_CLIPS = {
    "h264": ClipSpec("h264", 1920, 1080, 15, gop_s=1.0, seconds=6.0),
    "h264_high": ClipSpec("h264", 1920, 1080, 15, gop_s=1.0, seconds=6.0, profile="high"),
    "h265": ClipSpec("h265", 1920, 1080, 15, gop_s=1.0, seconds=6.0),
    "h264_30fps": ClipSpec("h264", 1920, 1080, 30, gop_s=1.0, seconds=6.0),
    "h264_gop2": ClipSpec("h264", 1920, 1080, 15, gop_s=2.0, seconds=6.0),
    "h264_sub": ClipSpec("h264", 640, 360, 15, gop_s=1.0, seconds=6.0),
    "h265_sub": ClipSpec("h265", 640, 360, 15, gop_s=1.0, seconds=6.0),
}
