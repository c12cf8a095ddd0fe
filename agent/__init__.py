"""Edge agent: YOLO detection on Jetson / x86 boxes, alerts and misdetection samples over MQTT, signed OTA.

Where a frame goes, by folder:

- ``agent.sources``   camera readers (RTSP, USB, CSI, files, synthetic) — one thread each, newest frame wins
- ``agent.engine``    preprocessing into preallocated tensors, inference backends (ONNX Runtime, TensorRT)
- ``agent.core``      pure maths: letterbox geometry, output decoders, NMS, detections
- ``agent.synthetic`` the seeded industrial scene renderer (demo camera, training data, tests)
"""

from __future__ import annotations

import warnings

__version__ = "0.1.0"

# JetPack 5 ships Python 3.8 for the life of Xavier NX: cryptography's deprecation notice about it is not
# actionable on the box and would land in every CLI run and journal line.
warnings.filterwarnings("ignore", message=r"Python 3\.8 is no longer supported")
