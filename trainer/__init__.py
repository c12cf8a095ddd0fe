"""Cloud trainer: ingest what the fleet sends, get it labelled, fine-tune, gate, sign and roll out releases.

Every package, from the top floor down::

    trainer.commands     every ``edge-trainer`` command's options and wiring (trainer/cli.py assembles them,
                         trainer/settings.py is ``trainer.yaml``); nothing below imports it
    trainer.fleet_pages  the fleet pages (``edge-trainer console``): routes, data, the pages' documents
    trainer.rollout      staged rollouts: the pure stage decision, its durable state, the driver
    trainer.rounds       learning rounds: the policy that starts one, its steps, the gate, the report
    trainer.labelling    Label Studio round trip, YOLO / COCO sets, the oracle (a stand-in for review)
    trainer.ingest       ``edge-trainer serve``: MQTT -> decode -> the store, acknowledged once durable
    trainer.store        the sample store (blobs + SQLite index) and the fleet registry
    trainer.release      signed releases: keys, the TUF repository, bundles, the MQTT push, refresh
    trainer.devices      the site PKI: CA, device and broker certificates, CRL
    train.py, evaluate.py, export.py, scoring.py, graph_rewrite.py   Ultralytics training, its metrics,
                         ONNX FP32 + INT8 export and the graph edits it needs
    offline.py           Ultralytics fully offline (no hub, no downloads); loop_demo.py: ``make loop-demo``
    models/              the network architectures Ultralytics trains (YAML)

Depends on ``agent`` (protocol, engine, synthetic scenes, release format), never the reverse.
"""
