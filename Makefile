# Two entry points (see README.md): `make demo` runs the main job, `make test` the whole suite.
# Both set the machine up first (idempotent): apt packages, a Python 3.11 venv with the trainer
# (torch 2.14.1 from the machine's disk, Ultralytics), and a Python 3.8 venv with the agent alone,
# because Jetson Xavier NX runs JetPack 5 with Python 3.8.

SHELL := /bin/bash
PYENV := $(or $(shell command -v pyenv 2>/dev/null),$(wildcard $(HOME)/.pyenv/bin/pyenv),$(wildcard /root/.pyenv/bin/pyenv))
PY311 ?= $(or $(shell $(PYENV) prefix 3.11 2>/dev/null),$(firstword $(wildcard $(HOME)/.pyenv/versions/3.11*)))/bin/python3
PY38 ?= $(or $(shell $(PYENV) prefix 3.8 2>/dev/null),$(firstword $(wildcard $(HOME)/.pyenv/versions/3.8*)))/bin/python3
VENV := .venv
VENV38 := .venv38
# Label Studio, the labelling tool the cloud side talks to, in a virtualenv of its own: it pins its own
# Django and numpy, which must never meet the trainer's. Used by the labelling round-trip tests.
VENV_LS := .venv-labelstudio
LABEL_STUDIO_VERSION := 1.23.2
export YOLO_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo loop-demo test test-slow test-system lint typecheck pytest pytest38 bench bench-fleet clean demo-model

# The pages' type checker and linter (tsc, eslint: make lint), exactly as package-lock.json pins them.
NODE_TOOLS := node_modules/.installed

setup: .stamps/apt $(VENV)/.installed $(VENV38)/.installed $(VENV_LS)/.installed $(NODE_TOOLS)

# Cameras: GStreamer (the agent's RTSP / CSI reader, with its Python bindings and the headers PyGObject builds
# against in the test venvs), GStreamer's RTSP server and Debian's python3-gi / python3-gst-1.0 (the tests' RTSP
# server runs under Debian's python3), ffmpeg with x264 / x265 (the test clips), nftables (loss on a test camera
# network), python3-opencv (the reader comparison's GStreamer-in-OpenCV row, as on a Jetson).
CAMERA_APT := gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
	gstreamer1.0-libav gstreamer1.0-rtsp gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-rtsp-server-1.0 \
	python3-gi python3-gst-1.0 python3-numpy python3-opencv libgirepository1.0-dev libcairo2-dev pkg-config \
	meson ninja-build patchelf ffmpeg nftables iproute2
