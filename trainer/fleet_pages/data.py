"""The fleet pages' I/O: everything they read or change, from its owner, behind one object.

    the sample store   a read-only SQLite connection per request (WAL: never blocks the ingest's writer),
                       blobs through the store's own backend (local or S3)
    rollouts           the rollout driver itself (trainer.rollout.driver.Rollout): status, promote, halt; its
                       MQTT seam is the driver's (``actions``), so tests can record it
    rounds             the round records under rounds.workdir (trainer.rounds.history.list_rounds)

Reads work with the broker down: only promote and halt need it (they publish retained pushes and rollbacks).
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Protocol, Tuple

from agent.protocol import ProtocolLimits, Topics
from agent.protocol.models import CommandReply
from agent.protocol.parse import parse_command
from agent.web.forms import command_payload, encode_payload
from trainer.fleet_pages.config import CloudConsoleConfig
from trainer.fleet_pages.views import command_sent, fleet_view, rollout_reply, rollout_view, rounds_view, samples_view
from trainer.labelling import LabellingConfig
from trainer.release import Publisher
from trainer.rollout import MqttActions, Rollout, RolloutConfig
from trainer.rounds import RoundsConfig, list_rounds
from trainer.store import (
    StoreConfig,
    StoreError,
    fleet,
    label_tasks,
    list_samples,
    open_blobs,
    open_reader,
    sample_stats,
)

__all__ = ["ConsoleSettings", "FleetData", "NotFound"]

_PLOT = re.compile(r"^[A-Za-z0-9_-]{1,64}\.png$")


class NotFound(LookupError):
    """No such sample, round or plot."""


class ConsoleSettings(Protocol):
    """What the pages read of trainer.yaml (``trainer.settings.TrainerConfig`` is one)."""

    store: StoreConfig
    labelling: LabellingConfig
    rounds: Optional[RoundsConfig]
    rollout: Optional[RolloutConfig]
    console: Optional[CloudConsoleConfig]


class FleetData:
    def __init__(self, config: ConsoleSettings, rollout_factory: Optional[Callable[[], Any]] = None) -> None:
        self.config = config
        self._rollout_factory = rollout_factory or self._default_rollout
        self._blobs: Any = None

    def _default_rollout(self) -> Any:
        rollout = self.config.rollout
        if rollout is None:
            raise StoreError("trainer.yaml has no rollout section")
        return Rollout(rollout, self._db, lambda: MqttActions(rollout))

    def _db(self) -> Any:
        return open_reader(self.config.store.index_path, self.config.store.busy_timeout_ms)

    def close(self) -> None:
        if self._blobs is not None:
            self._blobs.close()

    # ------------------------------------------------------------------ fleet

    def fleet(self, site: Optional[str], group: Optional[str], version: Optional[str]) -> Dict[str, Any]:
        now = time.time()
        db = self._db()
        try:
            rows = fleet(db, now=now, window_s=self.config_console.window_hours * 3600)
        finally:
            db.close()
        return fleet_view(rows, now, site, group, version)

    @property
    def config_console(self) -> Any:
        return self.config.console or CloudConsoleConfig()

    # ------------------------------------------------------------------ rollouts

    def rollouts(self) -> Dict[str, Any]:
        if self.config.rollout is None:
            return rollout_view(None, [], {}, configured=False)
        rollout = self._rollout_factory()
        try:
            current = rollout.status() if rollout.store.current() is not None else None
            history = rollout.store.all()
        finally:
            rollout.close()
        return rollout_view(current, history, self.config.rollout.bounds.model_dump())

    def promote(self, force: bool) -> Dict[str, Any]:
        rollout = self._rollout_factory()
        try:
            return rollout_reply(rollout.promote(force=force))
        finally:
            rollout.close()

    def halt(self, reason: str) -> Dict[str, Any]:
        rollout = self._rollout_factory()
        try:
            return rollout_reply(rollout.halt(reason))
        finally:
            rollout.close()

    # ------------------------------------------------------------------ device commands

    def _command_broker(self) -> Optional[Tuple[Any, str]]:
        console = self.config_console
        if console.broker is not None:
            return console.broker, console.topic_prefix
        if self.config.rollout is not None:
            return self.config.rollout.broker, self.config.rollout.topic_prefix
        return None

    def device_command(self, device: str, form: Dict[str, Any]) -> Dict[str, Any]:
        """Send a box-page command (``agent.web.forms.command_payload``) to ``device`` over the site broker
        and wait for its reply. Raises CommandFormError / ProtocolError for a bad form, NotFound, PushError."""
        target = self._command_broker()
        if target is None:
            raise NotFound("no broker for device commands (console.broker or rollout.broker in trainer.yaml)")
        broker, prefix = target
        db = self._db()
        try:
            rows = fleet(db, now=time.time(), device=device)
        finally:
            db.close()
        if not rows:
            raise NotFound(f"no device {device!r} in the registry")
        row = rows[0]
        topics = Topics(prefix, row.site, row.device)
        request_id = f"fleet-{uuid.uuid4().hex[:16]}"
        payload = command_payload(form, [c.camera for c in row.cameras], datetime.now(timezone.utc), request_id)
        body = encode_payload(payload)
        parse_command(topics.cmd, body, ProtocolLimits())  # valid exactly when the box would take it
        publisher = Publisher.for_broker(broker, timeout_s=broker.connect_timeout_s)
        try:
            wait_s = self.config_console.command_wait_s
            raw = publisher.request(topics.cmd, body, topics.cmd_reply, lambda b: request_id.encode() in b, wait_s)
        finally:
            publisher.close()
        reply = None
        if raw is not None:
            try:
                reply = CommandReply.model_validate_json(raw).model_dump(mode="json")
            except ValueError as exc:
                reply = {"status": "error", "error": {"code": "bad_reply", "message": str(exc)[:300]}}
        return command_sent(device, request_id, payload, reply, wait_s)

    # ------------------------------------------------------------------ rounds

    def _workdir(self) -> Optional[Path]:
        return None if self.config.rounds is None else Path(self.config.rounds.workdir)

    def rounds(self) -> Dict[str, Any]:
        workdir = self._workdir()
        return rounds_view(list_rounds(workdir) if workdir else [], configured=workdir is not None)

    def round_plot(self, round_id: str, name: str) -> bytes:
        workdir = self._workdir()
        if workdir is None or not _PLOT.match(name):
            raise NotFound(name)
        for record in list_rounds(workdir):
            report = record.get("report") or {}
            if record.get("id") == round_id and name in report.get("plots", []):
                return (Path(report["dir"]) / name).read_bytes()
        raise NotFound(f"round {round_id} has no plot {name}")

    # ------------------------------------------------------------------ samples

    def samples(self, filters: Dict[str, Optional[str]], before: Optional[int]) -> Dict[str, Any]:
        db = self._db()
        try:
            rows = list_samples(
                db,
                device=filters.get("device"),
                camera=filters.get("camera"),
                reason=filters.get("reason"),
                label_state=filters.get("label_state"),
                before_sid=before,
                limit=self.config_console.samples_page,
            )
            tasks = label_tasks(db, [r.sid for r in rows])
            stats = sample_stats(db)
            stats["cameras"] = sorted(str(r[0]) for r in db.execute("SELECT DISTINCT camera FROM samples"))
        finally:
            db.close()
        return samples_view(rows, tasks, self.config.labelling.label_studio.url, stats, filters)

    def sample_image(self, sid: int) -> bytes:
        db = self._db()
        try:
            row = db.execute("SELECT image_sha256 FROM samples WHERE sid = ?", (sid,)).fetchone()
        finally:
            db.close()
        if row is None:
            raise NotFound(f"no sample {sid}")
        if self._blobs is None:
            self._blobs = open_blobs(self.config.store)
        return bytes(self._blobs.get(str(row[0])))
