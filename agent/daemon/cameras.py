"""The cameras of the running daemon: start and stop them on the pipeline, follow their state (event loop).

Each camera source is its own supervised worker (``agent.sources``); its state changes arrive here through a
listener that hops onto the event loop, are kept in the live state and published as the retained camera
status. A reload adds, removes and replaces cameras through :meth:`CameraWiring.add_camera` /
:meth:`CameraWiring.remove_camera` (``agent.app.reload.CameraControl``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Callable, List

import structlog

from agent.app.live import LiveState
from agent.app.pipeline import CameraRuntime
from agent.sources.camera import CameraSource
from agent.sources.config import CameraConfig
from agent.sources.factory import build_source
from agent.sources.frame import SourceStatus
from agent.threads import Supervisor

__all__ = ["CameraWiring", "stop_sources"]

log = structlog.get_logger("agent.daemon")


class CameraWiring:
    """Starts ``live``'s cameras on its pipeline and follows them.

    Args:
        live: the daemon's state (``sources`` and ``camera_status`` are written here, on the loop).
        supervisor: the supervisor of the camera workers.
        loop: the daemon's event loop (state changes are handled there).
        publish: sends a camera's retained status (event loop; its failures are logged, not raised).
    """

    def __init__(
        self,
        live: LiveState,
        supervisor: Supervisor,
        loop: asyncio.AbstractEventLoop,
        publish: Callable[[SourceStatus], None],
    ) -> None:
        self._live = live
        self._supervisor = supervisor
        self._loop = loop
        self._publish = publish
        self.started = asyncio.Event()  # set once the cameras run (a box started without a model waits)

    def start_all(self) -> None:
        for camera in self._live.config.cameras:
            if camera.enabled:
                self.add_camera(camera)
        self.started.set()

    def add_camera(self, camera: CameraConfig) -> None:
        pipeline = self._live.pipeline
        assert pipeline is not None
        source = build_source(camera, supervisor=self._supervisor)
        loop = self._loop

        def listener(status: SourceStatus) -> None:
            loop.call_soon_threadsafe(self._changed, status)

        source.add_listener(listener)
        runtime = CameraRuntime(camera, source, pipeline.class_names)
        pipeline.add_camera(runtime)
        self._live.sources[camera.name] = source
        source.start()
        log.info("camera_started", camera=camera.name, source=camera.source.type)

    def remove_camera(self, name: str) -> None:
        pipeline = self._live.pipeline
        assert pipeline is not None
        supervisor = self._supervisor

        def stopped(runtime: CameraRuntime) -> None:
            def stop() -> None:
                runtime.source.stop()
                supervisor.forget(f"camera-{name}")
                supervisor.forget(f"camera-{name}-watchdog")

            threading.Thread(target=stop, name=f"camera-{name}-stop", daemon=True).start()

        pipeline.remove_camera(name, stopped)
        self._live.camera_status.pop(name, None)
        self._live.sources.pop(name, None)
        log.info("camera_removed", camera=name)

    def refresh(self) -> None:
        """Every camera's counters as they are now (not as they were at its last state change)."""
        for name, source in list(self._live.sources.items()):
            self._live.camera_status[name] = source.status()

    def publish_all(self) -> None:
        for status in list(self._live.camera_status.values()):
            self._publish(status)

    def _changed(self, status: SourceStatus) -> None:
        if status.camera not in self._live.sources:
            return  # a late state change of a camera removed meanwhile
        self._live.camera_status[status.camera] = status
        log.info("camera_state", camera=status.camera, state=status.state.value, reason=status.reason)
        self._publish(status)


def stop_sources(sources: List[CameraSource], timeout: float) -> None:
    """Stop ``sources`` in parallel, each bounded by ``timeout`` (a hung camera must not hold up the rest)."""
    threads = [threading.Thread(target=s.stop, args=(timeout,), daemon=True) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
