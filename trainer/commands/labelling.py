"""``edge-trainer label export|import|oracle|pseudo|exports``: the labelling round trip for a person."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

from agent.config import ConfigError
from trainer.commands.tables import format_table, iso
from trainer.labelling import (
    ImportReport,
    LabelStudio,
    LabelStudioError,
    Teacher,
    export_to_file,
    export_to_label_studio,
    import_annotations,
    read_coco,
    read_yolo,
    resolve_classes,
    review_with_oracle,
)
from trainer.labelling.oracle import AUTHOR, OracleRefused, oracle_boxes
from trainer.settings import TrainerConfig, add_config_argument, load_trainer_config
from trainer.store import NewLabel, StoreError, add_labels, connect, list_exports, list_samples, open_blobs, open_reader


def _filters(p: argparse.ArgumentParser, state: Optional[str] = "pending") -> None:
    p.add_argument("--device")
    p.add_argument("--camera")
    p.add_argument("--reason", choices=["uncertain", "inconsistent", "flagged", "random"])
    p.add_argument("--state", default=state, help=f"labelling state of the samples taken (default {state})")
    p.add_argument("--limit", type=int, help="at most N samples (oldest first)")


def add_parser(subparsers: Any) -> None:
    label = subparsers.add_parser("label", help="labelling round trip: Label Studio, YOLO/COCO, oracle, pseudo")
    sub = label.add_subparsers(dest="label_command", required=True)

    p = sub.add_parser(
        "export",
        help="pending samples as Label Studio tasks (server or JSON file)",
        description="Each task carries the image URL, the model's boxes as pre-annotations and "
        "our ids; the samples become 'exported'.",
    )
    add_config_argument(p)
    target = p.add_mutually_exclusive_group()
    target.add_argument("--file", type=Path, help="write a Label Studio import file instead of calling the API")
    target.add_argument("--project", type=int, help="add to this Label Studio project (default: create one)")
    p.add_argument("--title", help="title of the project created (default: trainer.yaml)")
    p.add_argument("--classes", help="class names, comma-separated (default: trainer.yaml, --model, synthetic)")
    p.add_argument("--model", type=Path, help="read the class names from this ONNX model")
    _filters(p)
    p.set_defaults(handler=run_export)

    p = sub.add_parser(
        "import",
        help="reviewed annotations back into the store as ground truth",
        description="From Label Studio (every project of this store's exports, or --project), "
        "a Label Studio JSON export (--file), or a labelled YOLO / COCO set. Tasks this store "
        "did not export are refused and listed.",
    )
    add_config_argument(p)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--project", type=int, help="only this Label Studio project")
    source.add_argument("--file", type=Path, help="a Label Studio JSON export (tasks with annotations)")
    source.add_argument("--yolo", type=Path, help="a YOLO set whose images are this store's exported names")
    source.add_argument("--coco", type=Path, help="a COCO annotations.json of this store's exported images")
    p.add_argument("--export", dest="export_id", help="only tasks of this export id")
    p.add_argument("--author", help="who labelled a YOLO / COCO set (required for those)")
    p.add_argument("--classes", help="class names of a YOLO / COCO set (default: trainer.yaml / synthetic)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=run_import)

    p = sub.add_parser(
        "oracle",
        help="STAND-IN FOR HUMAN REVIEW: label synthetic samples from their renderer",
        description="Re-renders each synthetic sample's frame (its lineage carries domain, seed, "
        "index) and stores the exact boxes, source 'oracle'. Refuses samples of real cameras. "
        "--review-in-label-studio EXPORT submits them as annotations of that export's tasks "
        "instead, so `label import` brings them back through Label Studio.",
    )
    add_config_argument(p)
    p.add_argument("--review-in-label-studio", metavar="EXPORT_ID", help="annotate this export's tasks in Label Studio")
    p.add_argument("--classes")
    _filters(p, state=None)
    p.set_defaults(handler=run_oracle)

    p = sub.add_parser("pseudo", help="pseudo-labels from a teacher model (kept apart from ground truth)")
    add_config_argument(p)
    p.add_argument("--teacher", type=Path, required=True, help="teacher ONNX model")
    p.add_argument("--min-confidence", type=float, help="confidence floor (default: trainer.yaml, 0.5)")
    p.add_argument("--classes")
    _filters(p, state=None)
    p.set_defaults(handler=run_pseudo)

    p = sub.add_parser("exports", help="every export and how far its review got")
    add_config_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_exports)


# ------------------------------------------------------------------------------------------------ helpers


@dataclass
class _Session:
    """What every label command works on: the configuration, the index (a reader and a writer connection)
    and the blob store."""

    config: TrainerConfig
    reader: Any
    writer: Any
    blobs: Any

    def close(self) -> None:
        self.blobs.close()
        self.writer.close()
        self.reader.close()


def _command(body: Callable[[argparse.Namespace, _Session], int]) -> Callable[[argparse.Namespace], int]:
    """Open the session, run the command, turn every expected failure into ``error: ...`` and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            config = load_trainer_config(args.config)
            session = _Session(
                config,
                open_reader(config.store.index_path, config.store.busy_timeout_ms),
                connect(config.store.index_path, config.store.busy_timeout_ms),
                open_blobs(config.store),
            )
        except (ConfigError, StoreError) as exc:
            return _fail(exc)
        try:
            return body(args, session)
        except (LabelStudioError, StoreError, ValueError, OSError) as exc:
            return _fail(exc)
        finally:
            session.close()

    run.__doc__ = body.__doc__
    return run


