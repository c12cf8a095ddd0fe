"""Which class names a labelling task offers: given on the command line, in trainer.yaml, read from the model
that produced the predictions, or (last) the synthetic scenes' classes."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from agent.engine import EngineError, read_model


def classes_of_model(path: Path) -> List[str]:
    """Class names from an ONNX model's metadata (Ultralytics writes them), in class-id order."""
    try:
        names = read_model(path).metadata.names
    except EngineError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return [names[i] for i in sorted(names)]


def resolve_classes(cli: Optional[str], configured: Sequence[str], model: Optional[Path] = None) -> List[str]:
    """``--classes a,b`` > trainer.yaml ``labelling.classes`` > ``--model`` metadata > the synthetic classes."""
    if cli:
        names = [c.strip() for c in cli.split(",") if c.strip()]
    elif configured:
        names = list(configured)
    elif model is not None:
        names = classes_of_model(model)
    else:
        from agent.synthetic import CLASS_NAMES  # noqa: PLC0415 (agent.synthetic imports OpenCV)

        names = list(CLASS_NAMES)
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"class names must be unique and not empty: {names}")
    return names
