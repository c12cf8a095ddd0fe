"""The index's tables (SQLite, WAL). One file holds the samples and their lineage, their labels, the alerts and
snapshots, and the fleet registry, so one transaction stores a whole ingest batch.

Times are UNIX seconds (REAL, UTC). JSON columns hold the message's own sub-documents as the device sent
them (predictions, thresholds, boxes), so nothing of the lineage is lost to a column layout.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- every image blob once, whoever sent it (meta.used_bytes is the sum of size)
CREATE TABLE IF NOT EXISTS blobs (
    sha256  TEXT PRIMARY KEY,
    size    INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    created REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS samples (
    sid           INTEGER PRIMARY KEY,
    device        TEXT NOT NULL,
    id            TEXT NOT NULL,
    site          TEXT NOT NULL,
    camera        TEXT NOT NULL,
    reason        TEXT NOT NULL,
    track_id      INTEGER,
    note          TEXT,
    model_name    TEXT NOT NULL,
    model_version TEXT NOT NULL,
    model_sha256  TEXT NOT NULL,
    thresholds    TEXT NOT NULL,
    predictions   TEXT NOT NULL,
    frame_time    REAL NOT NULL,
    received_at   REAL NOT NULL,
    image_sha256  TEXT NOT NULL,
    image_size    INTEGER NOT NULL,
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    synthetic     TEXT,
    worker        TEXT NOT NULL,
    label_state   TEXT NOT NULL DEFAULT 'pending',
    UNIQUE (device, id),
    UNIQUE (device, image_sha256)
);
CREATE INDEX IF NOT EXISTS samples_received ON samples (received_at);
CREATE INDEX IF NOT EXISTS samples_device_received ON samples (device, received_at);
CREATE INDEX IF NOT EXISTS samples_label_state ON samples (label_state, sid);

CREATE TABLE IF NOT EXISTS labels (
    lid        INTEGER PRIMARY KEY,
    sid        INTEGER NOT NULL REFERENCES samples (sid),
    source     TEXT NOT NULL,
    author     TEXT NOT NULL,
    created_at REAL NOT NULL,
    boxes      TEXT NOT NULL,
    ref        TEXT,
    ref_key    TEXT,
    note       TEXT
);
CREATE INDEX IF NOT EXISTS labels_sid ON labels (sid, lid);
-- the same reviewed annotation (or oracle / teacher verdict) imported twice is one label
CREATE UNIQUE INDEX IF NOT EXISTS labels_ref ON labels (sid, source, ref_key);

CREATE TABLE IF NOT EXISTS label_exports (
    export_id  TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    target     TEXT NOT NULL,
    project    TEXT,
    location   TEXT,
    classes    TEXT NOT NULL,
    count      INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS label_tasks (
    export_id TEXT NOT NULL REFERENCES label_exports (export_id),
    sid       INTEGER NOT NULL REFERENCES samples (sid),
    task_id   INTEGER,
    PRIMARY KEY (export_id, sid)
);
CREATE INDEX IF NOT EXISTS label_tasks_task ON label_tasks (export_id, task_id);

CREATE TABLE IF NOT EXISTS alerts (
    aid            INTEGER PRIMARY KEY,
    device         TEXT NOT NULL,
    id             TEXT NOT NULL,
    site           TEXT NOT NULL,
    camera         TEXT NOT NULL,
    rule_name      TEXT NOT NULL,
    rule           TEXT NOT NULL,
    boxes          TEXT NOT NULL,
    classes        TEXT NOT NULL,
    max_confidence REAL NOT NULL,
    model_name     TEXT NOT NULL,
    model_version  TEXT NOT NULL,
    model_sha256   TEXT NOT NULL,
    frame_time     REAL NOT NULL,
    created_time   REAL NOT NULL,
    received_at    REAL NOT NULL,
    snapshot_id    TEXT,
    UNIQUE (device, id)
);
CREATE INDEX IF NOT EXISTS alerts_device_received ON alerts (device, received_at);

CREATE TABLE IF NOT EXISTS snapshots (
    device       TEXT NOT NULL,
    id           TEXT NOT NULL,
    site         TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    image_size   INTEGER NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    received_at  REAL NOT NULL,
    PRIMARY KEY (device, id)
);

-- the fleet registry: one row per device, one per camera, and the OTA history
CREATE TABLE IF NOT EXISTS devices (
    device        TEXT PRIMARY KEY,
    site          TEXT NOT NULL,
    first_seen    REAL NOT NULL,
    last_seen     REAL NOT NULL,
    state         TEXT,
    agent_version TEXT,
    protocol      INTEGER,
    model_name    TEXT,
    model_version TEXT,
    model_sha256  TEXT,
    status_time   REAL,
    groups        TEXT,
    ota_phase     TEXT,
    ota_release   TEXT,
    ota_active    TEXT,
    ota_progress  REAL,
    ota_detail    TEXT,
    ota_time      REAL
);

-- the active model's figures on a device, as its statuses report them (cumulative since the model started)
CREATE TABLE IF NOT EXISTS device_quality (
    device          TEXT NOT NULL,
    status_time     REAL NOT NULL,
    model_sha256    TEXT NOT NULL,
    model_version   TEXT,
    since           REAL NOT NULL,
    frames          INTEGER NOT NULL,
    detections      INTEGER NOT NULL,
    confidence_sum  REAL NOT NULL,
    alerts          INTEGER NOT NULL,
    uncertain       INTEGER NOT NULL,
    PRIMARY KEY (device, status_time)
);
CREATE INDEX IF NOT EXISTS device_quality_model ON device_quality (device, model_sha256, status_time);

CREATE TABLE IF NOT EXISTS cameras (
    device         TEXT NOT NULL,
    camera         TEXT NOT NULL,
    state          TEXT NOT NULL,
    source         TEXT NOT NULL,
    fps            REAL NOT NULL,
    frames         INTEGER NOT NULL,
    drops          INTEGER NOT NULL,
    reconnects     INTEGER NOT NULL,
    last_frame_time REAL,
    error          TEXT,
    status_time    REAL NOT NULL,
    received_at    REAL NOT NULL,
    PRIMARY KEY (device, camera)
);

CREATE TABLE IF NOT EXISTS ota_reports (
    device      TEXT NOT NULL,
    id          TEXT NOT NULL,
    phase       TEXT NOT NULL,
    release     TEXT,
    active      TEXT,
    progress    REAL,
    detail      TEXT,
    report_time REAL NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (device, id)
);
CREATE INDEX IF NOT EXISTS ota_reports_device_time ON ota_reports (device, report_time);

-- what was not stored, counted per device and reason (rejections, refusals, duplicates)
CREATE TABLE IF NOT EXISTS drops (
    device      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    count       INTEGER NOT NULL,
    first_at    REAL NOT NULL,
    last_at     REAL NOT NULL,
    last_topic  TEXT NOT NULL,
    last_detail TEXT NOT NULL,
    PRIMARY KEY (device, reason)
);

-- the newest rejected messages themselves (first bytes only), for forensics; pruned to a fixed count
CREATE TABLE IF NOT EXISTS rejected (
    rid         INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    site        TEXT NOT NULL,
    device      TEXT NOT NULL,
    topic       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    message_id  TEXT,
    head        BLOB NOT NULL
);
"""
