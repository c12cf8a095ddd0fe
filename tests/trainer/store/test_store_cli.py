"""`edge-trainer samples`, `fleet` and `ingest-status` for a person: tables and JSON over a filled store."""

from __future__ import annotations

import json

import pytest

from agent.protocol import OtaPhase, SampleReason
from tests.trainer import helpers as h
from trainer.cli import main
from trainer.commands.tables import ago, format_table


@pytest.fixture
def filled(tmp_path):
    config, path = h.store_config(tmp_path)
    snap_topic, snap_payload, ref = h.snapshot(device="dev-2")
    messages = [
        h.device_status("dev-1"),
        h.device_status("dev-2", state="offline"),
        h.camera_status("dev-1", fps=9.5),
        h.camera_status("dev-1", camera="line-2", fps=0.0),
        h.ota_report("dev-2", phase=OtaPhase.ROLLED_BACK),
        h.alert("dev-2", snapshot_ref=ref)[:2],
        (snap_topic, snap_payload),
    ]
    messages += [h.sample("dev-1", reason=SampleReason.UNCERTAIN)[:2] for _ in range(3)]
    messages += [h.sample("dev-1", reason=SampleReason.FLAGGED, note="the PLC rejected it")[:2]]
    messages += [h.synthetic_sample(seed=2, index=i, device="dev-2")[:2] for i in range(2)]
    h.fill_store(config, messages)
    return config, path


def test_samples_list_show_stats(filled, tmp_path, capsys):
    _, path = filled
    assert main(["samples", "list", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:5] == ["SID", "RECEIVED", "DEVICE", "CAMERA", "REASON"]
    assert len(out.splitlines()) == 2 + 6 and "factory:2:1" in out
    assert main(["samples", "list", "--config", str(path), "--reason", "flagged", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    flagged = json.loads(line)
    assert flagged["note"] == "the PLC rejected it" and flagged["device"] == "dev-1"
    assert (
        main(["samples", "show", str(flagged["sid"]), "--config", str(path), "--image", str(tmp_path / "x.jpg")]) == 0
    )
    out = capsys.readouterr().out
    assert "the PLC rejected it" in out and "thresholds" in out and "crack" in out
    assert (tmp_path / "x.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert main(["samples", "show", "nope", "--config", str(path)]) == 2
    assert main(["samples", "stats", "--config", str(path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == 6 and stats["by_reason"] == {"flagged": 1, "uncertain": 5} and stats["synthetic"] == 2
    assert stats["alerts"] == 1 and stats["snapshots"] == 1
    assert main(["samples", "stats", "--config", str(path)]) == 0
    assert "by reason" in capsys.readouterr().out


def test_samples_export_jsonl(filled, tmp_path, capsys):
    _, path = filled
    assert main(["samples", "export", str(tmp_path / "out"), "--device", "dev-2", "--config", str(path)]) == 0
    lines = (tmp_path / "out" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["synthetic"]["domain"] == "factory" for line in lines)
    for line in lines:
        assert (tmp_path / "out" / json.loads(line)["file"]).exists()


def test_fleet_table_and_device(filled, capsys):
    _, path = filled
    assert main(["fleet", "--config", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["DEVICE", "SITE", "STATE", "MODEL"]
    dev1 = next(line for line in lines if line.startswith("dev-1"))
    dev2 = next(line for line in lines if line.startswith("dev-2"))
    assert "online" in dev1 and "2/2" in dev1 and "unce:3" in dev1 and "flag:1" in dev1
    assert "offline" in dev2 and "rolled_back" in dev2
    assert main(["fleet", "dev-2", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ALERT" in out and "cracks" in out  # the alert with its snapshot
    assert main(["fleet", "--json", "--config", str(path)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {d["device"] for d in document["devices"]} == {"dev-1", "dev-2"}
    assert main(["fleet", "dev-9", "--config", str(path)]) == 2


def test_ingest_status_reads_the_running_service(tmp_path, broker, capsys):
    config = h.trainer_config(tmp_path, broker.port)
    path = h.write_config(config, tmp_path / "trainer.yaml")
    assert main(["ingest-status", "--config", str(path)]) == 2  # not running: says so
    assert "is `edge-trainer serve` running" in capsys.readouterr().err
    with h.running_service(config) as service:
        assert h.wait_until(lambda: h.service_subscribed(config), 10)
        assert main(["ingest-status", "--config", str(path)]) == 0
        out = capsys.readouterr().out
        assert "connected protocol 5" in out and service.ingest.worker_name in out
        assert main(["ingest-status", "--json", "--config", str(path)]) == 0
        assert json.loads(capsys.readouterr().out)["threads"] == {
            "metrics-http": "alive",
            "mqtt-ingest": "alive",
            "store-writer": "alive",
        }


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "t.yaml"
    bad.write_text("store:\n  pathh: /x\n")
    assert main(["samples", "stats", "--config", str(bad)]) == 2
    assert "store.pathh: Extra inputs are not permitted" in capsys.readouterr().err
    bad.write_text("ingest:\n  sites: [a/b]\n")
    assert main(["serve", "--config", str(bad)]) == 2
    assert "ingest.sites" in capsys.readouterr().err


def test_table_and_ages():
    assert format_table(["A", "BB"], [[1, None], ["xyz", 2]]).splitlines() == ["A    BB", "---  --", "1", "xyz  2"]
    assert [ago(None, 100), ago(95, 100), ago(100 - 120, 100), ago(100 - 7200, 100), ago(100 - 3 * 86400, 100)] == [
        "-",
        "5s",
        "2m",
        "2h",
        "3d",
    ]


def test_fsck_finds_orphans_and_missing_blobs(filled, capsys):
    config, path = filled
    from trainer.store import LocalBlobStore

    blobs = LocalBlobStore(config.store.path)
    orphan = h.unique_jpeg("orphan")
    import hashlib

    blobs.put_many([(hashlib.sha256(orphan).hexdigest(), orphan)])  # as if the index commit never happened
    assert main(["samples", "fsck", "--config", str(path)]) == 0
    assert "1 blobs without an index row, 0 index rows" in capsys.readouterr().out
    assert main(["samples", "fsck", "--delete-orphans", "--config", str(path)]) == 0
    assert not blobs.exists(hashlib.sha256(orphan).hexdigest())
    victim = next(iter(blobs.iter_digests()))
    blobs.delete(victim)
    assert main(["samples", "fsck", "--config", str(path)]) == 1
    assert f"MISSING {victim}" in capsys.readouterr().out
    blobs.close()


def test_the_example_trainer_yaml_is_valid(monkeypatch, tmp_path):
    from trainer.settings import load_trainer_config

    (tmp_path / "s3-secret-key").write_text("x")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = load_trainer_config(h.REPO / "examples" / "trainer.yaml")
    assert config.ingest.sites == ["plant-1"] and config.store.blobs.durability == "syncfs"
    assert config.rounds is not None and config.rounds.gate.max_base_regression == 0.01
    assert config.rollout is not None and [s.group for s in config.rollout.stages] == ["canary", "wave1", None]
