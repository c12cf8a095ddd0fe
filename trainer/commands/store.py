"""``edge-trainer samples list|show|stats|export`` and ``edge-trainer fleet [DEVICE]``: the store for a person.

All read the index through its own read-only connection, so they run beside a live ``edge-trainer serve``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from agent.config import ConfigError
from trainer.commands.tables import ago, format_table, iso
from trainer.labelling import LabelledImage, resolve_classes, write_coco, write_yolo
from trainer.settings import TrainerConfig, add_config_argument, load_trainer_config
from trainer.store import (
    LABEL_STATES,
    SampleRow,
    StoreError,
    alert_history,
    find_orphans,
    fleet,
    get_sample,
    list_samples,
    open_blobs,
    open_reader,
    sample_stats,
)

# ------------------------------------------------------------------------------------------------ parsers


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="only this device")
    parser.add_argument("--camera", help="only this camera")
    parser.add_argument("--reason", choices=["uncertain", "inconsistent", "flagged", "random"])
    parser.add_argument("--state", choices=LABEL_STATES, help="labelling state")
    parser.add_argument("--since-hours", type=float, help="received in the last N hours")
    parser.add_argument(
        "--synthetic",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="only samples of synthetic cameras (--no-synthetic: only real ones)",
    )


def add_parsers(subparsers: Any) -> None:
    samples = subparsers.add_parser("samples", help="the sample store: list, show, stats, export")
    ssub = samples.add_subparsers(dest="samples_command", required=True)
    p = ssub.add_parser("list", help="samples, newest first")
    add_config_argument(p)
    _filters(p)
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(handler=run_list)
    p = ssub.add_parser("show", help="one sample with its whole lineage and labels")
    add_config_argument(p)
    p.add_argument("key", help="store id (sid), message id, or DEVICE/ID")
    p.add_argument("--json", action="store_true")
    p.add_argument("--image", type=Path, help="also write the JPEG here")
    p.set_defaults(handler=run_show)
    p = ssub.add_parser("stats", help="counts by reason, device, labelling state; bytes; drops")
    add_config_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run_stats)
    p = ssub.add_parser(
        "export",
        help="copy samples out: jsonl (images + lineage), or the labelled set as yolo / coco",
        description="jsonl: every matching sample's JPEG (<sid>.jpg) and a samples.jsonl of their lineage. "
        "yolo / coco: the labelled ones with their ground truth (trainer.labelling.formats).",
    )
    add_config_argument(p)
    p.add_argument("out", type=Path)
    p.add_argument("--format", choices=["jsonl", "yolo", "coco"], default="jsonl")
    _filters(p)
    p.add_argument("--limit", type=int, help="at most N samples")
    p.add_argument(
        "--sources",
        default="human,oracle,import",
        help="label sources taken as ground truth, in order of preference (yolo/coco); add pseudo "
        "to include a teacher model's labels",
    )
    p.add_argument("--val-fraction", type=float, default=0.0, help="yolo: share of images put in val/")
    p.add_argument("--classes", help="class names, comma-separated (default: trainer.yaml labelling.classes)")
    p.set_defaults(handler=run_export)

    p = ssub.add_parser("fsck", help="blobs without index rows (crash leftovers) and rows without blobs (damage)")
    add_config_argument(p)
    p.add_argument(
        "--delete-orphans",
        action="store_true",
        help="remove blobs no row names (never while an ingest worker may be writing: stop it first)",
    )
    p.set_defaults(handler=run_fsck)

    fl = subparsers.add_parser("fleet", help="the fleet registry: every device at a glance, or one in detail")
    add_config_argument(fl)
    fl.add_argument("device", nargs="?", help="show this device: cameras, OTA history, recent alerts")
    fl.add_argument("--site", help="only this site")
    fl.add_argument("--window-hours", type=float, default=1.0, help="rates over the last N hours (default 1)")
    fl.add_argument("--json", action="store_true")
    fl.set_defaults(handler=run_fleet)


def _config(args: argparse.Namespace) -> Optional[TrainerConfig]:
    try:
        return load_trainer_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _reader(args: argparse.Namespace) -> Any:
    config = _config(args)
    if config is None:
        return None, None
    try:
        return config, open_reader(config.store.index_path, config.store.busy_timeout_ms)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return config, None


def _select(db: Any, args: argparse.Namespace, limit: Optional[int]) -> List[SampleRow]:
    since = time.time() - args.since_hours * 3600 if args.since_hours else None
    return list_samples(
        db,
        device=args.device,
        camera=args.camera,
        reason=args.reason,
        label_state=args.state,
        since=since,
        synthetic=args.synthetic,
        limit=limit,
    )


# ------------------------------------------------------------------------------------------------ samples


def run_list(args: argparse.Namespace) -> int:
    _, db = _reader(args)
    if db is None:
        return 2
    rows = _select(db, args, args.limit)
    if args.json:
        for row in rows:
            print(json.dumps(row.as_dict(), sort_keys=True))
        return 0
    now = time.time()
    print(
        format_table(
            ["SID", "RECEIVED", "DEVICE", "CAMERA", "REASON", "MODEL", "BOXES", "LABEL", "SYNTHETIC"],
            (
                [
                    r.sid,
                    ago(r.received_at, now),
                    r.device,
                    r.camera,
                    r.reason,
                    f"{r.model_name} {r.model_version}",
                    len(r.predictions),
                    r.label_state + (f" ({r.labels[-1].source})" if r.labels else ""),
                    f"{r.synthetic['domain']}:{r.synthetic['seed']}:{r.synthetic['index']}" if r.synthetic else "",
                ]
                for r in rows
            ),
        )
    )
    if not rows:
        print("(no samples match)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    config, db = _reader(args)
    if db is None:
        return 2
    row = get_sample(db, args.key)
    if row is None:
        print(f"error: no sample {args.key!r}", file=sys.stderr)
        return 2
    if args.image:
        blobs = open_blobs(config.store)
        try:
            args.image.write_bytes(blobs.get(row.image_sha256))
        finally:
            blobs.close()
    if args.json:
        print(json.dumps(row.as_dict(), indent=2, sort_keys=True))
        return 0
    print(f"sample {row.sid}  {row.device}/{row.id}")
    print(f"  site/camera   {row.site} / {row.camera}")
    print(f"  reason        {row.reason}" + (f" (track {row.track_id})" if row.track_id is not None else ""))
    if row.note:
        print(f"  note          {row.note}")
    print(f"  model         {row.model_name} {row.model_version} sha256 {row.model_sha256[:16]}…")
    print(f"  thresholds    {', '.join(f'{k}={v:g}' for k, v in sorted(row.thresholds.items()))}")
    print(f"  frame time    {iso(row.frame_time)}   received {iso(row.received_at)} by {row.worker}")
    print(f"  image         {row.width}x{row.height}, {row.image_size} bytes, sha256 {row.image_sha256}")
    if row.synthetic:
        s = row.synthetic
        print(
            f"  synthetic     domain {s['domain']}, seed {s['seed']}, frame {s['index']} ({s['width']}x{s['height']})"
        )
    print(f"  predictions   {len(row.predictions)}")
    for box in row.predictions:
        print(
            f"    {box['class_name']:<12} {box['confidence']:.2f}  "
            f"[{box['x1']:.0f}, {box['y1']:.0f}, {box['x2']:.0f}, {box['y2']:.0f}]"
        )
    print(f"  labelling     {row.label_state}")
    for label in row.labels:
        print(f"    {label.source} by {label.author} at {iso(label.created_at)}: {len(label.boxes)} boxes")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    _, db = _reader(args)
    if db is None:
        return 2
    stats = sample_stats(db)
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    print(
        f"samples   {stats['samples']} ({stats['synthetic']} from synthetic cameras), "
        f"{stats['blob_bytes'] / 1e6:.1f} MB of images"
    )
    print(f"  first / last received: {iso(stats['first_received_at'])} / {iso(stats['last_received_at'])}")
    for title, key in (
        ("by reason", "by_reason"),
        ("by labelling state", "by_label_state"),
        ("labels by source", "labels_by_source"),
        ("by device", "by_device"),
        ("not stored, by reason", "drops_by_reason"),
    ):
        values = stats[key]
        print(f"{title:<22} " + (", ".join(f"{k} {v}" for k, v in values.items()) if values else "-"))
    print(f"alerts {stats['alerts']}, snapshots {stats['snapshots']}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    config, db = _reader(args)
    if db is None:
        return 2

    rows = _select(db, args, args.limit)
    blobs = open_blobs(config.store)
    try:
        if args.format == "jsonl":
            args.out.mkdir(parents=True, exist_ok=True)
            with open(args.out / "samples.jsonl", "w", encoding="utf-8") as manifest:
                for row in rows:
                    (args.out / f"{row.sid}.jpg").write_bytes(blobs.get(row.image_sha256))
                    manifest.write(json.dumps({**row.as_dict(), "file": f"{row.sid}.jpg"}, sort_keys=True) + "\n")
            print(f"exported {len(rows)} samples to {args.out} (images + samples.jsonl)")
            return 0

        classes = resolve_classes(args.classes, config.labelling.classes)
        sources = [s.strip() for s in args.sources.split(",") if s.strip()]
        labelled = []
        for row in rows:
            truth = row.ground_truth(sources)
            if truth is not None:
                labelled.append(LabelledImage.from_row(row, truth, blobs.get(row.image_sha256)))
        if args.format == "yolo":
            write_yolo(args.out, labelled, classes, val_fraction=args.val_fraction)
        else:
            write_coco(args.out, labelled, classes)
        print(f"exported {len(labelled)} labelled samples of {len(rows)} to {args.out} ({args.format})")
        return 0
    except (StoreError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        blobs.close()


def run_fsck(args: argparse.Namespace) -> int:
    config, db = _reader(args)
    if db is None:
        return 2

    blobs = open_blobs(config.store)
    try:
        orphans, missing = find_orphans(db, blobs)
        print(f"{len(orphans)} blobs without an index row, {len(missing)} index rows without their blob")
        for sha in missing[:20]:
            print(f"  MISSING {sha}")
        if args.delete_orphans:
            for sha in orphans:
                blobs.delete(sha)
            print(f"deleted {len(orphans)} orphan blobs")
        return 1 if missing else 0
    finally:
        blobs.close()


# ------------------------------------------------------------------------------------------------ fleet


def run_fleet(args: argparse.Namespace) -> int:
    _, db = _reader(args)
    if db is None:
        return 2
    now = time.time()
    rows = fleet(db, now=now, window_s=args.window_hours * 3600, site=args.site, device=args.device)
    if args.device and not rows:
        print(f"error: no device {args.device!r} in the registry", file=sys.stderr)
        return 2
    if args.json:
        document: Dict[str, Any] = {"now": now, "devices": [r.as_dict() for r in rows]}
        if args.device:
            document["alerts"] = [a.__dict__ for a in alert_history(db, args.device, 20)]
            document["ota_history"] = [
                dict(r)
                for r in db.execute(
                    "SELECT * FROM ota_reports WHERE device = ? ORDER BY report_time DESC LIMIT 20", (args.device,)
                )
            ]
        print(json.dumps(document, indent=2, sort_keys=True, default=str))
        return 0
    window = f"/{args.window_hours:g}h" if args.window_hours != 1 else "/h"
    table = []
    for r in rows:
        streaming = sum(1 for c in r.cameras if c.state == "streaming")
        ota = r.ota_phase or "-"
        if r.ota_release:
            ota += f" {r.ota_release.get('version', '')}"
        table.append(
            [
                r.device,
                r.site,
                r.state or "?",
                f"{r.model_name} {r.model_version}" if r.model_name else "-",
                ota,
                ago(r.last_seen, now),
                f"{streaming}/{len(r.cameras)}",
                f"{r.alerts_in_window}",
                " ".join(f"{k[:4]}:{v}" for k, v in sorted(r.samples_in_window.items())) or "0",
                sum(v for k, v in r.drops.items() if not k.startswith("duplicate")) or "",
            ]
        )
    print(
        format_table(
            [
                "DEVICE",
                "SITE",
                "STATE",
                "MODEL",
                "OTA",
                "SEEN",
                "CAMS",
                f"ALERTS{window}",
                f"SAMPLES{window}",
                "REJECTED",
            ],
            table,
        )
    )
    if not rows:
        print("(no devices yet: has `edge-trainer serve` received anything?)")
    if args.device:
        (r,) = rows
        print()
        for c in r.cameras:
            print(
                f"camera {c.camera}: {c.state}, {c.fps:.1f} fps, {c.frames} frames, {c.drops} drops, "
                f"{c.reconnects} reconnects, status {ago(c.status_time, now)} ago"
                + (f", error: {c.error}" if c.error else "")
            )
        if r.ota_detail:
            print(f"OTA: {r.ota_phase} ({r.ota_detail}) {ago(r.ota_time, now)} ago")
        if r.drops:
            print("not stored: " + ", ".join(f"{k} {v}" for k, v in sorted(r.drops.items())))
        alerts = alert_history(db, r.device, 10)
        if alerts:
            print(
                format_table(
                    ["ALERT", "WHEN", "CAMERA", "RULE", "CLASSES", "CONF", "SNAPSHOT"],
                    (
                        [
                            a.id[:12],
                            ago(a.received_at, now),
                            a.camera,
                            a.rule_name,
                            ",".join(a.classes),
                            f"{a.max_confidence:.2f}",
                            (a.snapshot_sha256[:12] if a.snapshot_sha256 else ("pending" if a.snapshot_id else "-")),
                        ]
                        for a in alerts
                    ),
                )
            )
    return 0
