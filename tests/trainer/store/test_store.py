"""The sample store without a broker: blobs (both durability modes, S3 through a local S3-compatible server),
the index's exactly-once keys across two writers, status ordering, and the registry's queries."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time

import pytest

from agent.protocol import ProtocolLimits
from tests.agent.broker import free_port
from tests.trainer import helpers as h
from trainer.ingest import decode
from trainer.store import (
    BlobCorruptError,
    BlobNotFoundError,
    LocalBlobStore,
    Outcome,
    SampleStore,
    StoreConfig,
    StoreSchemaError,
    StoreWriteError,
    fleet,
    get_sample,
    list_samples,
    open_reader,
)


def rec(topic, payload, worker="w1", at=None):
    return decode(topic, payload, "edge", ProtocolLimits(), at or time.time(), worker)


def make_store(tmp_path, **store):
    return SampleStore(
        StoreConfig(path=tmp_path / "store", budget={"min_free_bytes": 0, **store.pop("budget", {})}, **store)
    )


@pytest.mark.parametrize("durability", ["syncfs", "fsync"])
def test_local_blobs_round_trip_and_detect_corruption(tmp_path, durability):
    blobs = LocalBlobStore(tmp_path, durability=durability)
    assert blobs.durability == durability
    data = [h.unique_jpeg(str(i)) for i in range(5)]
    items = [(hashlib.sha256(d).hexdigest(), d) for d in data]
    blobs.put_many(items)
    blobs.put_many(items)  # again: content-addressed, nothing changes
    assert sorted(blobs.iter_digests()) == sorted(s for s, _ in items)
    assert blobs.get(items[0][0]) == data[0]
    blobs.path(items[1][0]).write_bytes(b"\xff\xd8\xff tampered")
    with pytest.raises(BlobCorruptError):
        blobs.get(items[1][0])
    with pytest.raises(BlobNotFoundError):
        blobs.get("0" * 64)
    with pytest.raises(ValueError):
        blobs.put_many([("../../etc/passwd", b"x")])
    assert not list((tmp_path / "blobs" / "tmp").iterdir())
    blobs.close()


def test_blob_write_failure_is_a_store_write_error(tmp_path):
    blobs = LocalBlobStore(tmp_path)
    (tmp_path / "blobs" / "aa").write_text("a file where a directory should be")
    with pytest.raises(StoreWriteError):
        blobs.put_many([("aa" + "0" * 62, b"\xff\xd8\xffdata")])
    blobs.close()


def test_two_writers_store_each_message_once(tmp_path):
    """Two workers (two connections to one index) given the same messages: every sample is stored once."""
    messages = [h.sample(device=f"dev-{i % 3}") for i in range(60)]
    records = [rec(t, p) for t, p, _ in messages]
    stores = [make_store(tmp_path), make_store(tmp_path)]
    outcomes = [[], []]

    def run(k):
        for start in range(0, 60, 10):
            outcomes[k].extend(stores[k].write_batch(records[start : start + 10]))

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = [o for run in outcomes for o in run]
    assert stored.count(Outcome.STORED) == 60 and stored.count(Outcome.DUPLICATE) == 60
    db = open_reader(tmp_path / "store" / "index.sqlite3")
    assert len(list_samples(db, limit=None)) == 60
    assert db.execute("SELECT value FROM meta WHERE key='used_bytes'").fetchone()[0] == str(
        sum(m.image.size for _, _, m in messages)
    )
    for s in stores:
        s.close()


def test_older_status_does_not_overwrite_newer(tmp_path):
    store = make_store(tmp_path)
    new = h.now()
    old = new.replace(year=new.year - 1)
    assert store.write_batch([rec(*h.device_status(state="offline", ts=new))]) == [Outcome.UPDATED]
    assert store.write_batch([rec(*h.device_status(state="online", ts=old))]) == [Outcome.STALE]
    (row,) = fleet(open_reader(store.config.index_path), now=time.time())
    assert row.state == "offline"
    store.close()


def test_lineage_is_kept_whole(tmp_path):
    from agent.protocol import SyntheticFrameRef

    store = make_store(tmp_path)
    ref = SyntheticFrameRef(domain="drifted", seed=7, index=123, width=320, height=240)
    topic, payload, meta = h.sample(synthetic=ref, note="operator says crack", track_id=5)
    store.write_batch([rec(topic, payload, worker="w9")])
    row = get_sample(open_reader(store.config.index_path), meta.id)
    assert row.synthetic == ref.model_dump() and row.note == "operator says crack" and row.track_id == 5
    assert row.thresholds == meta.thresholds and row.predictions == [b.model_dump() for b in meta.predictions]
    assert row.frame_time == pytest.approx(meta.frame_ts.timestamp()) and row.worker == "w9"
    assert (row.model_name, row.model_version, row.model_sha256) == (
        meta.model.name,
        meta.model.version,
        meta.model.sha256,
    )
    assert get_sample(open_reader(store.config.index_path), f"dev-1/{meta.id}").sid == row.sid
    assert store.blobs.get(row.image_sha256) == payload[-meta.image.size :]
    store.close()


def test_newer_schema_is_refused(tmp_path):
    make_store(tmp_path).close()
    db = sqlite3.connect(tmp_path / "store" / "index.sqlite3")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreSchemaError):
        make_store(tmp_path)


@pytest.fixture(scope="module")
def s3_server():
    """A local S3-compatible server: moto's server mode, a stand-in for AWS S3 / SeaweedFS / Garage."""
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_s3_blob_store(tmp_path, s3_server):
    import boto3

    boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    ).create_bucket(Bucket="samples")
    config = StoreConfig(
        path=tmp_path / "store",
        blobs={
            "type": "s3",
            "bucket": "samples",
            "prefix": "site-a/",
            "endpoint_url": s3_server,
            "region": "us-east-1",
            "access_key_id": "test",
            "secret_access_key": "test",
            "addressing_style": "path",
        },
        budget={"min_free_bytes": 0},
    )
    store = SampleStore(config)
    messages = [h.sample() for _ in range(12)]
    assert store.write_batch([rec(t, p) for t, p, _ in messages]) == [Outcome.STORED] * 12
    assert store.write_batch([rec(t, p) for t, p, _ in messages[:3]]) == [Outcome.DUPLICATE] * 3
    assert sorted(store.blobs.iter_digests()) == sorted(m.image.sha256 for _, _, m in messages)
    sha = messages[0][2].image.sha256
    assert hashlib.sha256(store.blobs.get(sha)).hexdigest() == sha
    import urllib.request

    with urllib.request.urlopen(store.blobs.url(sha)) as response:  # a pre-signed URL for a labelling tool
        assert hashlib.sha256(response.read()).hexdigest() == sha
    with pytest.raises(BlobNotFoundError):
        store.blobs.get("0" * 64)
    store.close()


