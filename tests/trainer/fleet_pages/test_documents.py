"""The fleet pages' declared documents (trainer/fleet_pages/documents.py): every page of a real fleet is built
through them, their records follow the rows they are built from, and the committed JSON Schemas are the
generated ones."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Set, Type

import pytest
from pydantic import BaseModel, ValidationError

from agent.json_schema import schema_problems
from tests.trainer.fleet_pages import world as console_world
from trainer.fleet_pages import documents
from trainer.fleet_pages.data import FleetData
from trainer.fleet_pages.views import rollout_reply, rounds_view
from trainer.rollout.config import StageConfig
from trainer.rollout.plan import Signal
from trainer.store.queries import CameraRow, DeviceRow

PAGES = Path(__file__).resolve().parents[3] / "docs" / "schemas" / "pages"


def fields(model: Type[BaseModel]) -> Set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def test_the_records_declare_every_field_of_the_rows_they_are_built_from() -> None:
    assert fields(documents.FleetCamera) == {f.name for f in dataclasses.fields(CameraRow)}
    computed = {"alerts_per_hour", "samples_per_hour", "last_seen_s", "samples_per_hour_total"}
    assert fields(documents.FleetDevice) == {f.name for f in dataclasses.fields(DeviceRow)} | computed
    assert fields(documents.QualitySignal) == {f.name for f in dataclasses.fields(Signal)}
    progress = {"pushed", "pushed_at", "ready_since", "promoted_at"}
    assert fields(documents.RolloutStage) == set(StageConfig.model_fields) | progress


def test_every_page_of_a_real_fleet_is_declared(tmp_path: Path, bundles: Any) -> None:
    world = console_world.build(tmp_path, bundles)
    data = FleetData(world.config, world.make_rollout)
    try:
        fleet = documents.FleetDocument.model_validate(data.fleet(None, None, None))
        assert {d.device for d in fleet.devices} == {"c1", "w1", "f1", "d7"}
        rollouts = documents.RolloutsDocument.model_validate(data.rollouts())
        assert rollouts.current is not None and rollouts.current.stage_rows
        rounds = documents.RoundsDocument.model_validate(data.rounds())
        assert rounds.rounds and rounds.learning_curve
        assert "from" in data.rounds()["rounds"][0]  # served under its own name
        samples = documents.SamplesDocument.model_validate(data.samples({"device": None}, None))
        assert samples.filters == {"device": None}
        halted = documents.RolloutState.model_validate(data.halt("glare"))
        assert halted.state == "halted" and halted.halt is not None
    finally:
        data.close()


def test_an_undeclared_document_is_refused() -> None:
    with pytest.raises(ValidationError):
        rollout_reply({"id": "r1"})
    with pytest.raises(ValidationError):
        rounds_view([{"id": "r1", "gate": {"passed": True}}])  # a gate without its reasons and figures
    assert rounds_view([], configured=False) == {"configured": False, "rounds": [], "learning_curve": []}


def test_committed_schemas_equal_the_generated_ones_and_describe_every_property() -> None:
    problems = schema_problems(documents.DOCUMENTS, documents.SCHEMA_BASE_ID, PAGES, prefix="fleet_")
    assert problems == [], "run: python -m trainer.fleet_pages.documents docs/schemas/pages"
