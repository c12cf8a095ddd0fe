"""Two holes an outside attack run found (issue 12): the committed release delivered again reopened probation,
and a manual rollback after a crash-loop rollback went back into the release marked bad."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.ota import StateError
from tests.agent.ota.conftest import World, serve_directory


def test_the_committed_release_delivered_again_is_a_no_op(committed_world: World) -> None:
    inst = committed_world.installer()
    before = inst.state()
    assert before.trial is None and before.active is not None
    # the same USB stick plugged in again, and the same repository fetched again
    again = inst.install_path(committed_world.bundle("r1-again"))
    with serve_directory(committed_world.repo_path) as url:
        and_again = inst.install_url(url)
    after = inst.state()
    assert again == before.active and and_again == before.active
    assert after.trial is None, "a re-delivery reopened probation"
    assert (after.active, after.known_good, after.previous, after.floor) == (
        before.active,
        before.known_good,
        before.previous,
        before.floor,
    )
    assert committed_world.kinds()[-1] == "already_active"
    assert committed_world.events[-1].phase == "committed"  # what the fleet sees: still committed
    assert "nothing installed" in (committed_world.events[-1].detail or "")


def test_a_rollback_never_selects_a_release_marked_bad(committed_world: World, model_b: Path) -> None:
    committed_world.release("1.1.0", model=model_b)
    inst = committed_world.installer()
    good = inst.state().active
    inst.install_path(committed_world.bundle("r2"))
    inst.on_start()
    inst.on_start()
    inst.on_start()  # two unclean starts in probation: crash-loop rollback to 1.0.0, 1.1.0 marked bad
    state = inst.state()
    assert state.active == good and state.previous is not None and state.previous.slot in state.bad
    with pytest.raises(StateError, match="nothing safe to roll back to.*1.1.0.*marked bad"):
        inst.rollback("manual")
    assert inst.state().active == good and inst.state().trial is None
