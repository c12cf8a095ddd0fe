"""Fuzz every parser of outside bytes for longer than the suite does, and record the counts (issue 13).

    PYTHONPATH=. .venv/bin/python bench/fuzz.py [--examples 3000] [--atheris-seconds 60] [--only NAME] [--write]

Two phases per target (the targets and their allowed errors: tests/fuzzing.py):

1. hypothesis, random seed: ``--examples`` random byte strings and as many mutations of the valid seeds;
2. atheris (coverage-guided libFuzzer; agent, trainer and tuf modules instrumented) for ``--atheris-seconds``, in a
   child process per target, starting from the seeds; skipped where atheris does not install (it has no
   wheels for Python 3.8).

A finding is any exception outside the target's allowed types; the run prints the input (hypothesis) or keeps
libFuzzer's crash file, and exits 1. Every finding becomes a case in tests/agent/test_fuzz_parsers.py.
``--write`` replaces the fuzzing section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from bench.common import machine, write_section

REPO = Path(__file__).resolve().parents[1]


def hypothesis_phase(name: str, examples: int) -> Dict[str, Any]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests import fuzzing

    target = fuzzing.target(name)
    seeds = fuzzing.seeds_of(target)
    counts = {"accepted": 0, "rejected": 0}
    findings: List[str] = []
    options = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )

    def check(data: bytes) -> None:
        try:
            counts[fuzzing.outcome(target, data)] += 1
        except Exception as exc:
            findings.append(f"{type(exc).__name__}: {exc} <- {data[:200]!r}")
            raise

    @options
    @given(st.binary(max_size=2048))
    def random_bytes(data: bytes) -> None:
        check(data)

    edits = st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 1 << 24), st.integers(0, 255)), min_size=1, max_size=16
    )

    @options
    @given(st.integers(0, len(seeds) - 1), edits)
    def mutations(which: int, edit: List[Any]) -> None:
        check(fuzzing.mutate(seeds[which], edit))

    started = time.perf_counter()
    for phase in (random_bytes, mutations):
        try:
            phase()
        except Exception:
            break  # the finding is recorded; hypothesis has shrunk it
    return {
        "examples": counts["accepted"] + counts["rejected"] + len(findings),
        "accepted": counts["accepted"],
        "rejected": counts["rejected"],
        "findings": findings[-1:],
        "seconds": time.perf_counter() - started,
    }


def atheris_available() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def atheris_child(name: str, seconds: float, workdir: Path) -> None:
    """Runs in its own process: libFuzzer calls ``sys.exit`` when it is done."""
    import atheris

    with atheris.instrument_imports(include=["agent", "trainer", "tuf", "securesystemslib"]):
        # imported here, not lazily by the targets, so that their code is instrumented too
        import trainer.release.keys
        import trainer.release.repo  # noqa: F401
        from tests import fuzzing

    target = fuzzing.target(name)
    fuzzing.seeds_of(target)  # built before fuzzing starts (the TUF one signs a repository)
    corpus = workdir / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(fuzzing.seeds_of(target)):
        (corpus / f"seed-{i}").write_bytes(seed)

    dictionary = workdir / "tokens.dict"
    dictionary.write_text(_dictionary(fuzzing.seeds_of(target)))

    def one_input(data: bytes) -> None:
        fuzzing.outcome(target, data)

    atheris.Setup(
        [
            sys.argv[0],
            str(corpus),
            f"-max_total_time={int(seconds)}",
            "-max_len=4096",
            f"-dict={dictionary}",
            f"-artifact_prefix={workdir}/",
        ],
        one_input,
    )
    atheris.Fuzz()


def _dictionary(seeds: List[bytes]) -> str:
    """A libFuzzer dictionary: the JSON strings of the seeds (field names, enum values) and JSON's punctuation,
    so that coverage guidance gets past ``json.loads`` (C code, not instrumented) to the validation."""
    tokens = {b"{", b"}", b"[", b"]", b":", b",", b"null", b"true", b"false", b"0", b"-1", b"1e999", b'"'}
    for seed in seeds:
        tokens.update(re.findall(rb'"[^"\\]{1,40}"', seed))
    lines = []
    for i, token in enumerate(sorted(tokens)):
        escaped = "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\x{b:02x}" for b in token)
        lines.append(f'kw{i}="{escaped}"')
    return "\n".join(lines) + "\n"


_STATS = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+).*?exec/s: (\d+)")


def atheris_phase(name: str, seconds: float) -> Dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    started = time.perf_counter()
    run = subprocess.run(
        [
            sys.executable,
            __file__,
            "--atheris-child",
            name,
            "--atheris-seconds",
            str(seconds),
            "--workdir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    output = run.stdout + run.stderr
    matches = list(_STATS.finditer(output))
    match = matches[-1] if matches else None
    crashes = sorted(p.name for p in workdir.glob("crash-*"))
    result: Dict[str, Any] = {
        "seconds": time.perf_counter() - started,
        "returncode": run.returncode,
        "executions": int(match.group(1)) if match else None,
        "coverage": int(match.group(2)) if match else None,
        "features": int(match.group(3)) if match else None,
        "exec_per_s": int(match.group(4)) if match else None,
        "findings": [f"{workdir / c}" for c in crashes],
    }
    if crashes or (run.returncode != 0 and match is None):
        tail = [line for line in output.splitlines() if "Error" in line or "Traceback" in line or "==" in line]
        result["finding_detail"] = tail[-8:]
    return result


def render(report: Dict[str, Any]) -> str:
    lines = [
        "## Fuzzing the parsers (issue 13)",
        "",
        f"Machine: {report['machine']}. {report['examples']} hypothesis examples of random bytes and as many "
        "mutations of valid inputs per target (random seed), then "
        + (
            f"{report['atheris_seconds']:.0f} s of atheris {report['atheris_version']} (libFuzzer; the agent's, the "
            "trainer's and tuf's modules instrumented: coverage counts their edges) per target, from the same valid "
            "inputs."
            if report["atheris_version"]
            else "no atheris run (it does not install here)."
        )
        + " A finding is any exception but the target's own error type (tests/fuzzing.py).",
        "",
        "| target | what | hypothesis examples (accepted / rejected) | atheris executions (exec/s, coverage) "
        "| findings |",
        "|---|---|---:|---:|---|",
    ]
    for name, row in report["targets"].items():
        hyp, ath = row["hypothesis"], row.get("atheris")
        ath_cell = (
            f"{ath['executions']:,} ({ath['exec_per_s']:,}/s, cov {ath['coverage']})"
            if ath and ath.get("executions") is not None
            else "—"
        )
        found = len(hyp["findings"]) + (len(ath["findings"]) if ath else 0)
        lines.append(
            f"| `{name}` | {row['what']} | {hyp['examples']:,} ({hyp['accepted']:,} / {hyp['rejected']:,}) | "
            f"{ath_cell} | {found or 'none'} |"
        )
    lines += [
        "",
        "Found and fixed by this fuzzing (regression cases in tests/agent/test_fuzz_parsers.py and "
        "tests/trainer/test_fuzz_cloud_parsers.py): a damaged gzip USB bundle raised zlib.error or EOFError out of "
        "the archive vetting (a traceback for the operator instead of `bundle_invalid`); a YAML mapping key that is "
        "itself a mapping or a list (`? {a: 1}`) raised TypeError out of the configuration loader of the agent and "
        "the trainer instead of a configuration error (atheris, on the trainer's file).",
        "",
        "Reproduce: `make setup && PYTHONPATH=. .venv/bin/python bench/fuzz.py --write` "
        f"(took {report['seconds'] / 60:.0f} min). The suite runs the same targets derandomised, "
        "120 examples per strategy (`tests/agent/test_fuzz_parsers.py`).",
    ]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--examples", type=int, default=3000, help="Hypothesis examples per strategy and target.")
    parser.add_argument("--atheris-seconds", type=float, default=60.0, help="atheris time per target (0: skip).")
    parser.add_argument("--only", action="append", help="Fuzz only these targets (repeatable).")
    parser.add_argument("--write", action="store_true", help="Replace the fuzzing section of docs/BENCHMARKS.md.")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--atheris-child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.atheris_child:
        atheris_child(args.atheris_child, args.atheris_seconds, args.workdir)
        return 0

    from tests import fuzzing

    names = args.only or [t.name for t in fuzzing.TARGETS]
    use_atheris = args.atheris_seconds > 0 and atheris_available()
    started = time.perf_counter()
    report: Dict[str, Any] = {
        "machine": machine(),
        "examples": args.examples,
        "atheris_seconds": args.atheris_seconds if use_atheris else 0,
        "atheris_version": None,
        "targets": {},
    }
    if use_atheris:
        from importlib.metadata import version

        report["atheris_version"] = version("atheris")
    failed = False
    for name in names:
        row: Dict[str, Any] = {"what": fuzzing.target(name).what}
        print(f"[fuzz] {name}: hypothesis x{args.examples} ...", flush=True)
        row["hypothesis"] = hypothesis_phase(name, args.examples)
        if use_atheris:
            print(f"[fuzz] {name}: atheris {args.atheris_seconds:.0f} s ...", flush=True)
            row["atheris"] = atheris_phase(name, args.atheris_seconds)
        failed = failed or bool(row["hypothesis"]["findings"]) or bool(row.get("atheris", {}).get("findings"))
        print(f"[fuzz] {name}: {json.dumps(row, default=str)}", flush=True)
        report["targets"][name] = row
    report["seconds"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    print(render(report))
    if args.write:
        write_section("fuzz", render(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