def _rows(reader: Any, args: argparse.Namespace) -> List[Any]:
    return list_samples(
        reader,
        device=args.device,
        camera=args.camera,
        reason=args.reason,
        label_state=args.state,
        limit=args.limit,
        newest_first=False,
    )


def _client(config: TrainerConfig) -> Any:
    ls = config.labelling.label_studio
    return LabelStudio(ls.url, ls.read_token() or "", ls.token_kind, ls.timeout_s)


def _classes(args: argparse.Namespace, config: TrainerConfig) -> List[str]:
    return resolve_classes(getattr(args, "classes", None), config.labelling.classes, getattr(args, "model", None))


def _progress(done: int, total: int) -> None:
    print(f"  {done}/{total} tasks", file=sys.stderr, flush=True)


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _store_labels(session: _Session, labels: List[Any]) -> Tuple[int, int]:
    """Store labels; (new, already there)."""
    stored = add_labels(session.writer, labels)
    return sum(stored), len(stored) - sum(stored)


# ------------------------------------------------------------------------------------------------ commands


@_command
def run_export(args: argparse.Namespace, session: _Session) -> int:
    config = session.config
    classes = _classes(args, config)
    rows = _rows(session.reader, args)
    if not rows:
        print("nothing to export (no samples in that state)")
        return 0
    urls, store_path = config.labelling.image_urls, config.store.path
    if args.file:
        result = export_to_file(session.writer, rows, args.file, classes, urls, store_path, session.blobs)
        print(
            f"export {result.export_id}: {result.count} tasks written to {result.location} (label config beside "
            "it); import them in Label Studio, annotate, export JSON, then "
            "`edge-trainer label import --file <that export>`"
        )
        return 0
    with _client(config) as client:
        result = export_to_label_studio(
            session.writer,
            rows,
            client,
            classes,
            urls,
            store_path,
            session.blobs,
            title=args.title or config.labelling.label_studio.project_title,
            project=args.project,
            batch=config.labelling.label_studio.import_batch,
            progress=_progress,
        )
    print(
        f"export {result.export_id}: {result.count} tasks in Label Studio project {result.project} "
        f"({result.location}/projects/{result.project}) in {result.seconds:.1f} s"
    )
    return 0


def _import_set(args: argparse.Namespace, session: _Session) -> int:
    if not args.author:
        raise ValueError("--author is required: who labelled this set?")
    classes = _classes(args, session.config)
    rows = {r.sid: r for r in list_samples(session.reader, limit=None, with_labels=False)}
    if args.yolo:
        found = read_yolo(args.yolo, classes, {sid: (r.width, r.height) for sid, r in rows.items()})
        tool, where = "yolo", str(args.yolo)
    else:
        found = read_coco(args.coco, classes)
        tool, where = "coco", str(args.coco)
    labels, refused = [], []
    for (sid, prefix), boxes in sorted(found.items()):
        row = rows.get(sid)
        if row is None or not row.image_sha256.startswith(prefix):
            refused.append((f"s{sid}-{prefix}", "not an image of this store"))
            continue
        digest = hashlib.sha256(json.dumps(boxes, sort_keys=True).encode()).hexdigest()[:16]
        labels.append(
            NewLabel(
                sid=sid,
                source="import",
                author=args.author,
                boxes=boxes,
                ref={"tool": tool, "path": where},
                ref_key=f"{tool}:{args.author}:{digest}",
            )
        )
    new, known = _store_labels(session, labels)
    print(f"imported {new} labels from {where} ({known} already there), refused {len(refused)}")
    for name, why in refused[:20]:
        print(f"  refused {name}: {why}")
    return 1 if refused else 0


