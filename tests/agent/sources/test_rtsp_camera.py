"""RTSP cameras against a real RTSP server (GStreamer's gst-rtsp-server, tests/rtsp/) serving H.264 and H.265 that
x264 / x265 encoded from the synthetic renderer, each frame carrying its index as a barcode (tests/rtsp/clips.py).

What a site meets in its first hour, each a test: every stream variant, joining mid-GOP, a hung camera beside a
live one, a frozen camera, a camera reboot, wrong credentials, a codec and resolution change across a
reconnect, UDP with loss and jitter, and what the status says meanwhile.
"""

from __future__ import annotations

import os
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import cv2
import numpy as np
import pytest
import structlog.testing

from agent.sources import CameraConfig, CameraSource, SourceState, build_source
from agent.sources.frame import Frame
from tests.rtsp.clips import Clip, read_barcode
from tests.rtsp.netns import CameraNetwork, missing_tools
from tests.rtsp.server import RtspServer

from .helpers import StateRecorder, wait_until

REQUIRE_GST = os.environ.get("EVL_REQUIRE_GSTREAMER") == "1"
Servers = Callable[..., RtspServer]


@pytest.fixture(autouse=True)
def _gstreamer() -> None:
    from agent.sources.gst import gst_available

    if not gst_available():
        if REQUIRE_GST:
            pytest.fail("GStreamer's Python bindings are required here (EVL_REQUIRE_GSTREAMER=1)")
        pytest.skip("SKIPPED LOUDLY: GStreamer's Python bindings (PyGObject) are missing")


@pytest.fixture
def cameras() -> Any:
    started: List[CameraSource] = []

    def start(name: str, url: str, *, stall_timeout_s: Optional[float] = None, **source: Any) -> CameraSource:
        data: Dict[str, Any] = {"name": name, "source": {"type": "rtsp", "url": url, **source}}
        if stall_timeout_s is not None:
            data["stall_timeout_s"] = stall_timeout_s
        camera = build_source(CameraConfig.model_validate(data), rng=random.Random(0))
        started.append(camera)
        camera.start()
        return camera

    yield start
    for camera in started:
        camera.stop(timeout=5.0)


def take(camera: CameraSource, count: int, timeout: float = 15.0) -> List[Frame]:
    """Take ``count`` consecutive frames as the model's loop would (each newer than the last)."""
    frames: List[Frame] = []
    last = -1
    deadline = time.monotonic() + timeout
    while len(frames) < count:
        assert time.monotonic() < deadline, f"{len(frames)} of {count} frames in {timeout} s: {camera.status()}"
        frame = camera.wait_frame(last, timeout=0.5)
        if frame is not None:
            frames.append(frame)
            last = frame.index
    return frames


def barcodes(frames: List[Frame]) -> List[Optional[int]]:
    return [read_barcode(frame.image) for frame in frames]


# ------------------------------------------------------------------------------------------- variants


@pytest.mark.parametrize(
    ("clip", "transport"),
    [
        ("h264", "tcp"),
        ("h264_high", "tcp"),
        ("h265", "tcp"),
        ("h264_30fps", "tcp"),
        ("h264_sub", "tcp"),
        ("h265_sub", "tcp"),
        ("h264_sub", "udp"),
        ("h265", "udp"),
    ],
)
def test_every_stream_variant_streams_clean_frames(
    rtsp_clips: Dict[str, Clip], rtsp_server: Servers, cameras: Any, clip: str, transport: str
) -> None:
    spec = rtsp_clips[clip].spec
    server = rtsp_server({"/cam": rtsp_clips[clip]})
    camera = cameras("cam", server.url("/cam"), transport=transport)
    frames = take(camera, 20)
    codes = barcodes(frames)
    assert None not in codes, "a frame reached the model that is not a clean picture"
    assert all(f.image.shape == (spec.height, spec.width, 3) for f in frames)
    status = camera.status()
    assert status.state is SourceState.STREAMING
    assert status.address == f"rtsp://127.0.0.1:{server.port}/cam"
    decode = status.decode
    assert decode is not None and decode.codec == spec.codec and decode.decoder.startswith("cpu (avdec_")
    assert decode.decoded >= 20 and decode.decode_errors == 0 and decode.decode_ms and decode.decode_ms > 0


