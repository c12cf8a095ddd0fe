"""Time the verification of a 15 MB release (TUF refresh + staged download + hashes + manifest checks).

Run: PYTHONPATH=. .venv/bin/python bench/bench_ota_verify.py [--mb 15] [--repeats 5]
Measures ``Installer.install_path(bundle, dry_run=True)`` on a real signed offline bundle whose model file
is MB megabytes: exactly what ``edge-agent ota verify PATH`` does (no health check, nothing installed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*Python 3.8.*")

from agent.core.release import parse_manifest  # noqa: E402
from agent.ota import Installer, OtaConfig  # noqa: E402
from trainer.release.build import build_bundle, default_golden_images  # noqa: E402
from trainer.release.keys import init_keys  # noqa: E402
from trainer.release.repo import Repository  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=15.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="print only; do not touch docs/BENCHMARKS.md")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        ring = init_keys(tmp / "keys")
        repo = Repository(tmp / "repo", ring)
        repo.init()
        Repository(tmp / "repo", ring, offline=True).init()
        # a release whose files total args.mb: the tiny model padded into a calibration archive
        model = Path(__file__).resolve().parents[1] / "tests" / "data" / "ota" / "tiny-yolo64.onnx"
        calib = tmp / "calib.tar"
        calib.write_bytes(os.urandom(int(args.mb * 1024 * 1024) - model.stat().st_size))
        from trainer.release.build import ReleaseSpec, build_release

        gdir = tmp / "golden"
        gdir.mkdir()
        m = build_release(
            repo,
            ReleaseSpec(
                "bench",
                "1.0.0",
                "stable",
                {"onnx": model, "calibration_images": calib},
                golden=default_golden_images(gdir),
            ),
        )
        bundle = build_bundle(tmp / "repo", ring, tmp / "bundle", "stable")
        total = sum(t.length for t in m.targets())
        times = []
        for i in range(args.repeats):
            cfg = OtaConfig(
                state_dir=tmp / f"device{i}",
                trusted_root=tmp / "repo/metadata/1.root.json",
                offline_root=tmp / "repo/offline/metadata/1.root.json",
            )
            t0 = time.perf_counter()
            manifest = Installer(cfg).install_path(bundle, dry_run=True)
            times.append(time.perf_counter() - t0)
            assert parse_manifest
            assert getattr(manifest, "counter", None) == 1
        line = (
            f"verify {total / 1e6:.1f} MB release ({len(m.targets())} files): "
            f"median {statistics.median(times):.3f} s, min {min(times):.3f} s over {args.repeats} runs"
        )
        print(line)
        median, best, files = statistics.median(times), min(times), len(m.targets())
        if not args.no_write:
            from bench.common import machine, write_section

            write_section(
                "ota",
                f"""## OTA verification (issue 4)

Machine: {machine()}.
`Installer.install_path(bundle, dry_run=True)`, i.e. `edge-agent ota verify PATH` on a real signed offline
bundle: TUF metadata refresh (root, timestamp, snapshot, targets, delegated trainer role), staged copy with
length caps, SHA-256 of every file, manifest checks; no health check.

| release | median | min | runs | target |
|---|---:|---:|---:|---|
| {total / 1e6:.1f} MB ({files} files) | **{median:.3f} s** | {best:.3f} s | {args.repeats} | ≤ 0.3 s |

Reproduce: `make setup && PYTHONPATH=. .venv/bin/python bench/bench_ota_verify.py` (or with `.venv38`).
""",
            )


if __name__ == "__main__":
    main()
