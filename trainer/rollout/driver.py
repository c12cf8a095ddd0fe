"""The rollout's I/O and its steps: pushes and rollback commands over MQTT, device views from the registry,
and the state machine of :mod:`trainer.rollout.plan` applied one tick at a time.

Pushes use the agent's own topics: stage ``group`` → ``{prefix}/{site}/groups/{group}/models``, the fleet
stage → ``{prefix}/{site}/fleet/models`` (retained ModelPush, chunks first). A device follows the highest
counter among its fleet and group pushes, so devices outside a stage's group never see the new release.

Halting a stage restores what each of its topics (and the earlier stages') held before the rollout began
(the previous release's push, or nothing), and sends each device that runs the new release a rollback
that names it (``if_active``): a device that already left it ignores the repeat. The halt is written to the
state file before any of that, and repeated on every tick until every device has left the new release.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

from agent.protocol import ReleaseRef, RollbackCommand, Topics, encode_json
from trainer.release import Publisher, build_push, bundle_manifest, publish
from trainer.rollout.config import RolloutConfig
from trainer.rollout.plan import Action, DeviceView, Figures, decide_stage, ota_failure, quality_signals
from trainer.rollout.state import COMPLETED, HALTED, RUNNING, RolloutStore, event, new_state
from trainer.store import DeviceRow, device_quality, fleet

MAX_ROLLBACKS = 20
"""Rollback commands sent to one device after a halt, one per tick, before the rollout gives up on it."""


class RolloutError(Exception):
    """The rollout cannot do what was asked (one is running, no such release, nothing to promote)."""


class Actions(Protocol):
    """What the rollout does to the world (MQTT): tests can record it instead."""

    def retained(self, topic: str) -> Optional[bytes]: ...

    def publish_retained(self, messages: Sequence[Tuple[str, bytes]]) -> None: ...

    def send(self, topic: str, payload: bytes) -> None: ...

    def close(self) -> None: ...


class MqttActions:
    """The site broker, through the release publisher's client (QoS 1, every PUBACK awaited)."""

    def __init__(self, config: RolloutConfig) -> None:
        self.publisher = Publisher.for_broker(config.broker)

    def retained(self, topic: str) -> Optional[bytes]:
        return self.publisher.current(topic)

    def publish_retained(self, messages: Sequence[Tuple[str, bytes]]) -> None:
        self.publisher.publish(messages)

    def send(self, topic: str, payload: bytes) -> None:
        self.publisher.publish([(topic, payload)], retain=False)

    def close(self) -> None:
        self.publisher.close()


def release_of_bundle(bundle: Path) -> Dict[str, Any]:
    """Identity of a release from its online bundle: name, version, counter, channel, its model files' digests."""
    manifest, _ = bundle_manifest(bundle)
    return {
        "name": manifest.name,
        "version": str(manifest.version),
        "counter": manifest.counter,
        "channel": manifest.channel,
        "bundle": str(bundle),
        "model_sha256s": sorted(ref.sha256 for role, ref in manifest.files.items() if role in ("onnx", "onnx_int8")),
    }


def _figures(rows: Sequence[Any]) -> Optional[Figures]:
    if not rows:
        return None
    last = rows[-1]
    return Figures(
        last.frames,
        max(0.0, last.status_time - last.since),
        last.detections,
        last.confidence_sum,
        last.alerts,
        last.uncertain,
    )


