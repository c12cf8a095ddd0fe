"""A release's compatibility contract: what its model presents to the pipeline, checked against what runs.

A validly signed release can still be wrong for a box: another class list (the alert rules would name
classes that no longer exist, or ids that now mean something else), another input size (another cost per
frame, other engines), another output layout. Signatures say who made a release, not that it fits. So
before the switch the installer reads the candidate's :class:`ModelInterface` from the model file itself
and calls :func:`check_interface`:

- every class the configured alert rules name must exist in the candidate (no override: the pipeline
  would refuse the model anyway);
- a class list, input size or output layout that differs from the running model's is ``incompatible``
  unless the release's manifest *declares* the change (``model.changes``) **and** the device's
  configuration accepts it: ``accept_class_changes`` (or alert rules that name classes only by name, all
  present in the candidate), ``accept_input_size_changes``, ``accept_output_layout_changes``.

:func:`reference_agreement` is the other half: the health check runs the *current* model on the golden
images the device trusts and asks how much of what it found confidently the candidate still finds, so
that a release with golden expectations recorded from itself cannot vouch for itself.

Pure: dataclasses and numpy in, :class:`~agent.core.release.IncompatibleReleaseError` out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AbstractSet, Any, FrozenSet, List, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import NDArray

from agent.core.nms import box_iou
from agent.core.release import INTERFACE_CHANGES, IncompatibleReleaseError

__all__ = [
    "INTERFACE_CHANGES",
    "ClassNeeds",
    "ModelInterface",
    "ReferenceAgreement",
    "check_interface",
    "reference_agreement",
]


@dataclass(frozen=True)
class ModelInterface:
    """What a model presents to the pipeline.

    Attributes:
        classes: class names, index = class id.
        input_size: model input ``(height, width)``.
        layout: output layout name (``raw``, ``end2end``, ``efficient_nms``; see ``agent.core.decode``).
    """

    classes: Tuple[str, ...]
    input_size: Tuple[int, int]
    layout: str

    def describe(self, what: str) -> str:
        if what == "classes":
            return str(list(self.classes))
        if what == "input_size":
            return f"{self.input_size[1]}x{self.input_size[0]}"
        return self.layout


@dataclass(frozen=True)
class ClassNeeds:
    """The classes this box's configuration refers to (alert rules of every enabled camera).

    Attributes:
        names: classes named by name (``person``).
        ids: classes named by id (``0``): their meaning moves with any change of the class list.
        where: for messages, which rule names what: ``"camera/rule=class"`` strings.
    """

    names: FrozenSet[str] = frozenset()
    ids: FrozenSet[int] = frozenset()
    where: Tuple[str, ...] = ()


_WHAT = {"classes": "the class list", "input_size": "the input size", "output_layout": "the output layout"}


def _differs(what: str, a: ModelInterface, b: ModelInterface) -> bool:
    if what == "classes":
        return a.classes != b.classes
    if what == "input_size":
        return a.input_size != b.input_size
    return a.layout != b.layout


def check_interface(
    candidate: ModelInterface,
    current: Optional[ModelInterface],
    declared: AbstractSet[str],
    needs: ClassNeeds,
    accepted: AbstractSet[str],
) -> None:
    """Refuse a candidate model that does not fit what the box runs and what its configuration names.

    Args:
        candidate: the release's model, as read from its file.
        current: the model served now (``None``: nothing runs yet; only ``needs`` applies).
        declared: the interface changes the release's manifest declares (subset of ``INTERFACE_CHANGES``).
        needs: classes the box's alert rules name.
        accepted: the changes the box's configuration accepts (subset of ``INTERFACE_CHANGES``).

    Raises:
        IncompatibleReleaseError: ``what`` is ``classes``, ``input_size`` or ``output_layout``.
    """
    missing = sorted(needs.names - set(candidate.classes))
    if missing:
        refs = [w for w in needs.where if w.rsplit("=", 1)[-1] in missing]
        raise IncompatibleReleaseError(
            f"the alert rules name {missing} ({', '.join(refs) or 'rules'}), which the release's model does not "
            f"have (its classes: {list(candidate.classes)})",
            "classes",
        )
    bad_ids = sorted(i for i in needs.ids if i >= len(candidate.classes))
    if bad_ids:
        raise IncompatibleReleaseError(
            f"the alert rules name class ids {bad_ids}; the release's model has {len(candidate.classes)} classes",
            "classes",
        )
    if current is None:
        return
    for what in INTERFACE_CHANGES:
        if not _differs(what, candidate, current):
            continue
        change = f"{_WHAT[what]} changes from {current.describe(what)} to {candidate.describe(what)}"
        if what not in declared:
            raise IncompatibleReleaseError(
                f"{change} and the release does not declare that change (manifest model.changes)", what
            )
        if what in accepted:
            continue
        if what == "classes" and not needs.ids:
            # Rules that name classes only by name, all present (checked above), mean the same after the change.
            continue
        hint = {
            "classes": "alert rules name classes by id; set ota.accept_class_changes to take it",
            "input_size": "set ota.accept_input_size_changes to take it",
            "output_layout": "set ota.accept_output_layout_changes to take it",
        }[what]
        raise IncompatibleReleaseError(f"{change}: declared, but this box does not accept it ({hint})", what)


@dataclass(frozen=True)
class ReferenceAgreement:
    """How much of the current model's confident output the candidate reproduces on one image.

    Attributes:
        reference: confident reference detections of classes the candidate has.
        found: how many of them the candidate matched (same class name, IoU at least the threshold).
    """

    reference: int
    found: int

    @property
    def share(self) -> float:
        return 1.0 if self.reference == 0 else self.found / self.reference


def reference_agreement(
    ref_xyxy: NDArray[Any],
    ref_conf: NDArray[Any],
    ref_cls: NDArray[Any],
    ref_names: Sequence[str],
    cand_xyxy: NDArray[Any],
    cand_cls: NDArray[Any],
    cand_names: Sequence[str],
    min_conf: float,
    min_iou: float,
) -> ReferenceAgreement:
    """Match the reference model's detections above ``min_conf`` to the candidate's, by class *name*.

    Shapes: ``ref_xyxy (N, 4)``, ``ref_conf (N,)``, ``ref_cls (N,)``; ``cand_xyxy (M, 4)``, ``cand_cls (M,)``.
    Greedy one-to-one matching, most confident reference first. Extra candidate detections are not
    counted against it (finding more is what retraining is for); reference classes the candidate does
    not have (a declared, accepted class change) are left out.
    """
    keep = np.asarray(ref_conf, np.float32) >= np.float32(min_conf)
    order = np.argsort(-np.asarray(ref_conf, np.float32)[keep], kind="stable")
    r_xyxy = np.asarray(ref_xyxy, np.float32).reshape(-1, 4)[keep][order]
    r_names = [ref_names[int(c)] if 0 <= int(c) < len(ref_names) else "" for c in np.asarray(ref_cls)[keep][order]]
    c_names = [cand_names[int(c)] if 0 <= int(c) < len(cand_names) else "" for c in np.asarray(cand_cls)]
    c_xyxy = np.asarray(cand_xyxy, np.float32).reshape(-1, 4)
    present = set(cand_names)
    counted: List[int] = [i for i, n in enumerate(r_names) if n in present]
    if not counted or len(c_xyxy) == 0:
        return ReferenceAgreement(len(counted), 0)
    iou = box_iou(r_xyxy, c_xyxy)
    used = np.zeros((len(c_xyxy),), bool)
    found = 0
    for i in counted:
        best, best_iou = -1, float(min_iou)
        for j in range(len(c_xyxy)):
            if not used[j] and c_names[j] == r_names[i] and float(iou[i, j]) >= best_iou:
                best, best_iou = j, float(iou[i, j])
        if best >= 0:
            used[best] = True
            found += 1
    return ReferenceAgreement(len(counted), found)
