"""Parse every pipeline the agent builds with GStreamer's own parser, the hardware elements stubbed.

Run by Debian's own ``python3`` (python3-gi and python3-gst-1.0, whose overrides let Python define elements;
the project's virtualenvs have PyGObject without them), from tests/agent/sources/test_pipelines.py::

    /usr/bin/python3 tests/agent/sources/gst_parse_check.py  ->  one JSON document on stdout

The stand-ins are registered under the hardware elements' names only where the real element is absent: they
pass buffers through and decode nothing. The parser checks the syntax, that every element exists, the
properties the agent sets and the links between elements.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstBase", "1.0")
from gi.repository import GObject, Gst, GstBase  # noqa: E402

# the module alone, by its path: it needs the standard library only (the package's __init__ needs the agent's
# dependencies, which Debian's Python does not have)
_PATH = Path(__file__).resolve().parents[3] / "agent" / "sources" / "pipelines.py"
_SPEC = importlib.util.spec_from_file_location("agent_sources_pipelines", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
pipelines = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = pipelines  # dataclasses look their module up while the class is built
_SPEC.loader.exec_module(pipelines)

FILTERS = ("nvv4l2decoder", "nvvidconv", "nvh264dec", "nvh265dec", "vah264dec", "vah265dec", "vapostproc")
SOURCES = ("nvarguscamerasrc",)
PROPERTIES = {"nvvidconv": ("flip-method", 0, 7), "nvarguscamerasrc": ("sensor-id", 0, 15)}


def register_stubs() -> List[str]:
    any_caps = Gst.Caps.new_any()
    stubbed = []
    for name in (*FILTERS, *SOURCES):
        if Gst.ElementFactory.find(name) is not None:
            continue  # the real element: parse against it
        source = name in SOURCES
        templates = [Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, any_caps)]
        if not source:
            templates.append(Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, any_caps))
        attributes: Dict[str, Any] = {
            "__gstmetadata__": (f"{name} (stub)", "Filter", "a test stand-in; decodes nothing", "edge-vision-loop"),
            "__gsttemplates__": tuple(templates),
        }
        if not source:
            # a decoder or converter turns any caps into any other (identity is BaseTransform's default)
            attributes["do_transform_caps"] = lambda self, _direction, _caps, caps_filter: (
                caps_filter if caps_filter is not None else any_caps
            )
        if name in PROPERTIES:
            prop, low, high = PROPERTIES[name]
            attributes["__gproperties__"] = {prop: (int, prop, prop, low, high, low, GObject.ParamFlags.READWRITE)}
            attributes["do_get_property"] = lambda self, _prop: getattr(self, "_value", 0)
            attributes["do_set_property"] = lambda self, _prop, value: setattr(self, "_value", value)
        cls = type(
            f"Stub_{name.replace('-', '_')}", (GstBase.BaseSrc if source else GstBase.BaseTransform,), attributes
        )
        GObject.type_register(cls)
        if not Gst.Element.register(None, name, Gst.Rank.NONE, cls):
            raise SystemExit(f"could not register a stand-in for {name}")
        stubbed.append(name)
    return stubbed


def check(description: str, decoder_factory: str = "") -> Dict[str, Any]:
    result: Dict[str, Any] = {"pipeline": description}
    try:
        pipeline = Gst.parse_launch(description)
    except GObject.GError as exc:
        result["error"] = exc.message
        return result
    sink = pipeline.get_by_name("sink")
    result["sink"] = sink.get_factory().get_name() if sink is not None else None
    if sink is not None and sink.get_factory().get_name() == "appsink":
        result["sink_max_buffers"] = sink.get_property("max-buffers")
        result["sink_drop"] = sink.get_property("drop")
    if decoder_factory:
        decoder = pipeline.get_by_name("decoder")
        result["decoder"] = decoder.get_factory().get_name() if decoder is not None else None
        if decoder is not None:
            result["decoder_linked"] = decoder.get_static_pad("src").get_peer() is not None
    return result


def main() -> int:
    Gst.init(None)
    stubbed = register_stubs()
    results = []
    for codec in pipelines.CODECS:
        for decoder in pipelines.DECODERS:
            text = pipelines.rtsp_pipeline("rtsp://127.0.0.1:8554/cam", codec, decoder)
            entry = check(text, pipelines.decoder_element(decoder, codec))
            entry.update(kind="rtsp", codec=codec, decoder_kind=decoder)
            results.append(entry)
        demux = check(f"rtspsrc location=rtsp://127.0.0.1:8554/main ! {pipelines.demux_branch(codec)}")
        demux.update(kind="demux", codec=codec)
        results.append(demux)
        still = check(pipelines.still_decoder(codec))
        still.update(kind="still", codec=codec)
        results.append(still)
    csi = check(pipelines.csi_pipeline(sensor_id=1, flip_method=2))
    csi.update(kind="csi")
    results.append(csi)
    print(json.dumps({"gstreamer": Gst.version_string(), "stubbed": stubbed, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