.stamps/apt:
	@mkdir -p .stamps
	@if { ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; } || ! command -v systemd-analyze >/dev/null \
		|| { ! command -v ejabberdctl >/dev/null && [ ! -x /usr/sbin/ejabberdctl ]; } \
		|| ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "setup: installing mosquitto, systemd-analyze, ejabberd (a second MQTT 5 broker for the tests) and headless Chromium (the pages' browser tests) (apt)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients systemd ejabberd chromium chromium-driver >/dev/null; \
		systemctl disable --now ejabberd >/dev/null 2>&1 || true; \
	fi
	@missing=$$(for p in $(CAMERA_APT); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "setup: installing $$missing (apt: GStreamer, its RTSP server, ffmpeg for the camera tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi
	@touch $@

$(VENV)/.installed: pyproject.toml .stamps/apt
	@test -x "$(PY311)" || { echo "setup: Python 3.11 not found (pyenv prefix 3.11); set PY311=/path/to/python3.11" >&2; exit 1; }
	@test -d $(VENV) || $(PY311) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# torch first, pinned: it lies on this machine's disk; nothing later may pull another build.
	$(VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install -q -e '.[trainer,dev,gstreamer]'
	@touch $@

$(VENV38)/.installed: pyproject.toml .stamps/apt
	@test -x "$(PY38)" || { echo "setup: Python 3.8 NOT FOUND (pyenv prefix 3.8): the agent must be tested on 3.8; set PY38=" >&2; exit 1; }
	@test -d $(VENV38) || $(PY38) -m venv $(VENV38)
	$(VENV38)/bin/pip install -q --upgrade pip
	$(VENV38)/bin/pip install -q -e '.[edge,dev,gstreamer]'
	@! $(VENV38)/bin/python -c "import torch" 2>/dev/null || { echo "setup: torch leaked into the agent's venv" >&2; exit 1; }
	@touch $@

$(VENV_LS)/.installed:
	@test -x "$(PY311)" || { echo "setup: Python 3.11 not found for Label Studio" >&2; exit 1; }
	@test -d $(VENV_LS) || $(PY311) -m venv $(VENV_LS)
	@echo "setup: installing Label Studio $(LABEL_STUDIO_VERSION) into $(VENV_LS) (its own environment; a few minutes)"
	$(VENV_LS)/bin/pip install -q --upgrade pip
	$(VENV_LS)/bin/pip install -q label-studio==$(LABEL_STUDIO_VERSION)
	@touch $@

# npm ci: node_modules/ exactly as package-lock.json says (it starts from an empty node_modules/). Node.js 18.18 or
# newer: Debian 12's own (apt) is 18.20.
$(NODE_TOOLS): package.json package-lock.json .stamps/apt
	@command -v npm >/dev/null || { echo "setup: installing Node.js and npm (apt: the pages' type checker and linter)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

demo: setup
	$(VENV)/bin/edge-agent detect --model models/demo/demo.onnx --source samples/factory-line.jpg --save runs/demo
	@echo "annotated image: runs/demo/factory-line.jpg"

# The whole loop on this machine (about 15 minutes on 2 cores): agent on a drifted synthetic camera -> samples ->
# ingest -> oracle labels -> learning round (fine-tune, export, gate on INT8, sign) -> staged rollout -> the agent
# runs the new model. Prints the before/after figures; writes runs/loop-demo/ (docs/LOOP.md).
loop-demo: setup
	$(VENV)/bin/python -m trainer.loop_demo

# Python: ruff. The pages' scripts (native ES modules typed with JSDoc): tsconfig.json, eslint.config.js; the
# documents' types they import (agent/web/static/types/*.d.ts) are generated from docs/schemas/ (npm run page-types:
# tools/page-types.mjs, json-schema-to-typescript) and must be what the committed schemas give.
lint: setup
	$(VENV)/bin/ruff check agent trainer tests bench
	$(VENV)/bin/ruff format --check agent trainer tests bench
	@tmp=$$(mktemp -d) && node tools/page-types.mjs $$tmp && diff -ru agent/web/static/types $$tmp; rc=$$?; rm -rf "$$tmp"; \
		[ $$rc -eq 0 ] || { echo "lint: agent/web/static/types differs from what docs/schemas/ gives: run npm run page-types (node tools/page-types.mjs) and commit it" >&2; exit 1; }
	node_modules/.bin/tsc -p tsconfig.json
	node_modules/.bin/eslint --max-warnings 0 tools agent/web/static agent/box_page/static trainer/fleet_pages/static

# The agent on Python 3.8 (pyproject's [tool.mypy]: files = agent); the trainer, which needs 3.10+, from its own
# venv (that mypy no longer targets 3.8 and says so about the shared config: the flag below overrides it).
typecheck: setup
	$(VENV38)/bin/mypy
	$(VENV)/bin/mypy --python-version 3.11 trainer

# EVL_REQUIRE_LABEL_STUDIO / EVL_REQUIRE_BROWSER: the Label Studio round trip and the pages' browser tests fail
# instead of skipping when their server or browser is missing.
# The agent's own tests run on Python 3.8 (pytest38: the oldest interpreter it ships on); here, on 3.11, the
# cloud's tests (which run the agent's daemon, pipeline and OTA in-process too) and the one agent test that needs
# the trainer's environment (the onnx package).
# EVL_REQUIRE_GSTREAMER / EVL_REQUIRE_RTSP: the camera tests fail instead of skipping without GStreamer or the RTSP
# server.
export EVL_REQUIRE_GSTREAMER := 1
export EVL_REQUIRE_RTSP := 1
pytest: setup
	EVL_REQUIRE_LABEL_STUDIO=1 EVL_REQUIRE_BROWSER=1 $(VENV)/bin/python -m pytest -q -m "not slow" tests/trainer tests/agent/core/test_onnx_proto.py

pytest38: setup
	$(VENV38)/bin/python -m pytest -q -m "not slow" tests/agent tests/deploy

test: lint typecheck pytest38 pytest

# The outage- and soak-length tests (`@pytest.mark.slow`: 30 s broker outages through the link and the daemon),
# on both interpreters; `make test` (what CI runs) leaves them out.
test-slow: setup
	$(VENV38)/bin/python -m pytest -q -m slow tests/agent tests/deploy
	$(VENV)/bin/python -m pytest -q -m slow

# The box as it is installed (tests/system, docs/OPERATIONS.md §1): a clean Debian 12 root file system made by
# debootstrap, booted with systemd as PID 1 (systemd-nspawn; QEMU with software emulation for udev, USB sticks and
# power cuts), the agent installed by deploy/install-x86.sh from a local wheelhouse, the shipped units unchanged.
# Root on Linux; says SKIPPED and succeeds elsewhere. The root file system, the VM image and the wheelhouse are
# cached outside the repository ($$XDG_CACHE_HOME/edge-vision-loop/system, keyed by what they are built from):
# the first run downloads Debian packages and wheels, later ones run offline.
SYSTEM_APT := debootstrap systemd-container qemu-system-x86 qemu-utils mtools dosfstools zstd util-linux e2fsprogs socat mosquitto
.stamps/apt-system:
	@mkdir -p .stamps
	@if [ "$$(uname -s)" = Linux ] && [ "$$(id -u)" = 0 ]; then \
		missing=$$(for p in $(SYSTEM_APT); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
		if [ -n "$$missing" ]; then echo "setup: installing $$missing (apt, for make test-system)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	fi
	@touch $@

# Two pytest-xdist workers: each emulated VM is one busy core, and the 12 power cuts are most of the time.
# SYSTEM_JOBS=0 runs the tests one at a time (the timing figures in docs/BENCHMARKS.md are measured so).
SYSTEM_JOBS ?= 2
test-system: .stamps/apt $(VENV)/.installed .stamps/apt-system
	@if [ "$$(uname -s)" != Linux ] || [ "$$(id -u)" != 0 ]; then \
		echo "test-system: SKIPPED: needs root on Linux (systemd-nspawn, QEMU)"; exit 0; fi; \
	$(VENV)/bin/python -m tests.system.images && \
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider -n $(SYSTEM_JOBS) tests/system

# Benchmarks write their sections of docs/BENCHMARKS.md; run them on an otherwise idle machine.
bench: setup
	$(VENV)/bin/python bench/bench_engine.py
	$(VENV)/bin/python bench/bench_int8.py
	PYTHONPATH=. $(VENV)/bin/python bench/bench_ota_verify.py
	PYTHONPATH=. $(VENV)/bin/python bench/bench_spool_drain.py --verify --write
	PYTHONPATH=. $(VENV)/bin/python bench/bench_cameras.py --model models/demo/demo-int8.onnx --write
	PYTHONPATH=. $(VENV)/bin/python bench/bench_rtsp_readers.py --write
	PYTHONPATH=. $(VENV)/bin/python bench/bench_rtsp_cameras.py --write
	PYTHONPATH=. $(VENV)/bin/python bench/bench_camera_faults.py --write
	PYTHONPATH=. $(VENV)/bin/python bench/bench_ingest.py --write
	PYTHONPATH=. $(VENV)/bin/python bench/bench_label_studio.py --write

# The fleet at scale and under faults (about an hour: the soak alone is 30 minutes; as root for its tmpfs).
bench-fleet: setup
	PYTHONPATH=. $(VENV)/bin/python bench/fleet_sim.py --write
	PYTHONPATH=. $(VENV)/bin/python bench/fleet_rollout.py --write
	PYTHONPATH=. $(VENV)/bin/python bench/tls_storm.py --write
	PYTHONPATH=. $(VENV)/bin/python bench/soak.py --write

clean:
	rm -rf $(VENV) $(VENV38) $(VENV_LS) node_modules .stamps runs .pytest_cache .mypy_cache .ruff_cache

# Re-create the shipped demo model from nothing (about 45 minutes on 2 idle CPU cores): two stages, as recorded
# in models/demo/README.md. Writes into data/ and models/demo/.
DATA := data
demo-model: setup
	$(VENV)/bin/edge-trainer synth --domain factory --seed 1 --count 900 --val-fraction 0.1111 --size 256x256 --out $(DATA)/factory-train --overwrite
	$(VENV)/bin/edge-trainer synth --domain factory --seed 3 --count 1000 --size 256x256 --out $(DATA)/factory-extra --overwrite
	$(VENV)/bin/edge-trainer synth --domain factory --seed 1000 --count 500 --size 256x256 --out $(DATA)/factory-holdout --overwrite
	$(VENV)/bin/edge-trainer synth --domain drifted --seed 2000 --count 500 --size 256x256 --out $(DATA)/drifted-holdout --overwrite
	# stage 1: from scratch, 40 epochs on the 800 seed-1 training images
	$(VENV)/bin/edge-trainer train --data $(DATA)/factory-train/data.yaml --model tiny --epochs 40 --imgsz 256 --batch 16 --devices cpu --seed 0 --out $(DATA)/runs/demo
	# stage 2: 12 more epochs on 1800 images (seed 1 + seed 3), lower learning rate
	$(VENV)/bin/python models/demo/make_stage2_data.py $(DATA)
	$(VENV)/bin/edge-trainer train --data $(DATA)/ft/data.yaml --model $(DATA)/runs/demo/weights/best.pt --epochs 12 --imgsz 256 --batch 16 --devices cpu --seed 0 --lr0 0.002 --lrf 0.1 --warmup-epochs 0.5 --close-mosaic 5 --out $(DATA)/runs/demo-ft
	$(VENV)/bin/edge-trainer export --weights $(DATA)/runs/demo-ft/weights/best.pt --out models/demo --name demo --imgsz 256 --version 1.0.0 --calib $(DATA)/factory-train/images/train --calib-count 300 --int8-keep-float decode --holdout $(DATA)/factory-holdout/data.yaml --training-data "synthetic factory: seed 1 (800 train) then seeds 1+3 (1800 train)"
	cp $(DATA)/runs/demo-ft/weights/best.pt models/demo/demo.pt
	$(VENV)/bin/edge-trainer evaluate --model models/demo/demo.onnx --data $(DATA)/factory-holdout/data.yaml --out models/demo/eval-factory
	$(VENV)/bin/edge-trainer evaluate --model models/demo/demo.onnx --data $(DATA)/drifted-holdout/data.yaml --out models/demo/eval-drifted
	$(VENV)/bin/edge-trainer evaluate --model models/demo/demo-int8.onnx --data $(DATA)/factory-holdout/data.yaml --baseline models/demo/demo.onnx --out models/demo/eval-int8-vs-fp32
