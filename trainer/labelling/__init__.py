"""Labelling round trip: Label Studio tasks with pre-annotations, YOLO and COCO sets, the oracle stand-in."""
