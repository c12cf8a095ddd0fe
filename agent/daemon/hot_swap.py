"""Which model runs: the one to start with, the first model that OTA brings to a box started without one, and
hot swaps (event loop; the loads run in a loader thread, the swap itself on the inference thread).

The state it changes is the daemon's :class:`~agent.app.live.LiveState` (``pipeline``, ``model_path``,
``model_error``); the OTA worker asks for a swap through :meth:`HotSwap.sync` after every install, rollback
or install by another process, and starts a trial's probation from the :class:`Serving` it returns.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Callable, Dict, Optional, Union

import structlog

from agent.app.live import LiveState
from agent.app.model_updates import ModelUpdateService, Serving
from agent.app.pipeline import ModelInfo, OutputWriter, Pipeline
from agent.app.tasks import in_thread, settle
from agent.config import ConfigError
from agent.engine.config import OnnxRuntimeConfig, TensorRTConfig
from agent.engine.detector import Detector
from agent.ota.installer import Installer
from agent.threads import Supervisor

__all__ = ["Backend", "DetectorFactory", "HotSwap", "default_detector_factory", "new_pipeline", "open_start_model"]

log = structlog.get_logger("agent.daemon")

Backend = Union[OnnxRuntimeConfig, TensorRTConfig]
DetectorFactory = Callable[[Path, Backend], Detector]
"""Builds a Detector from a model path and backend config (the seam tests use for a blocking backend)."""


def default_detector_factory(path: Path, backend: Backend) -> Detector:
    return Detector.open(path, backend)


def model_problem(path: Optional[Path], exc: BaseException) -> str:
    """Why a model does not run, naming its file once (engine errors name it already)."""
    text = str(exc)
    return text if path is None or str(path) in text else f"{path}: {text}"


async def load_detector(live: LiveState, factory: DetectorFactory, path: Path) -> Detector:
    """Build a detector for ``path`` in a loader thread (a model load blocks for seconds)."""
    backend = live.config.model.backend
    return await in_thread(lambda: factory(path, backend), "model-loader")


async def open_start_model(
    live: LiveState, factory: DetectorFactory, updates: Optional[ModelUpdateService]
) -> Optional[Detector]:
    """The model to start with: the active release's, else the factory one. ``None`` (and ``model_error``)
    when it does not load but OTA can bring another: the daemon then stays up and waits for a release
    instead of failing into a restart loop every 5 s."""
    cfg = live.config
    if updates is not None:
        active = await updates.start()
        if active is not None:
            live.model_path = Path(active)
    try:
        if live.model_path is None:
            if cfg.model.path is None:
                raise ConfigError(["model.path: no model configured and no OTA release installed"])
            live.model_path = cfg.model.path
        return await load_detector(live, factory, live.model_path)
    except Exception as exc:
        if updates is None:
            raise  # nothing could ever bring a model: fail the start (exit 3), as a configuration error does
        live.model_error = model_problem(live.model_path, exc)
        live.model_path = None
        log.error("model_unavailable_waiting_for_a_release", error=live.model_error)
        return None


def release_of_active(installer: Optional[Installer]) -> Optional[Dict[str, str]]:
    record = None if installer is None else installer.state().active
    return None if record is None else {"name": record.name, "version": record.version}


def new_pipeline(
    live: LiveState,
    detector: Detector,
    writer: OutputWriter,
    supervisor: Supervisor,
    installer: Optional[Installer],
) -> Pipeline:
    """The pipeline for ``detector``, named after the active release (if any)."""
    release = release_of_active(installer)
    info = ModelInfo.of(detector, release["name"] if release else None, release["version"] if release else None)
    return Pipeline(
        detector,
        info,
        live.config.model.decode_params(),
        writer,
        supervisor=supervisor,
        keep_previews=live.config.console.enabled,
    )


class HotSwap:
    """Brings up and swaps the model in ``live`` (event loop).

    Args:
        live: the daemon's state (its ``pipeline``, ``model_path`` and ``model_error`` are written here).
        factory: builds detectors.
        writer: the output writer a new pipeline hands its outputs to.
        supervisor: the supervisor of the pipeline's threads.
        installer: the OTA installer (``None``: OTA is not configured; nothing is ever swapped).
        on_first_model: called once a box started without a model runs one (starts the cameras).
    """

    def __init__(
        self,
        live: LiveState,
        factory: DetectorFactory,
        writer: OutputWriter,
        supervisor: Supervisor,
        installer: Optional[Installer],
        on_first_model: Callable[[], None],
    ) -> None:
        self._live = live
        self._factory = factory
        self._writer = writer
        self._supervisor = supervisor
        self._installer = installer
        self._on_first_model = on_first_model
        self._swap_lock = asyncio.Lock()  # made on the loop (Python 3.8 binds a lock to the loop it is made on)

    async def sync(self) -> Serving:
        """Swap the detector when the installer's active model differs from the one running (or bring up the
        pipeline and the cameras when the daemon started without a model). Returns what runs now: the OTA
        worker starts a trial's probation from it (an install by another process is noticed the same way)."""
        live = self._live
        if self._installer is None:
            return Serving(live.model_path)
        if live.pipeline is None:
            await self.first_model()
            wanted = self._installer.active_model_path()
            return Serving(live.model_path, wanted, None if live.pipeline is not None else live.model_error)
        async with self._swap_lock:
            path = self._installer.active_model_path()
            if path is None or path == live.model_path:
                return Serving(live.model_path)
            record = self._installer.state().active
            ok = await self.swap_model(Path(path), record.name if record else None, record.version if record else None)
            return Serving(live.model_path, Path(path), None if ok else "it did not load or the pipeline refused it")

    async def first_model(self) -> None:
        """Bring up the pipeline with the installer's active model, then the cameras (a box started without
        a model that loads)."""
        live, installer = self._live, self._installer
        assert installer is not None
        async with self._swap_lock:
            path = installer.active_model_path()
            if path is None or live.pipeline is not None:
                return
            try:
                detector = await load_detector(live, self._factory, Path(path))
            except Exception as exc:
                live.model_error = model_problem(Path(path), exc)
                log.error("model_load_failed", path=str(path), error=str(exc))
                return
            live.pipeline = new_pipeline(live, detector, self._writer, self._supervisor, installer)
            live.model_path, live.model_error = Path(path), None
            log.info("model_loaded", recovered=True, **{k: str(v) for k, v in detector.describe().items()})
            self._on_first_model()

    async def swap_model(self, path: Path, name: Optional[str] = None, version: Optional[str] = None) -> bool:
        """Build a detector for ``path`` off the loop, then swap it in between batches. False if refused."""
        live = self._live
        pipeline = live.pipeline
        assert pipeline is not None
        try:
            detector = await load_detector(live, self._factory, path)
        except Exception as exc:
            log.error("model_load_failed", path=str(path), error=str(exc))
            live.errors.append(f"model load failed: {exc}")
            return False
        info = ModelInfo.of(detector, name, version)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Optional[Exception]] = loop.create_future()

        def finished(err: Optional[Exception]) -> None:
            loop.call_soon_threadsafe(settle, done, err, None)

        pipeline.swap_detector(detector, info, finished)
        error = await done
        if error is None:
            live.model_path = path
            return True
        return False
