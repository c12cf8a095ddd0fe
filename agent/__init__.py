"""Edge agent: YOLO detection on Jetson / x86 boxes, alerts and misdetection samples over MQTT, signed OTA.

Where a frame goes, by folder:

- ``agent.sources``   camera readers (RTSP, USB, CSI, files, synthetic) — one thread each, newest frame wins
- ``agent.engine``    preprocessing into preallocated tensors, inference backends (ONNX Runtime, TensorRT)
- ``agent.core``      pure maths: letterbox geometry, output decoders, NMS, detections
- ``agent.synthetic`` the seeded industrial scene renderer (demo camera, training data, tests)
"""

__version__ = "0.1.0"
