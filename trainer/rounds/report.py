"""A round's report: ``report.json`` (the whole record) and ``report.md`` with plots — per-class mAP before
and after on each holdout, PR curves, the learning curve over rounds, samples by reason and by device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np


def _plots(record: Dict[str, Any], history: Sequence[Dict[str, Any]], out: Path) -> Dict[str, str]:
    import matplotlib  # noqa: PLC0415 (matplotlib: trainer extra only, slow to import)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 (matplotlib: trainer extra only, slow to import)

    files: Dict[str, str] = {}
    scores = record.get("scores") or {}
    if scores:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        for ax, (title, before, after) in zip(
            axes,
            (("base holdout", "base_before", "base_after"), ("new-domain holdout", "new_before", "new_after")),
        ):
            classes = sorted(set(scores[before]["per_class"]) | set(scores[after]["per_class"]))
            x = np.arange(len(classes))
            ax.bar(
                x - 0.2,
                [scores[before]["per_class"].get(c, {}).get("map50_95", 0) for c in classes],
                0.4,
                label=f"before ({scores[before]['map50_95']:.3f})",
            )
            ax.bar(
                x + 0.2,
                [scores[after]["per_class"].get(c, {}).get("map50_95", 0) for c in classes],
                0.4,
                label=f"after ({scores[after]['map50_95']:.3f})",
            )
            ax.set_xticks(x)
            ax.set_xticklabels(classes, rotation=20, fontsize=8)
            ax.set_ylim(0, 1)
            ax.set_ylabel("mAP50-95 (INT8, agent engine)")
            ax.set_title(title)
            ax.legend(fontsize=8)
            ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        files["per_class"] = "per_class.png"
        fig.savefig(out / files["per_class"], dpi=100)
        plt.close(fig)

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        for ax, (title, before, after) in zip(
            axes,
            (("base holdout", "base_before", "base_after"), ("new-domain holdout", "new_before", "new_after")),
        ):
            for key, style in ((before, "--"), (after, "-")):
                for name, curve in scores[key].get("pr_curves", {}).items():
                    ax.plot(
                        curve["recall"],
                        curve["precision"],
                        style,
                        linewidth=1,
                        label=f"{name} {'after' if key == after else 'before'}",
                    )
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("recall")
            ax.set_ylabel("precision (IoU 0.5)")
            ax.set_title(f"{title}: before dashed, after solid")
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=6, ncol=2, loc="lower left")
        fig.tight_layout()
        files["pr_curves"] = "pr_curves.png"
        fig.savefig(out / files["pr_curves"], dpi=100)
        plt.close(fig)

    judged = [r for r in history if r.get("scores")]
    if record.get("scores") and record["id"] not in {r["id"] for r in judged}:
        judged.append(record)
    if judged:
        fig, ax = plt.subplots(figsize=(7, 4))
        xs = list(range(len(judged) + 1))
        first = judged[0]["scores"]
        for key, label in (("base", "base holdout"), ("new", "new-domain holdout")):
            ys = [first[f"{key}_before"]["map50_95"]] + [r["scores"][f"{key}_after"]["map50_95"] for r in judged]
            ax.plot(xs, ys, marker="o", label=label)
        for at, r in zip(xs[1:], judged):
            ax.annotate(r.get("state", "?")[:9], (at, 0.02), ha="center", fontsize=7, rotation=90)
        ax.set_xticks(xs)
        ax.set_xticklabels(["before"] + [f"round {i}" for i in range(1, len(judged) + 1)], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("candidate mAP50-95 (INT8)")
        ax.set_title("learning curve over rounds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        files["learning_curve"] = "learning_curve.png"
        fig.savefig(out / files["learning_curve"], dpi=100)
        plt.close(fig)

    split = record.get("split") or {}
    if split.get("by_reason") or split.get("by_device"):
        fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
        for ax, key, title in (
            (axes[0], "by_reason", "samples by reason"),
            (axes[1], "by_device", "samples by device"),
        ):
            items = sorted((split.get(key) or {}).items())
            ax.bar([k for k, _ in items], [v for _, v in items])
            ax.set_title(title)
            ax.tick_params(axis="x", rotation=20, labelsize=8)
            ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        files["samples"] = "samples.png"
        fig.savefig(out / files["samples"], dpi=100)
        plt.close(fig)
    return files


def _markdown(record: Dict[str, Any], files: Dict[str, str]) -> str:
    lines: List[str] = [f"# Learning round {record['id']}: {record['state']}", ""]
    running, candidate = record.get("from") or {}, record.get("candidate") or {}
    if running:
        lines.append(
            f"From {running.get('name')} {running.get('version')} to candidate {candidate.get('version', '-')}."
        )
    if record.get("reasons"):
        lines += ["", "Why:"] + [f"- {reason}" for reason in record["reasons"]]
    if record.get("error"):
        lines += ["", f"Failed: `{record['error']}`"]
    gate = record.get("gate")
    if gate:
        f = gate["figures"]
        lines += [
            "",
            "| holdout (INT8, agent engine, Ultralytics metrics) | before | after | change |",
            "|---|---:|---:|---:|",
            f"| base | {f['base_before']:.4f} | {f['base_after']:.4f} | {f['base_delta']:+.4f} |",
            f"| new domain (field samples never trained on) | {f['new_domain_before']:.4f} | "
            f"{f['new_domain_after']:.4f} | {f['new_domain_delta']:+.4f} |",
        ]
        if "int8_loss" in f:
            lines.append(f"\nINT8 against the candidate's FP32 on the base holdout: {f['int8_loss']:+.4f}.")
        lines.append(f"\nGate: **{'passed' if gate['passed'] else 'rejected'}**.")
    split = record.get("split")
    if split:
        lines += [
            "",
            f"Data: {split['train']} field samples trained on, "
            f"{split['holdout']} held out ({split['new_labelled']} labelled since the last round); by reason "
            f"{split['by_reason']}; by device {split['by_device']}.",
        ]
    training = record.get("training")
    if training:
        lines.append(
            f"Training: {training['epochs']} epochs, {training['train_images']} images (with replay), "
            f"{training['seconds']} s, {training['images_per_second']} images/s, device {training['device']}, "
            f"AMP {'on' if training['amp_active'] else 'off'}."
        )
    if record.get("calibration"):
        c = record["calibration"]
        lines.append(f"INT8 calibration: {c['field']} field images + {c['base']} base images.")
    release = record.get("release")
    if release:
        lines.append(
            f"Released: {release['name']} {release['version']} (counter {release['counter']}, channel "
            f"{release['channel']}) into {release['repo']}; online bundle {release['bundle']}."
        )
    steps = record.get("steps") or []
    if steps:
        # the last step (published, rejected, failed) is where the round ended: it has no duration
        timed = [f"{s['state']} {s['seconds']} s" for s in steps if "seconds" in s]
        lines.append(f"Steps: {', '.join(timed)}; ended {steps[-1]['state']}.")
    for key, title in (
        ("per_class", "Per class"),
        ("pr_curves", "PR curves"),
        ("learning_curve", "Over rounds"),
        ("samples", "Samples"),
    ):
        if key in files:
            lines += ["", f"## {title}", "", f"![{title}]({files[key]})"]
    return "\n".join(lines) + "\n"


def write_report(record: Dict[str, Any], history: Sequence[Dict[str, Any]], out: Path) -> Dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    files = _plots(record, history, out)
    (out / "report.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    (out / "report.md").write_text(_markdown(record, files))
    return {
        "dir": str(out),
        "json": str(out / "report.json"),
        "markdown": str(out / "report.md"),
        "plots": sorted(files.values()),
    }
