"""SIGHUP: what a new configuration changes, and applying the part that is safe while running.

:func:`plan_reload` is pure (old config, new config -> :class:`ReloadPlan`); :func:`apply_reload` hands each
change to its owner: decode thresholds and camera rules to the inference thread (between frames), cameras
added / removed / changed to the camera wiring (:class:`CameraControl`), the log level to the logging setup.
Sections that need a restart (mqtt, spool, model, ota, metrics, console, output, the state directory) keep
their running values, and the log says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Protocol, Tuple

import structlog

from agent.app.live import LiveState
from agent.config import AgentConfig
from agent.observability.logs import set_level
from agent.sources.config import CameraConfig

__all__ = ["RESTART_SECTIONS", "CameraControl", "ReloadPlan", "apply_reload", "plan_reload"]

log = structlog.get_logger("agent.reload")

RESTART_SECTIONS = ("mqtt", "spool", "disk_budget", "ota", "metrics", "console", "output")


class CameraControl(Protocol):
    """Starts and stops cameras on the running pipeline (event loop)."""

    def add_camera(self, camera: CameraConfig) -> None: ...

    def remove_camera(self, name: str) -> None: ...


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload does; ``config`` is the configuration in force afterwards (restart-only sections kept)."""

    config: AgentConfig
    needs_restart: Tuple[str, ...]
    removed: Tuple[str, ...]
    added: Tuple[CameraConfig, ...]
    replaced: Tuple[CameraConfig, ...]  # changed beyond their rules: stopped and started again
    rules_changed: Tuple[CameraConfig, ...]  # only the rules changed: applied in place


def plan_reload(old: AgentConfig, new: AgentConfig) -> ReloadPlan:
    restart = [name for name in RESTART_SECTIONS if getattr(old, name) != getattr(new, name)]
    if old.model.path != new.model.path or old.model.backend != new.model.backend:
        restart.append("model")
    if old.daemon.state_dir != new.daemon.state_dir:
        restart.append("daemon.state_dir")
    old_cams = {c.name: c for c in old.cameras if c.enabled}
    new_cams = {c.name: c for c in new.cameras if c.enabled}
    added, replaced, rules = [], [], []
    for name, camera in new_cams.items():
        before = old_cams.get(name)
        if before is None:
            added.append(camera)
        elif before.model_copy(update={"rules": camera.rules}) != camera:
            replaced.append(camera)
        elif before.rules != camera.rules:
            rules.append(camera)
    kept: Dict[str, object] = {name: getattr(old, name) for name in RESTART_SECTIONS}
    kept["model"] = new.model.model_copy(update={"path": old.model.path, "backend": old.model.backend})
    kept["daemon"] = new.daemon.model_copy(update={"state_dir": old.daemon.state_dir})
    return ReloadPlan(
        config=new.model_copy(update=kept),
        needs_restart=tuple(restart),
        removed=tuple(sorted(old_cams.keys() - new_cams.keys())),
        added=tuple(added),
        replaced=tuple(replaced),
        rules_changed=tuple(rules),
    )


def apply_reload(live: LiveState, cameras: CameraControl, new: AgentConfig) -> bool:
    """Apply ``new`` to the running daemon's ``live`` state and ``cameras`` (event loop); False when nothing
    could be applied."""
    old = live.config
    pipeline = live.pipeline
    if pipeline is None:
        log.warning("reload_deferred", reason="no model runs yet; restart to apply the new configuration")
        live.errors.append("reload deferred: no model runs yet")
        return False
    plan = plan_reload(old, new)
    if plan.needs_restart:
        log.warning("reload_needs_restart", sections=list(plan.needs_restart))
    if new.logging.level != old.logging.level:
        set_level(new.logging.level)
    pipeline.set_decode(new.model.decode_params())
    for name in plan.removed:
        cameras.remove_camera(name)
    for camera in plan.added:
        cameras.add_camera(camera)
    for camera in plan.replaced:
        cameras.remove_camera(camera.name)
        cameras.add_camera(camera)
    for camera in plan.rules_changed:
        pipeline.set_rules(camera.name, camera.rules)
    live.config = plan.config
    live.reloads += 1
    log.info(
        "reloaded", cameras=sorted(c.name for c in new.cameras if c.enabled), restart_needed=list(plan.needs_restart)
    )
    return True
