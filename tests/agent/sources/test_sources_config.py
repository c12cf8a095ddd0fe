"""Camera configuration models, the CSI pipeline, and the OpenCV build check."""

from __future__ import annotations

from typing import Optional

import pytest
from pydantic import BaseModel, ValidationError

from agent.sources import (
    CameraConfig,
    CsiSourceConfig,
    FileSourceConfig,
    RtspSourceConfig,
    SyntheticSourceConfig,
    UsbSourceConfig,
    check_unique_names,
    default_stall_timeout,
)


@pytest.mark.parametrize(
    ("source", "model"),
    [
        ({"type": "rtsp", "url": "rtsp://10.0.0.2/stream"}, RtspSourceConfig),
        ({"type": "usb", "device": "/dev/video0", "fourcc": "MJPG"}, UsbSourceConfig),
        ({"type": "usb", "device": 1}, UsbSourceConfig),
        ({"type": "csi", "flip_method": 2}, CsiSourceConfig),
        ({"type": "file", "path": "/data/a.mp4"}, FileSourceConfig),
        ({"type": "synthetic", "domain": "night"}, SyntheticSourceConfig),
    ],
)
def test_source_type_picks_the_model(source: dict, model: type) -> None:
    assert isinstance(CameraConfig.model_validate({"name": "c1", "source": source}).source, model)


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"name": "c1", "source": {"type": "ftp", "url": "x"}}, "source"),
        ({"name": "c1", "source": {"type": "rtsp", "url": "http://x"}}, "source.rtsp.url"),
        ({"name": "c1", "source": {"type": "rtsp", "url": "rtsp://x", "latency": 1}}, "source.rtsp.latency"),
        ({"name": "c1", "source": {"type": "usb", "device": "video0"}}, "source.usb.device"),
        ({"name": "c1", "source": {"type": "usb", "device": 0, "fourcc": "MJPEG"}}, "source.usb.fourcc"),
        ({"name": "c1", "source": {"type": "csi", "flip_method": 9}}, "source.csi.flip_method"),
        ({"name": "c1", "source": {"type": "gstreamer", "pipeline": "videotestsrc ! fakesink"}}, "appsink"),
        ({"name": "bad/name", "source": {"type": "synthetic"}}, "name"),
        ({"name": "c1", "source": {"type": "synthetic"}, "fps_limit": 0}, "fps_limit"),
        ({"name": "c1", "source": {"type": "synthetic"}, "reconnect": {"jitter": 1}}, "reconnect.jitter"),
        (
            {"name": "c1", "source": {"type": "synthetic"}, "rules": {"alerts": [{"nam": "x"}]}},
            "rules.alerts.0",
        ),
    ],
)
def test_bad_camera_config_names_the_key(data: dict, where: str) -> None:
    with pytest.raises(ValidationError, match=where.replace(".", r"\.")):
        CameraConfig.model_validate(data)


def test_every_field_of_every_model_is_described() -> None:
    import agent.rules_config
    import agent.sources.config

    models = [
        obj
        for module in (agent.sources.config, agent.rules_config)
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.model_fields
    ]
    assert len(models) >= 20
    for model in models:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_duplicate_camera_names() -> None:
    cams = [CameraConfig.model_validate({"name": n, "source": {"type": "synthetic"}}) for n in ("a", "b", "a")]
    with pytest.raises(ValueError, match=r"\['a'\]"):
        check_unique_names(cams)


@pytest.mark.parametrize(("fps", "expected"), [(None, 2.0), (30.0, 2.0), (2.0, 5.0), (0.5, 20.0)])
def test_default_stall_timeout(fps: Optional[float], expected: float) -> None:
    assert default_stall_timeout(fps) == pytest.approx(expected)
