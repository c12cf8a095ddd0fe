"""Spool drain benchmark: N samples of SIZE bytes queued while offline, then drained to a local mosquitto
at full speed with QoS 1 (each item deleted only after its PUBACK).

    PYTHONPATH=. python bench/bench_spool_drain.py [--n 2000] [--size 50000] [--synchronous FULL] [--verify]

Prints put rate, drain rate (samples/s, MB/s) from CONNACK to an empty spool, and with --verify that a
subscriber received every message id. Target: >= 500 samples/s of 50 kB.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from agent.link import MqttConfig, MqttLink
from agent.protocol import DeviceStatus, Topics
from agent.spool import Spool, SpoolConfig
from tests.agent.broker import Collector, MosquittoBroker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="write the spool section of docs/BENCHMARKS.md")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--verify", action="store_true", help="also subscribe and check every id arrived")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-spool-") as tmp:
        work = Path(tmp)
        broker = MosquittoBroker(work / "broker", extra_conf="max_inflight_messages 0\n")
        broker.start()
        try:
            spool = Spool(SpoolConfig(path=work / "spool.db", max_bytes=4 << 30, synchronous=args.synchronous))
            topics = Topics("edge", "bench", "dev-bench")
            payload = os.urandom(args.size)
            t0 = time.perf_counter()
            for i in range(args.n):
                spool.put("sample", topics.samples, payload, message_id=f"s-{i}")
            put_s = time.perf_counter() - t0

            collector = None
            if args.verify:
                collector = Collector(broker.port, client_id="bench-sub").subscribe(topics.samples)

            config = MqttConfig(
                host="127.0.0.1", port=broker.port, site="bench", device="dev-bench", window=args.window
            )
            status = DeviceStatus(
                device="dev-bench",
                site="bench",
                state="online",
                agent_version="bench",
                ts=datetime.now(timezone.utc),
            )
            link = MqttLink(config, spool, lambda: status)
            link.start()
            if not link.wait_connected_blocking(10):
                raise SystemExit("could not connect")
            t1 = time.perf_counter()
            while len(spool) and time.perf_counter() - t1 < 300:
                time.sleep(0.005)
            drain_s = time.perf_counter() - t1
            left = len(spool)
            metrics = link.metrics()
            link.stop()
            received = None
            if collector is not None:
                deadline = time.time() + 60
                while len(collector.messages) < args.n and time.time() < deadline:
                    time.sleep(0.05)
                received = len({m[3].get("id") for m in collector.messages})
                collector.close()
            spool.close()
        finally:
            broker.close()

    mb = args.n * args.size / 1e6
    print(
        f"put:   {args.n} x {args.size} B in {put_s:.2f} s = {args.n / put_s:.0f} puts/s "
        f"(synchronous={args.synchronous})"
    )
    print(
        f"drain: {args.n - left} x {args.size} B in {drain_s:.2f} s = "
        f"{(args.n - left) / drain_s:.0f} samples/s, "
        f"{mb / drain_s:.1f} MB/s (QoS 1, window {metrics.window}, "
        f"published {metrics.published}, acked {metrics.acked})"
    )
    if received is not None:
        print(f"verify: subscriber received {received} distinct ids of {args.n}")
    if left:
        raise SystemExit(f"{left} items left in the spool")
    if args.write:
        from bench.common import machine, write_section

        rate = (args.n - left) / drain_s
        check = "" if received is None else f"; a subscriber on the same machine received {received} distinct ids"
        write_section(
            "spool",
            f"""## Spool drain to a local broker (issue 5)

Machine: {machine()}. {args.n} samples of {args.size} bytes put into the spool (SQLite WAL,
synchronous={args.synchronous}) while the broker is away, then drained by the MQTT link to a local mosquitto
with QoS 1 (each item deleted only on its PUBACK, window {metrics.window}){check}.

| drain | samples/s | MB/s | target |
|---|---:|---:|---|
| {args.n} x {args.size // 1000} kB | **{rate:.0f}** | {mb / drain_s:.1f} | ≥ 500 samples/s |

Put rate meanwhile: {args.n / put_s:.0f} puts/s (each durable when it returns).
Reproduce: `make setup && PYTHONPATH=. .venv/bin/python bench/bench_spool_drain.py --verify --write`.
""",
        )


if __name__ == "__main__":
    main()
