"""Label Studio's task format both ways (pure), table-driven."""

from __future__ import annotations

import pytest

from trainer.labelling.tasks import (
    TaskError,
    annotation_boxes,
    final_annotation,
    from_region,
    label_config,
    task_identity,
    to_region,
)

CLASSES = ["ok", "crack", "scratch"]


@pytest.mark.parametrize(
    ("box", "size"),
    [
        ({"x1": 0, "y1": 0, "x2": 320, "y2": 240, "class_id": 0, "class_name": "ok"}, (320, 240)),
        ({"x1": 10.5, "y1": 20.25, "x2": 60, "y2": 90, "class_id": 1, "class_name": "crack"}, (320, 240)),
        ({"x1": 1900, "y1": 1000, "x2": 1920, "y2": 1080, "class_id": 2, "class_name": "scratch"}, (1920, 1080)),
    ],
)
def test_pixels_to_percent_and_back(box, size):
    region = to_region(box, *size, CLASSES)
    assert region["value"]["rectanglelabels"] == [box["class_name"]]
    assert all(0 <= region["value"][k] <= 100 for k in ("x", "y", "width", "height"))
    back = from_region(region, *size, CLASSES)
    for key in ("x1", "y1", "x2", "y2"):
        assert back[key] == pytest.approx(box[key], abs=0.01)
    assert back["class_id"] == box["class_id"]


def test_boxes_outside_the_image_are_clipped():
    region = to_region(
        {"x1": -5, "y1": -5, "x2": 400, "y2": 10, "class_id": 1, "class_name": "crack"}, 320, 240, CLASSES
    )
    assert region["value"]["x"] == 0 and region["value"]["width"] == 100


@pytest.mark.parametrize(
    ("region", "why"),
    [
        ({"type": "polygonlabels", "value": {}}, "only rectangles"),
        (
            {
                "type": "rectanglelabels",
                "value": {"x": 1, "y": 1, "width": 1, "height": 1, "rotation": 30, "rectanglelabels": ["crack"]},
            },
            "rotated",
        ),
        (
            {
                "type": "rectanglelabels",
                "value": {"x": 1, "y": 1, "width": 1, "height": 1, "rectanglelabels": ["dent"]},
            },
            "classes are",
        ),
        (
            {"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": -1, "height": 1, "rectanglelabels": ["ok"]}},
            "impossible",
        ),
        ({"type": "rectanglelabels", "value": {"x": 1, "rectanglelabels": ["ok"]}}, "without x/y"),
        (
            {
                "type": "rectanglelabels",
                "value": {"x": "nan", "y": 1, "width": 1, "height": 1, "rectanglelabels": ["ok"]},
            },
            "impossible",
        ),
    ],
)
def test_regions_we_do_not_take(region, why):
    with pytest.raises(TaskError, match=why):
        from_region(region, 320, 240, CLASSES)


def test_label_config_escapes_names():
    xml = label_config(['a"b', "<c>"])
    assert "<Label value='a\"b'/>" in xml and "&lt;c&gt;" in xml


@pytest.mark.parametrize(
    "task",
    [
        {},
        {"data": {}},
        {"data": {"evl_export": "x", "evl_sample": "3", "evl_sha256": "a"}},
        {"data": {"evl_export": "x", "evl_sample": True, "evl_sha256": "a"}},
        {"data": {"image": "http://x"}},
    ],
)
def test_tasks_without_our_ids_are_not_ours(task):
    with pytest.raises(TaskError):
        task_identity(task)


def test_final_annotation_is_the_newest():
    task = {
        "annotations": [
            {"id": 1, "updated_at": "2026-01-01T00:00:00Z", "result": []},
            {"id": 3, "updated_at": "2026-01-03T00:00:00Z", "result": []},
            {"id": 2, "updated_at": "2026-01-02T00:00:00Z", "result": []},
        ]
    }
    assert final_annotation(task)["id"] == 3
    assert final_annotation({"annotations": []}) is None
    region = to_region({"x1": 1, "y1": 2, "x2": 3, "y2": 4, "class_id": 2, "class_name": "scratch"}, 10, 10, CLASSES)
    assert annotation_boxes({"result": [region]}, 10, 10, CLASSES)[0]["class_name"] == "scratch"