@_command
def run_import(args: argparse.Namespace, session: _Session) -> int:
    if args.yolo or args.coco:
        return _import_set(args, session)
    report = ImportReport()
    if args.file:
        try:
            tasks = json.loads(args.file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{args.file}: not a Label Studio JSON export: {exc}") from None
        if not isinstance(tasks, list):
            raise ValueError(f"{args.file}: expected a list of tasks")
        report = import_annotations(
            session.writer,
            session.reader,
            tasks,
            lambda user: f"label-studio user {user}",
            tool="label-studio-file",
            only_export=args.export_id,
        )
    else:
        projects = {
            int(record.project)
            for record, _ in list_exports(session.reader)
            if record.target == "label-studio" and record.project
        }
        if args.project is not None:
            projects = {args.project}
        with _client(session.config) as client:
            for project in sorted(projects):
                part = import_annotations(
                    session.writer,
                    session.reader,
                    client.export_tasks(project),
                    client.user_email,
                    only_export=args.export_id,
                )
                report.merge(part)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(
            f"labelled {report.labelled}, skipped {report.skipped}, still waiting for review {report.waiting}, "
            f"already imported {report.already}, refused {len(report.refused)}"
        )
        for task, why in report.refused[:20]:
            print(f"  refused task {task}: {why}")
    return 1 if report.refused else 0


@_command
def run_oracle(args: argparse.Namespace, session: _Session) -> int:
    print(
        "oracle: a STAND-IN FOR HUMAN REVIEW (re-renders synthetic frames); real cameras need people", file=sys.stderr
    )
    refused: List[Tuple[int, str]] = []
    if args.review_in_label_studio:
        with _client(session.config) as client:
            count = review_with_oracle(client, session.reader, args.review_in_label_studio, session.blobs, refused)
        print(
            f"oracle submitted {count} annotations in Label Studio; {len(refused)} samples left for people; "
            "bring them back with `edge-trainer label import`"
        )
        return 0
    classes = _classes(args, session.config)
    labels = []
    for row in _rows(session.reader, args):
        if args.state is None and row.ground_truth() is not None:
            continue  # already has ground truth
        try:
            boxes = oracle_boxes(row, session.blobs.get(row.image_sha256), classes)
        except OracleRefused as exc:
            refused.append((row.sid, str(exc)))
            continue
        labels.append(
            NewLabel(
                sid=row.sid,
                source="oracle",
                author=AUTHOR,
                boxes=boxes,
                ref={"tool": "oracle", "synthetic": row.synthetic},
                ref_key=f"oracle:{row.image_sha256}",
            )
        )
    new, known = _store_labels(session, labels)
    print(
        f"oracle labelled {new} samples ({known} already), refused {len(refused)} (real cameras or identities "
        "that do not reproduce)"
    )
    for sid, why in refused[:10]:
        print(f"  refused {sid}: {why}")
    return 0


@_command
def run_pseudo(args: argparse.Namespace, session: _Session) -> int:
    classes = _classes(args, session.config)
    floor = args.min_confidence if args.min_confidence is not None else session.config.labelling.pseudo_min_confidence
    teacher = Teacher(args.teacher, floor)
    labels = []
    started = time.perf_counter()
    rows = _rows(session.reader, args)
    for number, row in enumerate(rows, 1):
        labels.append(
            NewLabel(
                sid=row.sid,
                source="pseudo",
                author=teacher.author,
                boxes=teacher.boxes(session.blobs.get(row.image_sha256), classes),
                ref={"tool": "teacher", "model": str(args.teacher), "min_confidence": floor},
                ref_key=f"pseudo:{teacher.detector.model.sha256}:{floor}",
            )
        )
        if number % 100 == 0:
            print(f"  {number}/{len(rows)} samples", file=sys.stderr, flush=True)
    new, _ = _store_labels(session, labels)
    print(
        f"pseudo-labelled {new} samples with {teacher.author} (floor {floor}) in "
        f"{time.perf_counter() - started:.1f} s; stored as source 'pseudo', never ground truth by default"
    )
    return 0


@_command
def run_exports(args: argparse.Namespace, session: _Session) -> int:
    exports = list_exports(session.reader)
    if args.json:
        print(json.dumps([{**record.__dict__, "states": states} for record, states in exports], indent=2))
        return 0
    print(
        format_table(
            ["EXPORT", "CREATED", "TARGET", "PROJECT", "TASKS", "LABELLED", "SKIPPED", "WAITING"],
            (
                [
                    r.export_id,
                    iso(r.created_at),
                    r.target,
                    r.project or r.location,
                    r.count,
                    s.get("labelled", 0),
                    s.get("skipped", 0),
                    s.get("exported", 0) + s.get("pending", 0),
                ]
                for r, s in exports
            ),
        )
    )
    return 0