class Rollout:
    """Start, step, promote and halt the current rollout (see the module docstring)."""

    def __init__(self, config: RolloutConfig, open_db: Callable[[], Any], actions: Callable[[], Actions]) -> None:
        self.config = config
        self.store = RolloutStore(config.state_dir)
        self._open_db_factory = open_db
        self._db: Any = None
        self._actions_factory = actions
        self._actions: Optional[Actions] = None

    def _open_db(self) -> Any:
        if self._db is None:
            self._db = self._open_db_factory()
        return self._db

    @property
    def actions(self) -> Actions:
        if self._actions is None:
            self._actions = self._actions_factory()
        return self._actions

    def close(self) -> None:
        if self._actions is not None:
            self._actions.close()
        if self._db is not None:
            self._db.close()

    def topic(self, group: Optional[str]) -> str:
        site = f"{self.config.topic_prefix}/{self.config.site}"
        return f"{site}/groups/{group}/models" if group else f"{site}/fleet/models"

    # ------------------------------------------------------------------ devices

    def _devices(self, state: Dict[str, Any], up_to: int) -> List[DeviceRow]:
        groups = {s["group"] for s in state["stages"][: up_to + 1]}
        rows = fleet(self._open_db(), now=time.time(), site=self.config.site)
        return [r for r in rows if None in groups or groups & set(r.groups)]

    def views(self, state: Dict[str, Any], up_to: int) -> List[DeviceView]:
        release = state["release"]
        new = set(release["model_sha256s"])
        db = self._open_db()
        views = []
        for row in self._devices(state, up_to):
            ota = row.ota_release or {}
            of_new = ota.get("counter") == release["counter"]
            failed = ota_failure(row.ota_phase, row.ota_detail, release["version"]) if of_new else None
            previous = state.get("previous_models", {}).get(row.device)
            reports = device_quality(db, row.device)
            before = [
                q for q in reports if q.model_sha256 not in new and (previous is None or q.model_sha256 == previous)
            ]
            after = [q for q in reports if q.model_sha256 in new]
            views.append(
                DeviceView(
                    device=row.device,
                    running_new=row.model_sha256 in new,
                    committed_new=of_new and row.ota_phase == "committed",
                    ota_failed_new=failed,
                    before=_figures(before),
                    after=_figures(after),
                )
            )
        return views

    # ------------------------------------------------------------------ the pushes

    def _push(self, state: Dict[str, Any], index: int) -> None:
        stage = state["stages"][index]
        release = state["release"]
        topic = self.topic(stage["group"])
        if self.config.urls:
            publication = build_push(topic, release["channel"], urls=self.config.urls, repo=Path(release["repo"]))
        else:
            publication = build_push(
                topic, release["channel"], bundle=Path(release["bundle"]), chunk_size=self.config.chunk_size
            )

        class _Through:  # trainer.release.push.publish() speaks to a Publisher; hand it our actions
            def __init__(self, actions: Actions) -> None:
                self.actions = actions

            def current(self, t: str) -> Optional[bytes]:
                return self.actions.retained(t)

            def publish(self, messages: Sequence[Tuple[str, bytes]]) -> int:
                messages = list(messages)
                if messages:
                    self.actions.publish_retained(messages)
                return len(messages)

        # keep the chunks of the release this topic pushed before: a halt restores its push, and devices that
        # join meanwhile must still be able to fetch it
        publish(_Through(self.actions), publication, clear_old=False)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ commands

    def start(self, bundle: Path, repo: Optional[Path] = None) -> Dict[str, Any]:
        current = self.store.current()
        if current is not None and current["state"] == RUNNING:
            raise RolloutError(f"rollout {current['id']} is running: halt or finish it first")
        release = release_of_bundle(bundle)
        if release["channel"] != self.config.channel:
            raise RolloutError(
                f"the release is on channel {release['channel']!r}, the devices follow {self.config.channel!r}"
            )
        release["repo"] = str(repo) if repo else None
        stages = [s.model_dump() for s in self.config.stages]
        snapshots = {}
        for stage in stages:
            payload = self.actions.retained(self.topic(stage["group"]))
            snapshots[self.topic(stage["group"])] = base64.b64encode(payload or b"").decode()
        state = new_state(release, stages, self.config.site, snapshots)
        # each device's model before the rollout: its own baseline for the figures
        state["previous_models"] = {
            r.device: r.model_sha256
            for r in fleet(self._open_db(), now=time.time(), site=self.config.site)
            if r.model_sha256 and r.model_sha256 not in release["model_sha256s"]
        }
        self.store.save(state)
        self.store.set_current(state["id"])
        return self.tick()

    def tick(self, now: Optional[float] = None) -> Dict[str, Any]:
        """One step of the current rollout; returns its state."""
        state = self.store.current()
        if state is None:
            raise RolloutError("no rollout has been started")
        now = time.time() if now is None else now
        if state["state"] == HALTED:
            self._enforce_halt(state)
            return state
        if state["state"] == COMPLETED:
            return state
        index = state["stage"]
        stage = state["stages"][index]
        if not stage["pushed"]:
            self._push(state, index)
            stage["pushed"], stage["pushed_at"] = True, now
            event(state, "pushed", f"stage {stage['name']} on {self.topic(stage['group'])}")
            self.store.save(state)
            return state
        decision = decide_stage(
            self.views(state, index),
            stage["min_committed"],
            stage["watch_s"],
            stage["ready_since"],
            now,
            self.config.bounds,
        )
        state["last_decision"] = {
            "at": now,
            "action": decision.action.value,
            "reasons": decision.reasons,
            "committed": decision.committed,
            "devices": decision.devices,
        }
        if decision.action is Action.HALT:
            return self._halt(state, decision.reasons)
        if decision.action is Action.READY:
            stage["ready_since"] = now
            event(state, "ready", f"stage {stage['name']}: {decision.reasons[0]}")
        elif decision.action is Action.PROMOTE:
            self._promote(state, now, decision.reasons[0])
        self.store.save(state)
        return state

    def _promote(self, state: Dict[str, Any], now: float, why: str) -> None:
        stage = state["stages"][state["stage"]]
        stage["promoted_at"] = now
        if state["stage"] + 1 >= len(state["stages"]):
            state["state"] = COMPLETED
            event(state, "completed", f"stage {stage['name']}: {why}")
        else:
            state["stage"] += 1
            event(state, "promoted", f"{stage['name']} -> {state['stages'][state['stage']]['name']}: {why}")

    def promote(self, force: bool = False) -> Dict[str, Any]:
        """Promote the current stage now (``force``: without waiting for its conditions; never after a halt)."""
        state = self.store.current()
        if state is None or state["state"] != RUNNING:
            raise RolloutError("no running rollout to promote" + (f" (it is {state['state']})" if state else ""))
        stage = state["stages"][state["stage"]]
        if not stage["pushed"]:
            raise RolloutError(f"stage {stage['name']} has not been pushed yet")
        if not force:
            decision = decide_stage(
                self.views(state, state["stage"]),
                stage["min_committed"],
                stage["watch_s"],
                stage["ready_since"],
                time.time(),
                self.config.bounds,
            )
            if decision.action is not Action.PROMOTE:
                raise RolloutError(f"stage {stage['name']} is not ready: {'; '.join(decision.reasons)} (--force)")
        self._promote(state, time.time(), "promoted by an operator" + (" (forced)" if force else ""))
        self.store.save(state)
        return self.tick()

    def halt(self, reason: str) -> Dict[str, Any]:
        state = self.store.current()
        if state is None or state["state"] == COMPLETED:
            raise RolloutError("no rollout to halt")
        if state["state"] == HALTED:
            return state
        return self._halt(state, [f"operator: {reason}"])

    def _halt(self, state: Dict[str, Any], reasons: List[str]) -> Dict[str, Any]:
        state["state"] = HALTED
        state["halt"] = {"stage": state["stage"], "reasons": reasons, "at": time.time(), "rollbacks": {}}
        event(state, "halted", "; ".join(reasons)[:2000])
        self.store.save(state)  # first the decision, then the acts (repeated until done)
        self._enforce_halt(state)
        return state

    def _enforce_halt(self, state: Dict[str, Any]) -> None:
        halt = state["halt"]
        restore = []
        for stage in state["stages"][: halt["stage"] + 1]:
            topic = self.topic(stage["group"])
            restore.append((topic, base64.b64decode(state["snapshots"].get(topic, ""))))
        self.actions.publish_retained(restore)
        release = state["release"]
        sent = halt.setdefault("rollbacks", {})
        for view in self.views(state, halt["stage"]):
            if not view.running_new or sent.get(view.device, 0) >= MAX_ROLLBACKS:
                continue
            command = RollbackCommand(
                type="rollback",
                request_id=f"rollout-{state['id']}-{uuid.uuid4().hex[:8]}",
                reason=f"rollout {state['id']} halted: {'; '.join(halt['reasons'])}"[:1024],
                if_active=ReleaseRef(name=release["name"], version=release["version"], counter=release["counter"]),
            )
            topics = Topics(self.config.topic_prefix, self.config.site, view.device)
            self.actions.send(topics.cmd, encode_json(command))
            sent[view.device] = sent.get(view.device, 0) + 1
        self.store.save(state)

    def status(self) -> Dict[str, Any]:
        state = self.store.current()
        if state is None:
            raise RolloutError("no rollout has been started")
        index = state["halt"]["stage"] if state.get("halt") else state["stage"]
        views = self.views(state, min(index, len(state["stages"]) - 1))
        rows = {r.device: r for r in self._devices(state, len(state["stages"]) - 1)}
        devices = []
        for view in views:
            row = rows.get(view.device)
            devices.append(
                {
                    "device": view.device,
                    "groups": list(row.groups) if row else [],
                    "model_version": row.model_version if row else None,
                    "ota_phase": row.ota_phase if row else None,
                    "running_new": view.running_new,
                    "committed_new": view.committed_new,
                    "problem": view.ota_failed_new,
                    "after_frames": view.after.frames if view.after else 0,
                    "signals": [signal.as_dict() for signal in quality_signals(view, self.config.bounds)],
                }
            )
        return {**state, "devices": devices}


def dumps(state: Dict[str, Any]) -> str:
    return json.dumps(state, indent=2, sort_keys=True, default=str)