def test_frames_are_stamped_when_their_data_arrived(
    rtsp_clips: Dict[str, Clip], rtsp_server: Servers, cameras: Any
) -> None:
    # the frame's time is when its data reached the box (before decoding), not when the decoder was done: on
    # loopback that is within a few ms of the moment the server sent it; stamping after decoding (and after
    # FFmpeg held the frame back until the next one began) read 140 ms later
    server = rtsp_server({"/cam": rtsp_clips["h264"]})
    camera = cameras("cam", server.url("/cam"))
    take(camera, 5)
    frames = take(camera, 30)
    ages = []
    for frame in frames:
        index = read_barcode(frame.image)
        assert index is not None
        ages.append(frame.captured_wall - server.due_time("/cam", index, frame.captured_wall))
    assert statistics.median(ages) < 0.04, sorted(ages)


def test_joining_mid_gop_waits_for_the_keyframe(
    rtsp_clips: Dict[str, Clip], rtsp_server: Servers, cameras: Any
) -> None:
    clip = rtsp_clips["h264_gop2"]  # a keyframe every 30 frames
    gop, fps = clip.spec.gop, clip.spec.fps
    # the server's "encoder" has been running so that, when the camera connects, it is half a GOP past a
    # keyframe
    server = rtsp_server({"/cam": clip}, epoch=time.time() - (10 * gop + gop // 2) / fps)
    camera = cameras("cam", server.url("/cam"))
    frames = take(camera, 10)
    codes = barcodes(frames)
    assert None not in codes
    assert codes[0] is not None and codes[0] % gop == 0, f"the first frame ({codes[0]}) is not a keyframe"
    decode = camera.status().decode
    assert decode is not None and decode.waited > 0  # access units before the keyframe were dropped, counted


# ----------------------------------------------------------------------------------------------- faults


def test_a_hung_camera_never_delays_another(rtsp_clips: Dict[str, Clip], rtsp_server: Servers, cameras: Any) -> None:
    hung = rtsp_server({"/cam": rtsp_clips["h264_sub"]})
    hung.freeze()  # accepts TCP connections (the kernel does), never answers
    live = rtsp_server({"/cam": rtsp_clips["h264_sub"]})
    first = cameras("hung", hung.url("/cam"), open_timeout_s=8)
    time.sleep(0.3)  # the hung camera's open is under way
    second = cameras("live", live.url("/cam"))
    assert wait_until(lambda: second.state is SourceState.STREAMING, timeout=6), second.status()
    assert first.state is not SourceState.STREAMING
    assert first.status().reason.startswith("opening rtsp://127.0.0.1:")  # it says what it is doing


def test_a_frozen_camera_stays_stalled_until_real_frames_return(
    rtsp_clips: Dict[str, Clip], rtsp_server: Servers, cameras: Any
) -> None:
    server = rtsp_server({"/cam": rtsp_clips["h264_sub"]})
    recorder = StateRecorder()
    camera = cameras("cam", server.url("/cam"), stall_timeout_s=0.6, read_timeout_s=3.0)
    camera.add_listener(recorder)
    take(camera, 5)
    server.freeze()
    assert wait_until(lambda: camera.state is SourceState.STALLED, timeout=2.5), camera.status()
    frames_when_stalled = camera.status().frames
    # until the read timeout drops the connection, nothing counts as a frame and the state does not flip back
    assert wait_until(lambda: camera.state is SourceState.RECONNECTING, timeout=5.0), camera.status()
    assert camera.status().frames == frames_when_stalled
    after_stall = recorder.states[recorder.states.index(SourceState.STALLED) :]
    assert SourceState.STREAMING not in after_stall, after_stall
    assert "no frame for 3.0 s" in camera.status().reason or "open failed" in camera.status().reason
    server.thaw()
    assert wait_until(lambda: camera.state is SourceState.STREAMING, timeout=10), camera.status()
    assert None not in barcodes(take(camera, 5))


def test_a_camera_reboot(rtsp_clips: Dict[str, Clip], rtsp_server: Servers, cameras: Any) -> None:
    # the scenario: the camera's server gone for 10 s, then back. The reconnect waits stay short (they
    # grew to 8 s within such an outage) and every try is counted and explained while it lasts.
    server = rtsp_server({"/cam": rtsp_clips["h264_sub"]})
    camera = cameras("cam", server.url("/cam"))
    take(camera, 5)
    with structlog.testing.capture_logs() as logs:
        server.stop()
        assert wait_until(lambda: "connection refused" in camera.status().reason, timeout=5), camera.status()
        time.sleep(10.0)
        status = camera.status()
        assert status.state is SourceState.RECONNECTING and status.reconnect_attempts >= 5, status
        server.start()
        assert wait_until(lambda: camera.state is SourceState.STREAMING, timeout=10), camera.status()
    waits = [event["delay_s"] for event in logs if event.get("event") == "camera_reconnect_wait"]
    assert waits and max(waits) <= 2.0, waits
    status = camera.status()
    assert status.reconnects == 1 and status.reason == "frames arriving"
    assert None not in barcodes(take(camera, 5))


def test_codec_and_resolution_change_across_a_reconnect(
    rtsp_clips: Dict[str, Clip], rtsp_server: Servers, cameras: Any
) -> None:
    server = rtsp_server({"/cam": rtsp_clips["h264"]})
    camera = cameras("cam", server.url("/cam"))
    assert take(camera, 3)[-1].image.shape == (1080, 1920, 3)
    server.stop()
    server.serve({"/cam": rtsp_clips["h265_sub"]})  # the camera's firmware now sends its H.265 substream
    server.start()
    assert wait_until(lambda: camera.status().reconnects >= 1 and camera.state is SourceState.STREAMING, 10)
    frames = take(camera, 5)
    assert all(f.image.shape == (360, 640, 3) for f in frames) and None not in barcodes(frames)
    decode = camera.status().decode
    assert decode is not None and decode.codec == "h265"


def test_wrong_credentials_say_so_once_and_never_show_the_password(
    rtsp_clips: Dict[str, Clip], rtsp_server: Servers, cameras: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    server = rtsp_server({"/cam": rtsp_clips["h264_sub"]}, user="operator", password="right-one")
    wrong = server.url("/cam", password="Wr0ng-Secret")
    camera = cameras("door", wrong)
    assert wait_until(lambda: "401" in camera.status().reason, timeout=5), camera.status()
    time.sleep(3.0)
    status = camera.status()
    assert status.state is SourceState.RECONNECTING
    assert "refused the configured user / password" in status.reason
    assert status.reconnect_attempts == 0  # no retry storm: the next try is a minute away
    assert "Wr0ng-Secret" not in repr(status) and "operator" not in status.address
    out, err = capfd.readouterr()
    assert "Wr0ng-Secret" not in out + err


def test_the_right_credentials_stream(rtsp_clips: Dict[str, Clip], rtsp_server: Servers, cameras: Any) -> None:
    server = rtsp_server({"/cam": rtsp_clips["h264_sub"]}, user="op@site", password="p:ss/w@rd")
    camera = cameras("door", server.url("/cam"))  # percent-encoded in the URL, decoded for rtspsrc
    assert None not in barcodes(take(camera, 3))


# ------------------------------------------------------------------------------------ UDP, loss, jitter


def _thumbnail(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (160, 90), interpolation=cv2.INTER_AREA).astype(np.int16)


def _reference_thumbnails(clip: Clip) -> List[np.ndarray]:
    """Every frame of the clip decoded from the file (no network), as thumbnails by loop index."""
    from agent.sources.gst import open_pipeline

    parse = "h264parse" if clip.spec.codec == "h264" else "h265parse"
    reader = open_pipeline(
        f"filesrc location={clip.path} ! {parse} ! avdec_{clip.spec.codec} ! videoconvert ! "
        "video/x-raw,format=BGR ! appsink name=sink sync=false max-buffers=4 drop=false",
        what="reference",
    )
    reader.live = False
    thumbs = []
    try:
        while True:
            image = reader.read()
            if image is None:
                break
            thumbs.append(_thumbnail(image))
    finally:
        reader.close()
    assert len(thumbs) == clip.frames
    return thumbs


def _damaged(frames: List[Frame], reference: List[np.ndarray]) -> List[int]:
    bad = []
    for frame in frames:
        index = read_barcode(frame.image)
        if index is None or int(np.abs(_thumbnail(frame.image) - reference[index]).max()) > 24:
            bad.append(frame.index)
    return bad


@pytest.mark.skipif(missing_tools() is not None, reason=f"SKIPPED LOUDLY: {missing_tools()}")
def test_udp_with_loss_and_jitter_hands_only_clean_frames_to_the_model(
    rtsp_clips: Dict[str, Clip], tmp_path: Path, cameras: Any
) -> None:
    clip = rtsp_clips["h264_sub"]
    reference = _reference_thumbnails(clip)
    with CameraNetwork(loss_percent=2.0, rate_mbit=20, queue_ms=30) as net:
        server = RtspServer(tmp_path / "netns", {"/cam": clip}, address=net.camera_ip, netns=net.name)
        server.start()
        try:
            udp = cameras("udp", server.url("/cam"), transport="udp")
            tcp = cameras("tcp", server.url("/cam"), transport="tcp")
            udp_frames = take(udp, 60, timeout=30)
            tcp_frames = take(tcp, 60, timeout=30)
            udp_decode, tcp_decode = udp.status().decode, tcp.status().decode
        finally:
            server.close()
    assert _damaged(udp_frames, reference) == [], "a smeared or grey frame reached the model over UDP"
    assert _damaged(tcp_frames, reference) == []
    assert udp_decode is not None and tcp_decode is not None
    # the loss cost UDP whole frames (dropped by the decoder, counted); TCP retransmits and loses none
    assert udp_decode.decode_errors > 0, udp_decode
    assert tcp_decode.decode_errors == 0, tcp_decode


# ------------------------------------------------------------------------------------ main stream, stills


def test_a_main_stream_gives_full_resolution_stills_of_the_detect_frames_moment(
    rtsp_clips: Dict[str, Clip], rtsp_server: Servers, cameras: Any
) -> None:
    # one camera, two streams of the same scene: the substream for the model, the main stream for stills
    server = rtsp_server({"/sub": rtsp_clips["h264_sub"], "/main": rtsp_clips["h264"]})
    camera = cameras("press", server.url("/sub"), main_url=server.url("/main"))
    take(camera, 5)

    def buffered() -> int:
        main = camera.status().main
        return 0 if main is None else main.units

    assert wait_until(lambda: buffered() > 15, timeout=10)
    offsets = []
    for frame in take(camera, 6):
        still_of = camera.still_of(frame)
        assert still_of is not None
        still = still_of()
        assert still is not None and still.image.shape == (1080, 1920, 3)
        detect_index, still_index = read_barcode(frame.image), read_barcode(still.image)
        assert detect_index is not None and still_index is not None
        offsets.append(abs(detect_index - still_index))
    assert max(offsets) <= 1, offsets  # the same moment, give or take a frame
    main = camera.status().main
    assert main is not None and main.state is SourceState.STREAMING and main.codec == "h264"
    assert main.stills == 6 and main.still_failures == 0 and main.width == 1920
    # received, never decoded continuously: only the stills' runs were
    decode = camera.status().decode
    assert decode is not None and decode.codec == "h264" and camera.status().width == 640


def test_a_main_stream_that_is_down_leaves_the_detect_frame(
    rtsp_clips: Dict[str, Clip], rtsp_server: Servers, cameras: Any
) -> None:
    server = rtsp_server({"/sub": rtsp_clips["h264_sub"]})
    camera = cameras("press", server.url("/sub"), main_url=server.url("/missing"))
    frame = take(camera, 3)[-1]
    assert wait_until(lambda: "404" in camera.status().main.reason, timeout=5), camera.status().main
    still_of = camera.still_of(frame)
    assert still_of is not None and still_of() is None  # the caller (output writer) uses the detect frame
    assert camera.status().state is SourceState.STREAMING  # the model's stream is not affected


def test_a_configured_decoder_the_box_lacks_fails_the_camera_clearly(
    rtsp_clips: Dict[str, Clip], rtsp_server: Servers, cameras: Any
) -> None:
    from agent.sources.gst import gst_modules

    gst = gst_modules()[0]
    if gst.ElementFactory.find("vah264dec") is not None:
        pytest.skip("this machine has VA-API's decoder: the failure needs a machine without it")
    server = rtsp_server({"/cam": rtsp_clips["h264_sub"]})
    camera = cameras("cam", server.url("/cam"), decoder="vaapi")
    assert wait_until(lambda: camera.state is SourceState.FAILED, timeout=10), camera.status()
    reason = camera.status().reason
    assert "decoder 'vaapi' needs GStreamer element 'vah264dec'" in reason, reason  # never a silent fallback
