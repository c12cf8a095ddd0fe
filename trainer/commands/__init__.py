"""The ``edge-trainer`` commands: each command's argument parsing and wiring, on the top floor. The packages
below (ingest, store, labelling, rounds, rollout, release, devices, fleet_pages, and the train / evaluate / export
modules) hold the domain and know nothing of the command line; only these modules, trainer/cli.py (the entry
point that assembles them) and trainer/settings.py (``trainer.yaml``) read the configuration file.

::

    synth       synth                        render a synthetic data set or conveyor video (agent.synthetic)
    train       train                        train or fine-tune a detector (trainer.train)
    evaluate    evaluate                     mAP on a holdout, regression gate (trainer.evaluate)
    export      export                       ONNX FP32 + INT8 (trainer.export)
    release     keys release repo usb-bundle signing keys, signed releases, metadata refresh (trainer.release)
    push        push                         a release pushed over MQTT (trainer.release.push)
    ingest      serve ingest-status          the ingest service and the rounds policy beside it
    store       samples fleet                the sample store and the fleet registry, for a person
    labelling   label                        the labelling round trip (trainer.labelling)
    rounds      round rounds                 learning rounds (trainer.rounds)
    rollout     rollout                      staged rollouts (trainer.rollout)
    devices     devices                      the site PKI (trainer.devices)
    fleet_pages console                      the fleet pages (trainer.fleet_pages)
    common      the SIGTERM / SIGINT stop event; tables: plain-text tables

``release``, ``push`` and ``devices`` import without torch on Python 3.8 (the agent's tests and the boxes run
them); this package's ``__init__`` imports nothing.
"""
