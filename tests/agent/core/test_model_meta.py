"""Metadata parsing: Ultralytics' literal strings, and every inconsistency reported clearly."""

from __future__ import annotations

import pytest

from agent.core.model_meta import MetadataError, parse_model_metadata

GOOD = {"names": "{0: 'bolt', 1: 'nut'}", "imgsz": "[256, 320]", "stride": "32", "task": "detect", "batch": "1"}


def test_parses_ultralytics_strings():
    meta = parse_model_metadata(GOOD, (1, 3, 256, 320))
    assert meta.names == {0: "bolt", 1: "nut"}
    assert meta.imgsz == (256, 320)
    assert meta.stride == 32
    assert meta.batch == 1
    assert not meta.end2end


def test_dynamic_graph_takes_imgsz_from_metadata():
    meta = parse_model_metadata(GOOD, ("batch", 3, "height", "width"))
    assert meta.imgsz == (256, 320)
    assert meta.batch == -1


def test_names_as_list_and_end2end_flag():
    meta = parse_model_metadata({**GOOD, "names": "['a', 'b', 'c']", "end2end": "True"}, (1, 3, 256, 320))
    assert meta.names == {0: "a", 1: "b", 2: "c"}
    assert meta.end2end


@pytest.mark.parametrize(
    ("props", "dims", "message"),
    [
        ({k: v for k, v in GOOD.items() if k != "names"}, (1, 3, 256, 320), "no 'names' metadata"),
        ({**GOOD, "names": "{0: 'a', 2: 'b'}"}, (1, 3, 256, 320), "ids must be 0..1"),
        ({**GOOD, "names": "__import__('os').system('true')"}, (1, 3, 256, 320), "not a Python literal"),
        ({**GOOD, "names": "{}"}, (1, 3, 256, 320), "non-empty"),
        ({**GOOD, "imgsz": "[640, 640]"}, (1, 3, 256, 320), "contradicts the graph"),
        ({**GOOD, "imgsz": "[0, 64]"}, ("b", 3, "h", "w"), "positive ints"),
        ({k: v for k, v in GOOD.items() if k != "imgsz"}, ("b", 3, "h", "w"), "no 'imgsz'"),
        ({**GOOD, "task": "segment"}, (1, 3, 256, 320), "'detect' models only"),
        ({**GOOD, "stride": "'x'"}, (1, 3, 256, 320), "stride"),
        ({**GOOD, "imgsz": "[250, 320]"}, (1, 3, 250, 320), "multiple of the stride"),
        (GOOD, (1, 1, 256, 320), "3 channels"),
        (GOOD, (1, 3, 256), "4-D"),
    ],
)
def test_inconsistent_metadata_is_rejected(props, dims, message):
    with pytest.raises(MetadataError, match=message):
        parse_model_metadata(props, dims)
