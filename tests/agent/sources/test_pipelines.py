"""GStreamer pipelines as text, the decoder choice and URL redaction (agent/sources/pipelines.py, pure), and every
pipeline parsed by GStreamer's own parser.

The hardware decoders (Jetson's nvv4l2decoder / nvvidconv, NVDEC's nvh264dec / nvh265dec, VA-API's vah264dec /
vah265dec / vapostproc, Jetson's nvarguscamerasrc) do not exist on this machine: gst_parse_check.py registers
pass-through stand-ins under their names (only where the real element is absent) and parses every pipeline, so
the parser checks the syntax, the element names, the properties the agent sets and the links; nothing is
decoded by them: those pipelines have not run. What runs
for real is the CPU pipeline, against a real RTSP server (tests/agent/sources/test_rtsp_camera.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest

from agent.sources.pipelines import (
    APPSINK,
    SINK_CAPS,
    MachineFacts,
    choose_decoder,
    codec_of_encoding,
    csi_pipeline,
    decode_branch,
    decoder_element,
    demux_branch,
    raw_layout,
    redact_url,
    rtsp_pipeline,
    split_credentials,
    still_decoder,
)

# ------------------------------------------------------------------------------------------------- pure


@pytest.mark.parametrize(
    ("codec", "decoder", "expected"),
    [
        (
            "h264",
            "cpu",
            "rtph264depay name=depay ! h264parse ! avdec_h264 name=decoder max-threads=1 output-corrupt=false ! "
            f"videoconvert ! {SINK_CAPS} ! {APPSINK}",
        ),
        (
            "h265",
            "cpu",
            "rtph265depay name=depay ! h265parse ! avdec_h265 name=decoder max-threads=1 output-corrupt=false ! "
            f"videoconvert ! {SINK_CAPS} ! {APPSINK}",
        ),
        (
            "h264",
            "nvv4l2",
            "rtph264depay name=depay ! h264parse ! nvv4l2decoder name=decoder ! nvvidconv ! video/x-raw,format=BGRx ! "
            f"videoconvert ! {SINK_CAPS} ! {APPSINK}",
        ),
        (
            "h265",
            "nvv4l2",
            "rtph265depay name=depay ! h265parse ! nvv4l2decoder name=decoder ! nvvidconv ! video/x-raw,format=BGRx ! "
            f"videoconvert ! {SINK_CAPS} ! {APPSINK}",
        ),
        (
            "h264",
            "nvdec",
            f"rtph264depay name=depay ! h264parse ! nvh264dec name=decoder ! videoconvert ! {SINK_CAPS} ! {APPSINK}",
        ),
        (
            "h265",
            "nvdec",
            f"rtph265depay name=depay ! h265parse ! nvh265dec name=decoder ! videoconvert ! {SINK_CAPS} ! {APPSINK}",
        ),
        (
            "h264",
            "vaapi",
            "rtph264depay name=depay ! h264parse ! vah264dec name=decoder ! vapostproc ! video/x-raw,format=BGRx ! "
            f"videoconvert ! {SINK_CAPS} ! {APPSINK}",
        ),
        (
            "h265",
            "vaapi",
            "rtph265depay name=depay ! h265parse ! vah265dec name=decoder ! vapostproc ! video/x-raw,format=BGRx ! "
            f"videoconvert ! {SINK_CAPS} ! {APPSINK}",
        ),
    ],
)
def test_decode_branch(codec: str, decoder: str, expected: str) -> None:
    assert decode_branch(codec, decoder) == expected


def test_decode_branch_threads_and_bad_input() -> None:
    assert "max-threads=0 " in decode_branch("h264", "cpu", threads=0)
    with pytest.raises(ValueError, match="codec"):
        decode_branch("mjpeg", "cpu")
    with pytest.raises(ValueError, match="decoder"):
        decode_branch("h264", "cuda")
    with pytest.raises(ValueError, match="threads"):
        decode_branch("h264", "cpu", threads=-1)


def test_demux_branch_keeps_parameter_sets_and_decodes_nothing() -> None:
    branch = demux_branch("h265")
    assert branch.startswith("rtph265depay ! h265parse config-interval=-1 ! video/x-h265,stream-format=byte-stream")
    assert "dec" not in branch.replace("depay", "")
    assert "avdec_h264" in still_decoder("h264")


def test_rtsp_pipeline_is_one_string() -> None:
    text = rtsp_pipeline("rtsp://10.0.0.5/stream2", "h264", "nvv4l2", transport="udp", latency_ms=100)
    assert text.startswith(
        'rtspsrc location="rtsp://10.0.0.5/stream2" protocols=udp latency=100 ! rtph264depay name=depay'
    )
    with pytest.raises(ValueError, match="transport"):
        rtsp_pipeline("rtsp://x/", "h264", transport="http")


@pytest.mark.parametrize(
    ("facts", "codec", "decoder", "reason"),
    [
        (MachineFacts(), "h264", "cpu", "auto: no Jetson, no NVIDIA GPU, no VA-API render node"),
        (MachineFacts(jetson=True, elements=frozenset({"nvv4l2decoder"})), "h265", "nvv4l2", "Jetson"),
        # a Jetson without the element (GStreamer plugins not installed): the CPU, and the status says why
        (MachineFacts(jetson=True), "h264", "cpu", "nvv4l2decoder absent"),
        (MachineFacts(nvidia_gpu=True, elements=frozenset({"nvh264dec"})), "h264", "nvdec", "NVIDIA GPU"),
        # NVDEC for H.264 only: an H.265 camera on the same box decodes on the CPU
        (MachineFacts(nvidia_gpu=True, elements=frozenset({"nvh264dec"})), "h265", "cpu", "nvh265dec absent"),
        (MachineFacts(render_node=True, elements=frozenset({"vah264dec", "vah265dec"})), "h265", "vaapi", "VA-API"),
        # Jetson first even where other decoders exist
        (
            MachineFacts(jetson=True, render_node=True, elements=frozenset({"nvv4l2decoder", "vah264dec"})),
            "h264",
            "nvv4l2",
            "Jetson",
        ),
    ],
)
def test_choose_decoder_auto(facts: MachineFacts, codec: str, decoder: str, reason: str) -> None:
    choice = choose_decoder("auto", codec, facts)
    assert choice.decoder == decoder
    assert choice.element == decoder_element(decoder, codec)
    assert reason in choice.reason


def test_a_named_decoder_is_taken_as_asked() -> None:
    choice = choose_decoder("vaapi", "h264", MachineFacts())
    assert (choice.decoder, choice.element, choice.reason) == ("vaapi", "vah264dec", "configured")
    assert choice.describe() == "vaapi (vah264dec: configured)"


@pytest.mark.parametrize(
    ("url", "bare", "user", "password"),
    [
        ("rtsp://10.0.0.5:554/s1", "rtsp://10.0.0.5:554/s1", None, None),
        ("rtsp://op:secret@10.0.0.5/s1", "rtsp://10.0.0.5/s1", "op", "secret"),
        ("rtsp://op:p%40ss%3Aw@cam.local:8554/a/b?x=1", "rtsp://cam.local:8554/a/b?x=1", "op", "p@ss:w"),
        ("rtsp://admin@[fe80::1]:554/s", "rtsp://[fe80::1]:554/s", "admin", None),
    ],
)
def test_split_credentials(url: str, bare: str, user: object, password: object) -> None:
    assert split_credentials(url) == (bare, user, password)
    assert "secret" not in redact_url(url) and "ss" not in redact_url(url).split("//", 1)[1].split("/", 1)[0]


def test_redact_url_drops_the_query() -> None:
    assert redact_url("rtsp://u:p@10.0.0.5/live?token=abc") == "rtsp://10.0.0.5/live"


@pytest.mark.parametrize(("name", "codec"), [("H264", "h264"), ("h265", "h265"), ("MP4V-ES", None), ("", None)])
def test_codec_of_encoding(name: str, codec: object) -> None:
    assert codec_of_encoding(name) == codec


def test_csi_pipeline() -> None:
    pipeline = csi_pipeline(sensor_id=1, width=1280, height=720, fps=60, flip_method=2, output_width=640)
    assert pipeline.startswith("nvarguscamerasrc sensor-id=1 ! ")
    assert "width=(int)1280, height=(int)720, framerate=(fraction)60/1" in pipeline
    assert "nvvidconv flip-method=2 ! video/x-raw, width=(int)640, height=(int)720, format=(string)BGRx" in pipeline
    assert pipeline.endswith(f"format=(string)BGRx ! {APPSINK}")


# --------------------------------------------------------------------------- GStreamer's own parser

SYSTEM_PYTHON = Path("/usr/bin/python3")
CHECK = Path(__file__).with_name("gst_parse_check.py")
REQUIRE = os.environ.get("EVL_REQUIRE_GSTREAMER") == "1"


@pytest.fixture(scope="module")
def parsed() -> Dict[str, Any]:
    """Every pipeline parsed by GStreamer (tests/agent/sources/gst_parse_check.py under Debian's Python)."""
    result = subprocess.run([str(SYSTEM_PYTHON), str(CHECK)], capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0 or not result.stdout.strip():
        message = f"the GStreamer parse check did not run: {result.stderr.strip()[-1500:]}"
        if REQUIRE:
            pytest.fail(message + " (EVL_REQUIRE_GSTREAMER=1: apt python3-gi python3-gst-1.0 gstreamer1.0-*)")
        pytest.skip("SKIPPED LOUDLY: " + message)
    document: Dict[str, Any] = json.loads(result.stdout)
    return document


def _entry(parsed: Dict[str, Any], **match: str) -> Dict[str, Any]:
    found = [r for r in parsed["results"] if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, parsed["results"])
    return found[0]


@pytest.mark.parametrize("codec", ["h264", "h265"])
@pytest.mark.parametrize("decoder", ["cpu", "nvv4l2", "nvdec", "vaapi"])
def test_every_rtsp_pipeline_parses_and_links(parsed: Dict[str, Any], codec: str, decoder: str) -> None:
    entry = _entry(parsed, kind="rtsp", codec=codec, decoder_kind=decoder)
    assert "error" not in entry, entry
    assert entry["decoder"] == decoder_element(decoder, codec)
    assert entry["decoder_linked"] is True
    assert (entry["sink"], entry["sink_max_buffers"], entry["sink_drop"]) == ("appsink", 1, True)
    if decoder == "cpu":  # runs for real here (test_rtsp_camera.py); the others only against stand-ins
        assert decoder_element(decoder, codec) not in parsed["stubbed"]


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_demux_and_still_pipelines_parse(parsed: Dict[str, Any], codec: str) -> None:
    demux = _entry(parsed, kind="demux", codec=codec)
    still = _entry(parsed, kind="still", codec=codec)
    assert "error" not in demux and "error" not in still, (demux, still)
    assert (demux["sink"], demux["sink_drop"]) == ("appsink", False)  # every access unit is kept


def test_csi_pipeline_parses(parsed: Dict[str, Any]) -> None:
    entry = _entry(parsed, kind="csi")
    assert "error" not in entry, entry
    assert entry["sink"] == "appsink"


@pytest.mark.parametrize("fmt", ["I420", "NV12", "BGRx", "BGR"])
@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (642, 360), (641, 361), (854, 480), (2, 2)])
def test_raw_layout_is_gstreamers(fmt: str, width: int, height: int) -> None:
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstVideo", "1.0")
        from gi.repository import Gst, GstVideo
    except (ImportError, ValueError) as exc:
        if REQUIRE:
            pytest.fail(f"GStreamer's Python bindings are required here: {exc}")
        pytest.skip(f"SKIPPED LOUDLY: GStreamer's Python bindings are missing: {exc}")
    Gst.init(None)
    info = GstVideo.VideoInfo()
    info.set_format(GstVideo.VideoFormat.from_string(fmt), width, height)
    size, planes = raw_layout(fmt, width, height)
    assert size == info.size
    assert [(p[0], p[1]) for p in planes] == [(info.offset[i], info.stride[i]) for i in range(info.finfo.n_planes)]


def test_raw_layout_refuses_other_formats() -> None:
    with pytest.raises(ValueError, match="YUY2"):
        raw_layout("YUY2", 640, 480)
