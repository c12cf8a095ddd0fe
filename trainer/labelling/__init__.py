"""Labelling round trip: Label Studio tasks with pre-annotations, YOLO and COCO sets, the oracle stand-in.

Public surface: the configuration, the class list, YOLO / COCO sets, the Label Studio client, the export and
import round trip, the oracle and the pseudo-labelling teacher.
"""

from __future__ import annotations

from trainer.labelling.classes import classes_of_model, resolve_classes
from trainer.labelling.config import ImageUrlConfig, LabellingConfig, LabelStudioConfig
from trainer.labelling.formats import FormatError, LabelledImage, read_coco, read_yolo, write_coco, write_yolo
from trainer.labelling.label_studio import LabelStudio, LabelStudioAuthError, LabelStudioError
from trainer.labelling.oracle import OracleRefused, oracle_boxes
from trainer.labelling.pseudo import Teacher
from trainer.labelling.roundtrip import (
    ExportResult,
    ImportReport,
    export_to_file,
    export_to_label_studio,
    import_annotations,
    review_with_oracle,
)

__all__ = [
    "ExportResult",
    "FormatError",
    "ImageUrlConfig",
    "ImportReport",
    "LabelStudio",
    "LabelStudioAuthError",
    "LabelStudioConfig",
    "LabelStudioError",
    "LabelledImage",
    "LabellingConfig",
    "OracleRefused",
    "Teacher",
    "classes_of_model",
    "export_to_file",
    "export_to_label_studio",
    "import_annotations",
    "oracle_boxes",
    "read_coco",
    "read_yolo",
    "resolve_classes",
    "review_with_oracle",
    "write_coco",
    "write_yolo",
]
