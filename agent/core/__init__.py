"""The pure core: everything the agent decides without I/O, threads or third-party runtimes (numpy only).

Not only maths: the rules and checks that have to be right live here too, so that they are tested as pure
functions of their inputs::

    letterbox.py     frame geometry: letterbox and its inverse
    decode.py        the three YOLO output layouts -> boxes, scores, classes
    nms.py           class-aware NMS (vectorised)
    detections.py    Detections, the numpy dataclass every stage passes on
    tracker.py       the tracker (track consistency for triage)
    zones.py         zone polygons; alerts.py the alert rules
    triage.py        which frames are worth a label (uncertain, inconsistent, flagged, random) and the budget
    release.py       a release manifest's checks (TUF-verified bytes in, a verdict out)
    interface.py     a release's compatibility contract (classes, input size, layout)
    model_meta.py    model metadata; onnx_proto.py reads it from ONNX bytes without the onnx package
    backoff.py       the one jittered retry backoff (link, cameras, model updates)
"""
