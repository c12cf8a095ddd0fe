"""Signed but incompatible releases (issue 12, item 3): the release is checked against what the box runs.

The box here runs the demo model (6 factory classes, 256x256) from a committed release whose golden images
are rendered factory frames. The attacks are validly signed releases:

- the tiny 64x64 two-class model with golden expectations recorded from itself;
- an impostor with the demo's class list and input size but random weights, also vouching for itself.

The first is refused before the switch as ``incompatible`` (unless the change is declared and accepted);
the second fails the health check because the *current* model, run on the golden images the device trusts,
finds parts the impostor does not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List

import cv2
import pytest
import yaml

import trainer.release.build as build_module
from agent.cli import main
from agent.core.interface import ClassNeeds
from agent.engine.model import read_model
from agent.ota import Installer, OtaConfig
from agent.ota.errors import HealthCheckFailed, ReleaseRejected
from agent.ota.installer import ServingContext
from agent.synthetic.render import render_frame
from tests.agent.ota.conftest import DATA, DEMO_MODEL, TINY_MODEL, World
from trainer.release.build import ReleaseSpec, build_release
from trainer.release.repo import Repository

IMPOSTOR = DATA / "tiny-impostor256.onnx"  # demo's classes and input size, random weights


def factory_frames(directory: Path, count: int = 3) -> List[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = directory / f"factory-{i}.png"
        cv2.imwrite(str(path), render_frame("factory", 7, i).image)
        paths.append(path)
    return paths


def sign(world: World, version: str, model: Path, conf: float, golden: List[Path], **kw: Any) -> None:
    spec = ReleaseSpec(
        name="widget", version=version, channel="stable", files={"onnx": model}, golden=golden, conf=conf, **kw
    )
    build_release(Repository(world.repo_path, world.ring), spec)


@pytest.fixture
def demo_world(world: World, tmp_path: Path) -> World:
    """A box on release 1.0.0: the demo model, golden images = rendered factory frames, committed."""
    world.golden = factory_frames(tmp_path / "factory")
    sign(world, "1.0.0", DEMO_MODEL, 0.25, world.golden)
    world.installer().install_path(world.bundle("r1"))
    assert world.installer().state().known_good is not None
    world.events.clear()
    return world


def with_config(world: World, **changes: Any) -> World:
    world.config = OtaConfig(**{**world.config.model_dump(), **changes})
    return world


def assert_untouched(world: World, version: str = "1.0.0") -> None:
    state = world.installer().state()
    assert state.active is not None and state.active.version == version
    assert state.trial is None and state.pending is None


def test_other_classes_and_input_size_are_refused_before_the_switch(demo_world: World, tmp_path: Path) -> None:
    # the attack as found: 64x64, two classes, its own golden images and expectations
    sign(demo_world, "2.0.0", TINY_MODEL, 0.001, demo_world.golden)
    with pytest.raises(ReleaseRejected) as info:
        demo_world.installer().install_path(demo_world.bundle("r2"))
    assert info.value.reason == "incompatible"
    assert "the class list changes from ['bolt', 'nut', 'washer', 'bracket', 'bent_bolt', 'cracked_washer'] to " in (
        info.value.detail
    )
    assert "does not declare that change" in info.value.detail
    assert_untouched(demo_world)
    assert demo_world.kinds()[-1] == "rejected" and demo_world.events[-1].reason == "incompatible"
    # refused as incompatible, not marked bad: another configuration may take it
    assert not demo_world.installer().state().bad


def test_accepting_a_change_does_not_help_an_undeclared_one(demo_world: World) -> None:
    with_config(demo_world, accept_class_changes=True, accept_input_size_changes=True)
    sign(demo_world, "2.0.0", TINY_MODEL, 0.001, demo_world.golden)
    with pytest.raises(ReleaseRejected, match="does not declare"):
        demo_world.installer().install_path(demo_world.bundle("r2"))
    assert_untouched(demo_world)


def test_a_declared_change_needs_the_box_to_accept_it(demo_world: World) -> None:
    sign(demo_world, "2.0.0", TINY_MODEL, 0.001, demo_world.golden, interface_changes=("classes", "input_size"))
    # classes: the box's rules name no class, so a declared class change is fine; the input size is not
    with pytest.raises(ReleaseRejected, match="accept_input_size_changes"):
        demo_world.installer().install_path(demo_world.bundle("r2"))
    assert_untouched(demo_world)
    with_config(demo_world, accept_input_size_changes=True)
    record = demo_world.installer().install_path(demo_world.bundle("r2b"))
    assert getattr(record, "version", None) == "2.0.0"
    assert demo_world.installer().state().trial is not None  # on probation like any other release


def test_rules_naming_a_class_the_release_lacks_refuse_it_whatever_is_accepted(demo_world: World) -> None:
    with_config(demo_world, accept_class_changes=True, accept_input_size_changes=True)
    sign(demo_world, "2.0.0", TINY_MODEL, 0.001, demo_world.golden, interface_changes=("classes", "input_size"))
    needs = ClassNeeds(frozenset({"bolt"}), frozenset(), ("line1/loose-bolt=bolt",))
    installer = Installer(
        demo_world.config, on_event=demo_world.events.append, serving=lambda: ServingContext(None, needs)
    )
    with pytest.raises(ReleaseRejected) as info:
        installer.install_path(demo_world.bundle("r2"))
    assert info.value.reason == "incompatible"
    assert "the alert rules name ['bolt'] (line1/loose-bolt=bolt)" in info.value.detail
    assert_untouched(demo_world)


def test_a_class_change_with_rules_by_id_needs_accept_class_changes(demo_world: World) -> None:
    with_config(demo_world, accept_input_size_changes=True)
    sign(demo_world, "2.0.0", TINY_MODEL, 0.001, demo_world.golden, interface_changes=("classes", "input_size"))
    by_id = ClassNeeds(frozenset(), frozenset({0}), ("line1/first=0",))
    installer = Installer(demo_world.config, serving=lambda: ServingContext(None, by_id))
    with pytest.raises(ReleaseRejected, match="accept_class_changes"):
        installer.install_path(demo_world.bundle("r2"))
    with_config(demo_world, accept_input_size_changes=True, accept_class_changes=True)
    installer = Installer(demo_world.config, serving=lambda: ServingContext(None, by_id))
    assert getattr(installer.install_path(demo_world.bundle("r2b")), "version", None) == "2.0.0"


def test_the_factory_model_is_the_reference_before_any_release(world: World) -> None:
    world.release("1.0.0")  # the tiny model: the box runs the demo model from its configuration
    installer = Installer(world.config, serving=lambda: ServingContext(DEMO_MODEL, ClassNeeds()))
    with pytest.raises(ReleaseRejected, match="the class list changes"):
        installer.install_path(world.bundle("r1"))
    assert installer.state().active is None


def test_a_manifest_that_misdeclares_its_model_is_refused(demo_world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # the publisher's tool read another model than it packed: the manifest declares the demo's classes, the
    # file is the tiny model (the installer reads the file, it does not take the declaration's word)
    real = read_model
    monkeypatch.setattr(build_module, "read_model", lambda path: real(DEMO_MODEL))
    sign(demo_world, "2.0.0", TINY_MODEL, 0.001, demo_world.golden)
    with pytest.raises(ReleaseRejected) as info:
        demo_world.installer().install_path(demo_world.bundle("r2"))
    assert info.value.reason == "incompatible"
    assert "the manifest declares classes ['bolt'" in info.value.detail and "the model file has ['part'" in (
        info.value.detail
    )
    assert_untouched(demo_world)


def test_a_release_cannot_vouch_for_itself(demo_world: World) -> None:
    # same classes and input size, random weights, expectations recorded from itself: its own goldens pass,
    # the current model on the trusted goldens disagrees
    sign(demo_world, "2.0.0", IMPOSTOR, 0.001, demo_world.golden)
    with pytest.raises(HealthCheckFailed) as info:
        demo_world.installer().install_path(demo_world.bundle("r2"))
    assert "detections the current model makes" in info.value.detail
    assert "(0% < 50%)" in info.value.detail
    assert_untouched(demo_world)
    assert len(demo_world.installer().state().bad) == 1  # it ran and was wrong: never again


def test_a_faithful_re_export_agrees_with_the_current_model(demo_world: World, tmp_path: Path) -> None:
    data = DEMO_MODEL.read_bytes()
    twin = tmp_path / "demo-twin.onnx"
    twin.write_bytes(data.replace(b"trained on /work/data", b"trained on /work/DATA", 1))
    sign(demo_world, "1.1.0", twin, 0.25, demo_world.golden)
    record = demo_world.installer().install_path(demo_world.bundle("r2"))
    assert getattr(record, "version", None) == "1.1.0"


def test_the_comparison_can_be_disabled(demo_world: World) -> None:
    with_config(demo_world, health={**demo_world.config.health.model_dump(), "min_agreement": 0.0})
    sign(demo_world, "2.0.0", IMPOSTOR, 0.001, demo_world.golden)
    assert getattr(demo_world.installer().install_path(demo_world.bundle("r2")), "version", None) == "2.0.0"


def test_ota_install_from_the_command_line_checks_the_configured_rules(
    demo_world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sign(demo_world, "2.0.0", TINY_MODEL, 0.001, demo_world.golden, interface_changes=("classes", "input_size"))
    camera = {
        "name": "line1",
        "source": {"type": "synthetic", "seed": 1, "width": 320, "height": 192, "fps": 5},
        "rules": {"alerts": [{"name": "loose-bolt", "classes": ["bolt"]}]},
    }
    ota = {**demo_world.config.model_dump(mode="json"), "accept_input_size_changes": True}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"ota": ota, "cameras": [camera]}))
    bundle = demo_world.bundle("r2")
    assert main(["ota", "install", "--config", str(config), str(bundle)]) == 2
    err = capsys.readouterr().err
    assert "incompatible: the alert rules name ['bolt'] (line1/loose-bolt=bolt)" in err
    assert main(["ota", "verify", "--config", str(config), str(bundle)]) == 2  # verify says the same
    assert "incompatible" in capsys.readouterr().err
    assert_untouched(demo_world)


def test_ota_status_tells_the_last_outcome_in_words(
    demo_world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sign(demo_world, "2.0.0", TINY_MODEL, 0.001, demo_world.golden)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"ota": demo_world.config.model_dump(mode="json")}))
    assert main(["ota", "install", "--config", str(config), str(demo_world.bundle("r2"))]) == 2
    capsys.readouterr()
    assert main(["ota", "status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "active      widget 1.0.0 #1" in out
    assert "last        rejected widget 2.0.0 at " in out
    assert ": incompatible: the class list changes from ['bolt'" in out
    assert main(["ota", "status", "--json", "--config", str(config)]) == 0
    last = json.loads(capsys.readouterr().out)["last"]
    assert (last["kind"], last["reason"], last["release"]["version"]) == ("rejected", "incompatible", "2.0.0")
