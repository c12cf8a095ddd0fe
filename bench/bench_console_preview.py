"""What the box page's live preview costs the four-camera pipeline (issue 16: at most 2 % of its FPS).

    PYTHONPATH=. python bench/bench_console_preview.py [--write]

In one run, with one Detector: bench_cameras' four synthetic 1080p cameras through the daemon's pipeline
(offered 1.2 x the engine limit, so the pipeline is the bottleneck and any CPU the preview takes shows), in
alternating phases (off, on, on, off, ...; ``--pairs`` pairs) so that drift in the machine's load hits both:

- **off**: no console;
- **on**: the console's HTTP server (``agent.console.server.ConsoleServer``) on the pipeline's preview frames,
  and ``--viewers`` browsers (threads) each fetching every camera's preview the way the page does (one GET per
  camera every 1 / preview_fps s over real loopback HTTP).

The ratio is the mean aggregate FPS with the preview over the mean without. Also reported: renders per second
(at most cameras x preview_fps, however many viewers), the console's CPU per render, previews served.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.app.pipeline import Pipeline
from agent.console.config import ConsoleConfig
from agent.console.preview import PreviewImage, PreviewRenderer
from agent.console.server import ConsoleServer
from agent.engine import Detector, OnnxRuntimeConfig
from agent.memory import release_free_memory
from agent.synthetic.render import render_stream_frames
from bench.bench_cameras import pipeline_run, single_stream, start_cameras
from bench.common import machine, write_section

TARGET_RATIO = 0.98


class PipelinePreviews:
    """A ConsoleSource with only the preview (what the bench measures); the rest is not served."""

    def __init__(self, pipeline: Pipeline, config: ConsoleConfig) -> None:
        self.pipeline = pipeline
        self.renderer = PreviewRenderer(
            lambda cam: r.preview if (r := pipeline.cameras.get(cam)) is not None else None,
            config.preview_fps,
            config.preview_width,
            config.preview_jpeg_quality,
        )

    def state(self) -> Dict[str, Any]:
        return {}

    def cameras(self) -> List[str]:
        return list(self.pipeline.cameras)

    def preview(self, camera: str) -> Optional[PreviewImage]:
        return self.renderer.image(camera)

    def output_jpeg(self, output_id: str) -> Optional[bytes]:
        return None

    def command(self, command: Any) -> Any:
        raise NotImplementedError("the bench sends no commands")


def viewers_attached(
    config: ConsoleConfig, viewers: int, record: Dict[str, Any]
) -> Callable[[Pipeline], Callable[[], None]]:
    def attach(pipeline: Pipeline) -> Callable[[], None]:
        source = PipelinePreviews(pipeline, config)
        server = ConsoleServer(config, source, "edge/bench/box/cmd")
        server.start()
        stop = threading.Event()
        served = [0]

        def viewer() -> None:
            period = 1.0 / config.preview_fps
            while not stop.is_set():
                began = time.monotonic()
                for camera in list(pipeline.cameras):
                    try:
                        with urllib.request.urlopen(
                            f"http://127.0.0.1:{server.port}/api/preview/{camera}.jpg", timeout=5
                        ) as r:
                            r.read()
                            served[0] += 1
                    except OSError:
                        pass  # no frame yet (503) or shutting down
                stop.wait(max(0.0, period - (time.monotonic() - began)))

        threads = [threading.Thread(target=viewer, name=f"viewer-{i}", daemon=True) for i in range(viewers)]
        for t in threads:
            t.start()
        began = time.monotonic()

        def detach() -> None:
            stop.set()
            for t in threads:
                t.join(5)
            server.stop()
            seconds = time.monotonic() - began
            record.setdefault("renders_per_s", []).append(source.renderer.renders / seconds)
            record.setdefault("served_per_s", []).append(served[0] / seconds)
            record.setdefault("render_ms", []).append(
                1e3 * source.renderer.render_cpu_s / max(1, source.renderer.renders)
            )

        return detach

    return attach


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/demo/demo-int8.onnx"))
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0, help="Length of each phase.")
    parser.add_argument("--pairs", type=int, default=3, help="Phases off/on, alternating (ABBA), this many pairs.")
    parser.add_argument("--viewers", type=int, default=2, help="Browsers watching every camera at once.")
    parser.add_argument("--preview-fps", type=float, default=ConsoleConfig().preview_fps)
    parser.add_argument(
        "--write", action="store_true", help="Replace the console-preview section of docs/BENCHMARKS.md."
    )
    args = parser.parse_args(argv)
    size = (1080, 1920)
    detector = Detector.open(args.model, OnnxRuntimeConfig(intra_op_threads=1))
    frames = []
    for seed in range(args.cameras):
        frames += [f.image for f in render_stream_frames("factory", seed, range(4), size)]
    limit = single_stream(detector, frames, 5.0)["fps"]
    del frames
    release_free_memory()
    fps = 1.2 * limit / args.cameras
    config = ConsoleConfig(enabled=True, port=0, preview_fps=args.preview_fps)
    record: Dict[str, Any] = {}
    phases: Dict[str, List[Dict[str, Any]]] = {"off": [], "on": []}
    order = [("off", "on") if i % 2 == 0 else ("on", "off") for i in range(args.pairs)]
    sources = start_cameras(args.cameras, size, fps, 4)
    try:
        for n, pair in enumerate(order):
            for mode in pair:
                attach = viewers_attached(config, args.viewers, record) if mode == "on" else None
                result = pipeline_run(detector, sources, size, fps, 4, args.seconds, attach=attach)
                phases[mode].append(result)
                print(f"pair {n + 1}/{len(order)} preview {mode:3}: {result['aggregate_fps']:.2f} FPS", flush=True)
    finally:
        for source in sources:
            source.stop(2.0)
    off = statistics.mean(r["aggregate_fps"] for r in phases["off"])
    on = statistics.mean(r["aggregate_fps"] for r in phases["on"])
    render_ms = statistics.mean(record["render_ms"])
    renders = statistics.mean(record["renders_per_s"])
    ratio = on / off

    def each(mode: str) -> str:
        return ", ".join(f"{r['aggregate_fps']:.2f}" for r in phases[mode])

    lines = [
        "## The box page's live preview against the four-camera pipeline (issue 16)",
        "",
        f"Machine: {machine()}. Reproduce: `PYTHONPATH=. .venv/bin/python bench/bench_console_preview.py --write`.",
        "",
        f"{args.cameras} synthetic 1080p cameras offered {fps:.2f} FPS each"
        f" (1.2 x the engine limit of {limit:.2f} FPS),",
        f"INT8 demo model, ONNX Runtime 1 thread; {args.pairs} pairs of {args.seconds:.0f} s phases, alternating;",
        f"preview: {args.viewers} viewers each fetching all {args.cameras} cameras at {args.preview_fps:g} FPS"
        " over loopback HTTP,",
        f"{config.preview_width} px wide, JPEG quality {config.preview_jpeg_quality}.",
        "",
        "| | aggregate FPS (each phase) | mean |",
        "|---|---|---:|",
        f"| preview off | {each('off')} | {off:.2f} |",
        f"| preview on | {each('on')} | {on:.2f} |",
        "",
        f"- **ratio on / off: {ratio:.3f}** (target ≥ {TARGET_RATIO}: {'met' if ratio >= TARGET_RATIO else 'NOT met'})",
        f"- renders: {renders:.1f} per second"
        f" (cap: {args.cameras} x {args.preview_fps:g} = {args.cameras * args.preview_fps:g}),"
        f" previews served: {statistics.mean(record['served_per_s']):.1f} per second",
        f"- console CPU: {render_ms:.1f} ms per render, {render_ms * renders:.0f} ms per second"
        " (resize, drawing, JPEG; in the console's threads)",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("console-preview", text)
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
