"""The box page's declared documents (agent/box_page/documents.py): real status documents and pages validate
against them, their sections follow the snapshots they are built from, and a page document that does not is
answered with a 500 while the daemon goes on."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Set, Type

import pytest
from pydantic import BaseModel, ValidationError

from agent.app.live import LiveState
from agent.app.pipeline import OutputCounters
from agent.app.pipeline.inference import PipelineCounters, RulesTiming
from agent.app.pipeline.recent import RecentOutputs
from agent.app.report import unassembled_document
from agent.app.status import assess, read_status
from agent.box_page import documents
from agent.box_page.config import ConsoleConfig
from agent.box_page.documents import InstallerStatus, ModelError, ModelSection, PageState, StatusDocument
from agent.box_page.server import BoxPageServer
from agent.box_page.views import page_state
from agent.config import load_config
from agent.json_schema import schema_problems
from agent.link.metrics import LinkMetrics
from agent.ota import state as ota_state
from agent.ota.chunks import TransferCounters
from agent.sources.frame import DecodeStats, MainStreamStatus, SourceState, SourceStatus
from agent.threads import Supervisor, WorkerState
from tests.agent.box_page.helpers import get_json, request, status_document
from tests.agent.daemon.helpers import InProcessDaemon, config_dict, synthetic_camera, wait_for, write_config
from tests.agent.ota import conftest as ota_fixtures
from tests.agent.ota.conftest import TINY_MODEL, World

# the OTA tests' fixtures (real keys, a real signed repository, a device committed on release 1.0.0)
_keys_template = ota_fixtures._keys_template
world = ota_fixtures.world
committed_world = ota_fixtures.committed_world


def fields(model: Type[BaseModel]) -> Set[str]:
    return set(model.model_fields)


def dataclass_fields(cls: Any, *without: str) -> Set[str]:
    return {f.name for f in dataclasses.fields(cls)} - set(without)


# ------------------------------------------------------------------ the sections follow their snapshots


def test_the_sections_declare_every_field_of_the_snapshots_they_are_built_from() -> None:
    assert fields(documents.MqttSection) == dataclass_fields(LinkMetrics) | {"down_since"}
    assert fields(documents.OutputSection) == dataclass_fields(OutputCounters) | {"disk_ok", "queued"}
    assert fields(documents.InferenceSection) == dataclass_fields(PipelineCounters, "busy_since") | dataclass_fields(
        RulesTiming
    ) | {"busy_s", "aggregate_fps"}
    assert fields(documents.TransferRecord) == dataclass_fields(TransferCounters) | {"release", "offset", "size"}
    assert fields(documents.ThreadRecord) == dataclass_fields(WorkerState, "name")
    assert fields(documents.SlotRecord) == dataclass_fields(ota_state.SlotRecord)
    assert fields(documents.TrialRecord) == dataclass_fields(ota_state.Trial)
    assert fields(documents.PendingRecord) == dataclass_fields(ota_state.Pending)
    assert fields(documents.QueuedRecord) == dataclass_fields(ota_state.Queued)
    assert fields(documents.InstallerStatus) >= {"active", "probation", "floor", "last", "queued"}


def test_a_camera_record_declares_every_key_of_the_sources_snapshot() -> None:
    main = MainStreamStatus("rtsp://cam/main", SourceState.STREAMING, "", "h264", 1, 2, 3, 4, 0, 1, 0, 5.0, 8, 6)
    status = SourceStatus(
        "dock", "rtsp", SourceState.STREAMING, None, "", 1.0, 2.0, 3, 0, 0, 0, 0, 0, None, 8, 6, "rtsp://cam",
        DecodeStats(), main,
    )  # fmt: skip
    record = status.as_record()
    assert set(record) <= fields(documents.CameraRecord)
    assert set(record["decode"]) == fields(documents.DecodeRecord)
    assert set(record["main"]) == fields(documents.MainStreamRecord)
    documents.CameraRecord.model_validate({"name": "dock", **record, "source": "rtsp://cam"})


# ------------------------------------------------------------------ real documents


def test_the_document_of_a_daemon_before_its_parts_run_is_declared(tmp_path: Path, daemon_model: Path) -> None:
    data = config_dict(tmp_path, 1883, daemon_model, [synthetic_camera("dock")])
    live = LiveState(load_config(write_config(tmp_path / "agent.yaml", data)))
    live.model_error = "models/missing.onnx: model file not found"
    live.errors.append("start failed: no model")
    document = StatusDocument.model_validate(unassembled_document(live, Supervisor(), watchdog=True))
    assert isinstance(document.model, ModelError) and document.cameras == {}
    assert StatusDocument.model_validate(unassembled_document(LiveState(live.config), Supervisor(), False)).model


@pytest.mark.broker
def test_a_running_daemons_status_document_status_json_and_page_are_declared(
    tmp_path: Path, broker: Any, daemon_model: Path
) -> None:
    cameras = [synthetic_camera("dock", seed=1, fps=8.0)]
    data = config_dict(tmp_path, broker.port, daemon_model, cameras, console={"enabled": True, "port": 0})
    with InProcessDaemon(write_config(tmp_path / "agent.yaml", data)) as running:
        pages = running.daemon.parts.pages
        assert pages is not None
        url = f"http://127.0.0.1:{pages.port}/api/state"

        def processing() -> Optional[Dict[str, Any]]:
            status = running.status()
            dock = status["cameras"]["dock"]
            return status if dock.get("processed", 0) > 3 and status["mqtt"].get("connected") else None

        status = wait_for(processing, 30, "the camera processed by the model")
        document = StatusDocument.model_validate(status)
        assert isinstance(document.model, ModelSection) and document.cameras["dock"].processed
        assert document.model_dump(mode="json", exclude_unset=True) == json.loads(json.dumps(status))
        written = wait_for(lambda: read_status(running.daemon.live.status_path), 10, "status.json")
        StatusDocument.model_validate(written)
        page = PageState.model_validate(get_json(url))
        assert page.source == "live" and page.status.cameras["dock"].state == "streaming"


@pytest.mark.broker
def test_a_daemon_started_without_a_model_waiting_for_ota_serves_a_declared_page(world: World, broker: Any) -> None:
    ota = json.loads(world.config.model_dump_json())
    data = config_dict(world.tmp / "daemon", broker.port, world.tmp / "missing.onnx", [], ota=ota)
    data["console"] = {"enabled": True, "port": 0}
    (world.tmp / "daemon").mkdir(exist_ok=True)
    with InProcessDaemon(write_config(world.tmp / "daemon" / "config.yaml", data)) as running:
        document = StatusDocument.model_validate(running.status())
        assert isinstance(document.model, ModelError) and document.model_updates is not None
        pages = running.daemon.parts.pages
        assert pages is not None
        page = PageState.model_validate(get_json(f"http://127.0.0.1:{pages.port}/api/state"))
        assert isinstance(page.ota, InstallerStatus) and page.ota.active is None


@pytest.mark.broker
def test_a_daemon_on_a_committed_release_serves_a_declared_page(committed_world: World, broker: Any) -> None:
    ota = json.loads(committed_world.config.model_dump_json())
    data = config_dict(committed_world.tmp / "daemon", broker.port, TINY_MODEL, [], ota=ota)
    data["console"] = {"enabled": True, "port": 0}
    (committed_world.tmp / "daemon").mkdir(exist_ok=True)
    with InProcessDaemon(write_config(committed_world.tmp / "daemon" / "config.yaml", data)) as running:
        pages = running.daemon.parts.pages
        assert pages is not None
        page = PageState.model_validate(get_json(f"http://127.0.0.1:{pages.port}/api/state"))
        assert isinstance(page.ota, InstallerStatus) and page.ota.active is not None
        assert page.ota.active.version == "1.0.0" and page.ota.last is not None
        StatusDocument.model_validate(running.status())


# ------------------------------------------------------------------ a document that is not declared


def test_page_state_refuses_a_status_document_that_is_not_declared() -> None:
    status = status_document(model={"name": "m"})  # half a model section
    with pytest.raises(ValidationError):
        page_state(status, assess(status, True), (), "live", 2.0)
    with pytest.raises(ValidationError):
        page_state(status_document(surprise=1), (0, []), (), "live", 2.0)  # no unknown keys at the top


class BrokenSource:
    """A page source whose status document is not what the page declares."""

    def __init__(self) -> None:
        self.calls: List[str] = []

    def state(self) -> Dict[str, Any]:
        self.calls.append("state")
        status = status_document(inference={"frames": "many"})
        return page_state(status, (0, []), (), "live", 2.0)

    def cameras(self) -> List[str]:
        return []


def test_an_undeclared_page_document_is_answered_with_a_500_and_the_server_goes_on() -> None:
    source = BrokenSource()
    server = BoxPageServer(ConsoleConfig(enabled=True, port=0), source, "edge/s/dev1/cmd")  # type: ignore[arg-type]
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        for _ in range(2):  # the server answers the next request too
            status, _, body = request(f"{url}/api/state")
            assert status == 500 and b"ValidationError" in body
        assert request(f"{url}/")[0] == 200 and source.calls == ["state", "state"]
    finally:
        server.stop()


def test_the_daemons_side_logs_an_undeclared_page_document(tmp_path: Path, capsys: Any) -> None:
    import asyncio

    from agent.app.box_page import BoxPageBackend
    from agent.app.status import write_status

    path = tmp_path / "status.json"
    write_status(path, status_document(pid=2**22 + 12345, watchdog={"enabled": "maybe", "pings": 0}))
    loop = asyncio.new_event_loop()
    loop.close()  # the loop is gone: the page reads status.json
    live = SimpleNamespace(status_path=path, config=SimpleNamespace(ota=None, cameras=[]))
    writer = SimpleNamespace(recent=RecentOutputs())
    side = BoxPageBackend(live, ConsoleConfig(), loop, document=dict, writer=writer, command=None)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        side.state()
    assert "box_page_state_invalid" in capsys.readouterr().out


# ------------------------------------------------------------------ the committed schemas

PAGES = Path(__file__).resolve().parents[3] / "docs" / "schemas" / "pages"


def test_committed_schemas_equal_the_generated_ones_and_describe_every_property() -> None:
    problems = schema_problems(documents.DOCUMENTS, documents.SCHEMA_BASE_ID, PAGES, prefix="box_")
    assert problems == [], "run: python -m agent.box_page.documents docs/schemas/pages"