def test_s3_down_is_a_store_write_error(tmp_path):
    pytest.importorskip("boto3")
    config = StoreConfig(
        path=tmp_path / "store",
        blobs={
            "type": "s3",
            "bucket": "samples",
            "endpoint_url": f"http://127.0.0.1:{free_port()}",
            "region": "us-east-1",
            "access_key_id": "x",
            "secret_access_key": "y",
        },
        budget={"min_free_bytes": 0},
    )
    store = SampleStore(config)
    store.blobs.client.meta.config.retries = {"max_attempts": 1}
    topic, payload, _ = h.sample()
    with pytest.raises(StoreWriteError):
        store.write_batch([rec(topic, payload)])
    assert list_samples(open_reader(config.index_path)) == []  # nothing indexed without its blob
    store.close()


def test_a_record_sqlite_cannot_hold_is_dropped_alone(tmp_path):
    """An integer beyond 64 bits passes the message model (ge=0, no upper bound) but not SQLite: that one
    message is counted invalid, the rest of its batch is stored, and nothing is retried forever."""
    store = make_store(tmp_path)
    good = [h.sample() for _ in range(2)]
    huge_track = h.sample(track_id=2**70)
    topic, payload = h.camera_status()
    import json as _json

    doc = _json.loads(payload)
    doc["frames"] = 2**64
    records = [rec(*good[0][:2]), rec(*huge_track[:2]), rec(topic, _json.dumps(doc).encode()), rec(*good[1][:2])]
    assert store.write_batch(records) == [Outcome.STORED, Outcome.DROPPED, Outcome.DROPPED, Outcome.STORED]
    db = open_reader(store.config.index_path)
    assert {r.id for r in list_samples(db, limit=None)} == {good[0][2].id, good[1][2].id}
    (drop,) = [dict(r) for r in db.execute("SELECT * FROM drops")]
    assert drop["reason"] == "invalid" and drop["count"] == 2 and "OverflowError" in drop["last_detail"]
    store.close()
