"""The inference loop: newest frames of every camera -> one shared Detector (batched) -> tracker, alert rules,
triage -> outputs (JPEG + lineage) -> the durable spool.

Modules, in a frame's order: ``cameras.py`` (a camera's runtime state) -> ``inference.py`` (``Pipeline.step``:
batch, detector, the ``rules`` stage) -> ``outputs.py`` + ``output_queue.py`` (encoding, the spool);
``common.py`` (what they share). Every thread is an :class:`agent.threads.Worker` under the daemon's supervisor.

Threads::

    inference     a SerialWorker: runs Pipeline.step() calls handed to it by the daemon's asyncio task;
                  everything that touches the Detector, trackers, alert and triage state runs here, so none
                  of it needs a lock. Changes from elsewhere (commands, reload, model swap) are queued as
                  operations and applied at the start of the next step: between batches.
    output-writer OutputWriter: JPEG encoding, message building and Spool.put (an fsync per put), so a slow
                  or full disk never stalls inference. Its queue never blocks: when full, samples and
                  snapshots are dropped and alerts evict them (all counted by kind).

Hot swap: the daemon builds the new Detector off the loop (a loader thread), then queues
:meth:`Pipeline.swap_detector`; the next step swaps it in before collecting frames and closes the old one.
No frame is lost to the swap: frames are taken only inside a step.

Per-camera FPS limits are applied by the camera sources (``CameraConfig.fps_limit``): a source delivers at
most that rate, and the pipeline takes each delivered frame at most once.
"""

from agent.app.pipeline.cameras import CameraRuntime, CameraStats, CameraStatsSnapshot, PreviewFrame
from agent.app.pipeline.common import (
    FRAME_WAIT_S,
    LATENCY_WINDOW,
    STEP_BUDGET_S,
    ModelInfo,
    QualitySnapshot,
    near_duplicate_thumbnail,
    percentile,
)
from agent.app.pipeline.inference import (
    THRESHOLD_NAMES,
    Pipeline,
    PipelineCounters,
    RulesTiming,
    _RulesStage,
    rules_with_thresholds,
)
from agent.app.pipeline.outputs import OutputCounters, OutputJob, OutputWriter, encode_jpeg

__all__ = [
    "FRAME_WAIT_S",
    "LATENCY_WINDOW",
    "STEP_BUDGET_S",
    "THRESHOLD_NAMES",
    "CameraRuntime",
    "CameraStats",
    "CameraStatsSnapshot",
    "ModelInfo",
    "OutputCounters",
    "OutputJob",
    "OutputWriter",
    "Pipeline",
    "PipelineCounters",
    "PreviewFrame",
    "QualitySnapshot",
    "RulesTiming",
    "_RulesStage",
    "encode_jpeg",
    "near_duplicate_thumbnail",
    "percentile",
    "rules_with_thresholds",
]
