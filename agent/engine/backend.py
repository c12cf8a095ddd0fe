"""The small interface every inference backend implements.

A backend owns one loaded model and runs it on a prepared NCHW tensor; it knows nothing about
frames, letterboxing or boxes. :class:`agent.engine.detector.Detector` does the rest.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
from numpy.typing import NDArray

try:  # Python 3.8 has Protocol in typing already; keep the import explicit for readers.
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore[assignment]


class InferenceBackend(Protocol):
    """One loaded model, ready to run.

    Attributes:
        name: short backend name for logs and metrics (``"onnxruntime"``, ``"tensorrt"``).
        input_shape: ``(B, 3, H, W)``; ``B`` is ``-1`` when the batch dimension is dynamic.
        input_dtype: ``np.float32`` or ``np.float16``: what :meth:`run` expects.
        max_batch: the largest batch :meth:`run` accepts (1 for a static batch-1 model).
        output_names: names of the outputs, in the order :meth:`run` returns them.
    """

    name: str
    input_shape: Tuple[int, int, int, int]
    input_dtype: np.dtype[np.floating]  # type: ignore[type-arg]
    max_batch: int
    output_names: List[str]

    def run(self, batch: NDArray[Any]) -> List[NDArray[Any]]:
        """Run the model on ``batch`` (shape ``(n, 3, H, W)``, ``n <= max_batch``) and return the outputs.

        The returned arrays may be views into backend-owned buffers that the next call overwrites:
        callers copy what they keep.
        """
        ...

    def describe(self) -> Dict[str, object]:
        """Facts for logs and ``status``: providers, device, precision, engine path, versions."""
        ...

    def close(self) -> None:
        """Free the model and any device memory. Idempotent."""
        ...


def static_batch(shape: Sequence[object]) -> int:
    """The batch a model input accepts: its first dimension, or ``-1`` when symbolic or unknown."""
    first = shape[0] if shape else None
    return int(first) if isinstance(first, int) and first > 0 else -1
