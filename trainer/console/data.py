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
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from trainer.console.views import fleet_view, rollout_view, rounds_view, samples_view
from trainer.rounds.history import list_rounds
from trainer.settings import TrainerConfig
from trainer.store.errors import StoreError
from trainer.store.queries import fleet, label_tasks, list_samples, open_reader, sample_stats

__all__ = ["ConsoleData", "NotFound"]

_PLOT = re.compile(r"^[A-Za-z0-9_-]{1,64}\.png$")


class NotFound(LookupError):
    """No such sample, round or plot."""


class ConsoleData:
    def __init__(self, config: TrainerConfig, rollout_factory: Optional[Callable[[], Any]] = None) -> None:
        self.config = config
        self._rollout_factory = rollout_factory or self._default_rollout
        self._blobs: Any = None

    def _default_rollout(self) -> Any:
        from trainer.rollout.driver import MqttActions, Rollout

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
        from trainer.console.config import CloudConsoleConfig

        return self.config.console or CloudConsoleConfig()

    # ------------------------------------------------------------------ rollouts

    def rollouts(self) -> Dict[str, Any]:
        if self.config.rollout is None:
            return {"configured": False, **rollout_view(None, [], {})}
        rollout = self._rollout_factory()
        try:
            current = rollout.status() if rollout.store.current() is not None else None
            history = rollout.store.all()
        finally:
            rollout.close()
        return {"configured": True, **rollout_view(current, history, self.config.rollout.bounds.model_dump())}

    def promote(self, force: bool) -> Dict[str, Any]:
        rollout = self._rollout_factory()
        try:
            return dict(rollout.promote(force=force))
        finally:
            rollout.close()

    def halt(self, reason: str) -> Dict[str, Any]:
        rollout = self._rollout_factory()
        try:
            return dict(rollout.halt(reason))
        finally:
            rollout.close()

    # ------------------------------------------------------------------ rounds

    def _workdir(self) -> Optional[Path]:
        return None if self.config.rounds is None else Path(self.config.rounds.workdir)

    def rounds(self) -> Dict[str, Any]:
        workdir = self._workdir()
        return {"configured": workdir is not None, **rounds_view(list_rounds(workdir) if workdir else [])}

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
        view = samples_view(rows, tasks, self.config.labelling.label_studio.url, stats)
        view["filters"] = filters
        return view

    def sample_image(self, sid: int) -> bytes:
        db = self._db()
        try:
            row = db.execute("SELECT image_sha256 FROM samples WHERE sid = ?", (sid,)).fetchone()
        finally:
            db.close()
        if row is None:
            raise NotFound(f"no sample {sid}")
        if self._blobs is None:
            from trainer.store.store import open_blobs

            self._blobs = open_blobs(self.config.store)
        return bytes(self._blobs.get(str(row[0])))
