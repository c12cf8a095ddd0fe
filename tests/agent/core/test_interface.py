"""The release compatibility contract (agent.core.interface), table-driven; and the reference agreement."""

from __future__ import annotations

from typing import FrozenSet, Optional

import numpy as np
import pytest

from agent.core.interface import ClassNeeds, ModelInterface, check_interface, reference_agreement
from agent.core.release import IncompatibleReleaseError

DEMO = ModelInterface(("bolt", "nut", "washer"), (256, 256), "raw")
TINY = ModelInterface(("part", "defect"), (64, 64), "raw")
MORE_CLASSES = ModelInterface(("bolt", "nut", "washer", "gear"), (256, 256), "raw")
BIGGER = ModelInterface(("bolt", "nut", "washer"), (320, 320), "raw")
END2END = ModelInterface(("bolt", "nut", "washer"), (256, 256), "end2end")

BY_NAME = ClassNeeds(frozenset({"bolt"}), frozenset(), ("cam1/loose=bolt",))
BY_ID = ClassNeeds(frozenset(), frozenset({0}), ("cam1/any=0",))
NONE = ClassNeeds()
ALL = frozenset({"classes", "input_size", "output_layout"})


def fs(*items: str) -> FrozenSet[str]:
    return frozenset(items)


@pytest.mark.parametrize(
    "candidate, current, declared, needs, accepted, refused_for",
    [
        # same interface: always fine
        (DEMO, DEMO, fs(), BY_NAME, fs(), None),
        (DEMO, DEMO, fs(), BY_ID, fs(), None),
        # nothing runs yet: only the rules apply
        (TINY, None, fs(), NONE, fs(), None),
        (TINY, None, fs(), BY_NAME, ALL, "classes"),
        (DEMO, None, fs(), BY_NAME, fs(), None),
        # the case: 64x64, 2 classes, nothing declared
        (TINY, DEMO, fs(), NONE, fs(), "classes"),
        (TINY, DEMO, fs(), NONE, ALL, "classes"),  # accepting does not help an undeclared change
        # a rule names a class the candidate lacks: never, whatever is declared or accepted
        (TINY, DEMO, ALL, BY_NAME, ALL, "classes"),
        # declared class change, rules by name all present: accepted without the flag
        (MORE_CLASSES, DEMO, fs("classes"), BY_NAME, fs(), None),
        (MORE_CLASSES, DEMO, fs("classes"), NONE, fs(), None),
        # declared class change, a rule names an id: needs the flag
        (MORE_CLASSES, DEMO, fs("classes"), BY_ID, fs(), "classes"),
        (MORE_CLASSES, DEMO, fs("classes"), BY_ID, fs("classes"), None),
        # input size: declared and accepted, both
        (BIGGER, DEMO, fs(), NONE, fs("input_size"), "input_size"),
        (BIGGER, DEMO, fs("input_size"), NONE, fs(), "input_size"),
        (BIGGER, DEMO, fs("input_size"), NONE, fs("input_size"), None),
        # output layout
        (END2END, DEMO, fs(), NONE, ALL, "output_layout"),
        (END2END, DEMO, fs("output_layout"), NONE, fs(), "output_layout"),
        (END2END, DEMO, fs("output_layout"), NONE, fs("output_layout"), None),
        # a rule naming id 2 on a 2-class candidate
        (TINY, None, fs(), ClassNeeds(ids=frozenset({2})), fs(), "classes"),
    ],
)
def test_check_interface(
    candidate: ModelInterface,
    current: Optional[ModelInterface],
    declared: FrozenSet[str],
    needs: ClassNeeds,
    accepted: FrozenSet[str],
    refused_for: Optional[str],
) -> None:
    if refused_for is None:
        check_interface(candidate, current, declared, needs, accepted)
        return
    with pytest.raises(IncompatibleReleaseError) as info:
        check_interface(candidate, current, declared, needs, accepted)
    assert info.value.what == refused_for
    assert info.value.reason == "incompatible"


def test_messages_say_what_changed_and_what_to_do() -> None:
    with pytest.raises(IncompatibleReleaseError, match=r"\['bolt', 'nut', 'washer'\] to \['part', 'defect'\]"):
        check_interface(TINY, DEMO, fs(), NONE, fs())
    with pytest.raises(IncompatibleReleaseError, match=r"256x256 to 320x320.*accept_input_size_changes"):
        check_interface(BIGGER, DEMO, fs("input_size"), NONE, fs())
    with pytest.raises(IncompatibleReleaseError, match=r"\['bolt'\] \(cam1/loose=bolt\)"):
        check_interface(TINY, DEMO, ALL, BY_NAME, ALL)


def boxes(*rows: tuple) -> tuple:
    xyxy = np.array([r[:4] for r in rows], np.float32).reshape(-1, 4)
    conf = np.array([r[4] for r in rows], np.float32)
    cls = np.array([r[5] for r in rows], np.int64)
    return xyxy, conf, cls


@pytest.mark.parametrize(
    "ref, cand, cand_names, expected",
    [
        # identical
        (boxes((0, 0, 10, 10, 0.9, 0)), boxes((0, 0, 10, 10, 0.9, 0)), ("a", "b"), (1, 1)),
        # below the confidence bar: not a reference detection
        (boxes((0, 0, 10, 10, 0.3, 0)), boxes(), ("a", "b"), (0, 0)),
        # wrong class, or too far
        (boxes((0, 0, 10, 10, 0.9, 0)), boxes((0, 0, 10, 10, 0.9, 1)), ("a", "b"), (1, 0)),
        (boxes((0, 0, 10, 10, 0.9, 0)), boxes((20, 20, 30, 30, 0.9, 0)), ("a", "b"), (1, 0)),
        # matched by name across a class reordering
        (boxes((0, 0, 10, 10, 0.9, 0)), boxes((0, 0, 10, 10, 0.9, 1)), ("b", "a"), (1, 1)),
        # a class the candidate does not have is left out
        (boxes((0, 0, 10, 10, 0.9, 1)), boxes(), ("a",), (0, 0)),
        # one candidate box cannot match two reference boxes
        (boxes((0, 0, 10, 10, 0.9, 0), (0, 0, 10, 11, 0.8, 0)), boxes((0, 0, 10, 10, 0.9, 0)), ("a", "b"), (2, 1)),
        # extra candidate boxes do not count against it
        (boxes((0, 0, 10, 10, 0.9, 0)), boxes((0, 0, 10, 10, 0.9, 0), (50, 50, 60, 60, 0.9, 1)), ("a", "b"), (1, 1)),
    ],
)
def test_reference_agreement(ref: tuple, cand: tuple, cand_names: tuple, expected: tuple) -> None:
    a = reference_agreement(ref[0], ref[1], ref[2], ("a", "b"), cand[0], cand[2], cand_names, 0.5, 0.5)
    assert (a.reference, a.found) == expected
    assert a.share == (1.0 if expected[0] == 0 else expected[1] / expected[0])
