"""Edge agent: YOLO detection on Jetson / x86 boxes, alerts and misdetection samples over MQTT, signed OTA.

Where a frame goes, by folder::

    agent.sources        camera readers (RTSP, USB, CSI, files, synthetic): one thread each, newest frame wins
    agent.engine         preprocessing into preallocated tensors, inference backends (ONNX Runtime, TensorRT)
    agent.core           the pure core: geometry, decoders, NMS, tracker, alert and triage rules, manifest checks
    agent.app.pipeline   a frame's path through the daemon: batch -> detector -> rules -> outputs -> spool
    agent.spool          the durable outbound queue (SQLite WAL), bounded by bytes
    agent.link           the MQTT link: publishes the spool, receives commands and model pushes

Every package, from the top floor down::

    agent.daemon         the process's life cycle: assemble the parts in order, supervise, reload, close
    agent.cli            the ``edge-agent`` command line (wiring only)
    agent.app            the services the daemon assembles (pipeline, commands, reports, reload, model
                         updates, the box page's daemon side) and the detect / status / config commands
    agent.box_page       the box page: its routes, page document, previews (no daemon imports)
    agent.web            the one web layer: the HTTP server with a route table, the access rule, the buttons
    agent.observability  logs, the Prometheus endpoint, sd_notify, C libraries' stderr
    agent.ota            signed model updates: TUF trust, fetchers, slots, installer, health check, USB bundles
    agent.link, agent.spool, agent.sources, agent.engine  (above)
    agent.protocol       MQTT message models, topics, parsers of inbound bytes, JSON schemas (pure)
    agent.synthetic      the seeded industrial scene renderer (demo camera, training data, tests)
    agent.core           (above)
    config.py, rules_config.py, strict.py   the configuration (pydantic, one strict base)
    json_schema.py       JSON Schemas of the MQTT messages and the pages' documents (one generator)
    threads.py           the supervised worker every long-lived thread is
    imaging.py           image and video reading, JPEG, annotation (OpenCV, imported lazily)
    memory.py            hands freed memory back to the OS (glibc malloc_trim) after a model swap
"""

from __future__ import annotations

import warnings

__version__ = "0.1.0"

# JetPack 5 ships Python 3.8 for the life of Xavier NX: cryptography's deprecation notice about it is not
# actionable on the box and would land in every CLI run and journal line.
warnings.filterwarnings("ignore", message=r"Python 3\.8 is no longer supported")
