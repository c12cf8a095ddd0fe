"""``edge-agent detect``: run the detector on an image, a video or a folder and print what it found.

For videos, decoding and letterboxing run in a reader thread, one frame ahead of inference, so the
CPU-bound decode overlaps the model (OpenCV and ONNX Runtime both release the GIL).
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, TextIO, Tuple

from numpy.typing import NDArray

from agent.core.decode import DecodeParams
from agent.engine import Detector, EngineError, OnnxRuntimeConfig, PreparedFrame
from agent.imaging import MediaError, VideoFile, annotate, describe_frame, list_source, opencv, read_image

_END = object()


class PreparedVideo:
    """Decode and letterbox a video in a named background thread, ``depth`` frames ahead."""

    def __init__(self, video: VideoFile, detector: Detector, depth: int = 2) -> None:
        self._video = video
        self._detector = detector
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"decode:{video.path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for frame in self._video:
                prepared = self._detector.prepare(frame)
                while not self._stop.is_set():
                    try:
                        self._queue.put((frame, prepared), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._error = exc
        finally:
            self._queue.put(_END)

    def __iter__(self) -> Iterator[Tuple[NDArray[Any], PreparedFrame]]:
        while True:
            item = self._queue.get()
            if item is _END:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._video.close()


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "detect",
        help="detect objects in an image, video or folder",
        description="Run the detector on an image, a video or a folder of images; print detections.",
    )
    p.add_argument("--model", required=True, type=Path, help="ONNX model file (Ultralytics export)")
    p.add_argument("--source", required=True, type=Path, help="image, video or folder of images")
    p.add_argument("--conf", type=float, default=0.25, help="confidence threshold (default 0.25)")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7)")
    p.add_argument("--max-det", type=int, default=300, help="at most this many boxes per frame")
    p.add_argument("--classes", type=int, nargs="+", help="keep only these class ids")
    p.add_argument("--json", action="store_true", help="print one JSON object per frame (JSON lines)")
    p.add_argument("--save", type=Path, help="write annotated images (and videos) into this folder")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    p.add_argument(
        "--providers",
        nargs="+",
        default=["CPUExecutionProvider"],
        choices=["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        help="ONNX Runtime execution providers in order of preference",
    )
    p.set_defaults(handler=run)


def _emit(out: TextIO, as_json: bool, record: dict) -> None:  # type: ignore[type-arg]
    if as_json:
        out.write(json.dumps(record) + "\n")
        return
    dets = record["detections"]
    head = f"{record['source']}"
    if record["frame"] or record["source"].lower().endswith((".mp4", ".avi", ".mkv", ".mov")):
        head += f" frame {record['frame']}"
    summary = ", ".join(f"{d['class_name']} {d['confidence']:.2f}" for d in dets) or "no detections"
    out.write(f"{head} ({record['width']}x{record['height']}): {len(dets)} ({summary})\n")
    for d in dets:
        x1, y1, x2, y2 = d["xyxy"]
        out.write(f"    {d['class_name']:<16} {d['confidence']:.3f}  [{x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f}]\n")


def run(args: argparse.Namespace, out: Optional[TextIO] = None, err: Optional[TextIO] = None) -> int:
    """Exit codes: 0 ok, 2 bad input (model, source, arguments)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        params = DecodeParams(
            conf=args.conf,
            iou=args.iou,
            max_det=args.max_det,
            classes=tuple(args.classes) if args.classes else None,
        )
    except ValueError as exc:
        err.write(f"error: {exc}\n")
        return 2
    try:
        kind, files = list_source(args.source)
        detector = Detector.open(args.model, OnnxRuntimeConfig(providers=args.providers, intra_op_threads=args.threads))
    except (MediaError, EngineError) as exc:
        err.write(f"error: {exc}\n")
        return 2
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)
    names = detector.names
    frames = 0
    failures: List[str] = []
    started = time.perf_counter()
    try:
        for path in files:
            if path.suffix.lower() in (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mjpeg", ".mjpg"):
                try:
                    frames += _run_video(path, detector, params, names, args, out, err)
                except MediaError as exc:
                    if kind != "dir":
                        err.write(f"error: {exc}\n")
                        return 2
                    failures.append(str(exc))
                continue
            try:
                image = read_image(path)
            except MediaError as exc:
                if kind != "dir":
                    err.write(f"error: {exc}\n")
                    return 2
                failures.append(str(exc))  # one bad file in a folder must not hide the others
                continue
            dets = detector.detect([image], params)[0]
            frames += 1
            t = detector.last_times
            timing = {"preprocess": t.preprocess_ms, "inference": t.inference_ms, "postprocess": t.postprocess_ms}
            _emit(out, args.json, describe_frame(path, 0, image, dets, names, timing))
            if args.save is not None:
                opencv().imwrite(str(args.save / (path.stem + ".jpg")), annotate(image, dets, names))
    finally:
        detector.close()
    elapsed = time.perf_counter() - started
    for failure in failures:
        err.write(f"skipped: {failure}\n")
    err.write(f"{frames} frame(s) in {elapsed:.2f} s ({frames / max(elapsed, 1e-9):.1f} frames/s)\n")
    if frames == 0:
        err.write("error: no frame could be read\n")
        return 2
    return 0


def _run_video(
    path: Path,
    detector: Detector,
    params: DecodeParams,
    names: Any,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
) -> int:
    video = VideoFile(path)
    writer = None
    if args.save is not None:
        cv2 = opencv()
        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
        h, w = video.size
        writer = cv2.VideoWriter(str(args.save / (path.stem + ".mp4")), fourcc, video.fps or 25.0, (w, h))
    reader = PreparedVideo(video, detector)
    count = 0
    last_report = time.perf_counter()
    try:
        for frame, prepared in reader:
            dets = detector.detect_prepared([prepared], params)[0]
            _emit(out, args.json, describe_frame(path, count, frame, dets, names))
            if writer is not None:
                writer.write(annotate(frame, dets, names))
            count += 1
            now = time.perf_counter()
            if now - last_report > 2.0 and video.frame_count > 0:
                err.write(f"{path.name}: {count}/{video.frame_count} frames\n")
                last_report = now
    finally:
        reader.close()
        if writer is not None:
            writer.release()
    return count
