"""Labelling round trip against a real Label Studio (the `make setup` install in .venv-labelstudio):

    PYTHONPATH=. .venv/bin/python bench/bench_label_studio.py [--n 1000] [--write]

1. export: N stored samples (rendered frames with their synthetic identity, ~5 boxes each as pre-annotations)
   become tasks of a new project (project, label config, local-files storage, tasks in batches of 500);
   the time from the command's start to the export recorded in the store. Target: <= 10 s for 1,000.
2. review: the oracle (stand-in for a reviewer) submits 100 annotations through the API (one request each, as
   a person's Submit does), then `label import` brings everything back: time to import.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from agent.synthetic import CLASS_NAMES
from bench.common import machine, write_section
from tests.trainer import helpers as h
from tests.trainer.labelling.label_studio_server import start_label_studio
from trainer.labelling.label_studio import LabelStudio
from trainer.labelling.oracle import oracle_boxes
from trainer.labelling.roundtrip import export_to_label_studio, import_annotations
from trainer.labelling.tasks import to_region
from trainer.store import get_sample, list_samples, open_reader
from trainer.store.index import connect
from trainer.store.store import open_blobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--review", type=int, default=100)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ls-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        started = time.perf_counter()
        server = start_label_studio(Path(tmp), root)
        startup = time.perf_counter() - started
        try:
            config, _ = h.store_config(
                root / "site",
                label_studio={"url": server.url, "token": server.token},
                image_urls={"document_root": str(root)},
            )
            messages = []
            for i in range(args.n):
                topic, payload, _, _ = h.synthetic_sample(seed=21 + i // 200, index=i % 200)
                messages.append((topic, payload))
            h.fill_store(config, messages)
            reader = open_reader(config.store.index_path)
            writer = connect(config.store.index_path, 10000)
            blobs = open_blobs(config.store)
            rows = list_samples(reader, label_state="pending", limit=None, newest_first=False)
            boxes = sum(len(r.predictions) for r in rows)
            classes = list(CLASS_NAMES)
            with LabelStudio(server.url, server.token) as client:
                t0 = time.perf_counter()
                result = export_to_label_studio(
                    writer,
                    rows,
                    client,
                    classes,
                    config.labelling.image_urls,
                    config.store.path,
                    blobs,
                    title="bench export",
                )
                export_s = time.perf_counter() - t0
                # review the first --review tasks with the oracle through the API, then import everything
                sub_reader = open_reader(config.store.index_path)
                t0 = time.perf_counter()
                tasks = client.export_tasks(result.project)
                reviewed = 0
                for task in tasks[: args.review]:
                    row = get_sample(sub_reader, str(task["data"]["evl_sample"]))
                    found = oracle_boxes(row, blobs.get(row.image_sha256), classes)
                    client.submit_annotation(task["id"], [to_region(b, row.width, row.height, classes) for b in found])
                    reviewed += 1
                review_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                report = import_annotations(writer, reader, client.export_tasks(result.project), client.user_email)
                import_s = time.perf_counter() - t0
            blobs.close()
        finally:
            server.stop()
    each_ms = review_s / max(1, reviewed) * 1e3
    export_row = f"export {args.n} samples ({boxes} boxes as pre-annotations; project, label config, storage, tasks)"
    review_row = f"a reviewer submits {reviewed} annotations through the API (the oracle as stand-in)"
    import_row = f"`label import`: {report.labelled} annotations back ({report.waiting} tasks still waiting)"
    body = f"""## Labelling round trip with Label Studio (issue 9)

`PYTHONPATH=. .venv/bin/python bench/bench_label_studio.py --n {args.n} --write` on {machine()}; Label Studio
1.23.2 (its own virtualenv, SQLite, Django's development server as `label-studio start` runs it) on loopback,
started in {startup:.0f} s.

| step | figure | target |
|---|---|---|
| {export_row} | **{export_s:.1f} s** | <= 10 s |
| {review_row} | {review_s:.1f} s ({each_ms:.0f} ms each) | — |
| {import_row} | {import_s:.1f} s | — |

The export sends tasks in batches of 500 and records the export in the store; the import reads Label
Studio's JSON export of the project (`download_all_tasks=true`) and writes the labels in one transaction.
"""
    print(body)
    if args.write:
        write_section("label_studio", body)


if __name__ == "__main__":
    main()
