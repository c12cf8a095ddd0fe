"""Every parser of outside bytes, fuzzed (the targets: tests/fuzzing.py): random bytes, mutations of valid
inputs, and structure-aware archives. Each may only accept or raise its documented error type.

Derandomised here, so the suite is reproducible; ``bench/fuzz.py`` runs the same targets much longer (random
hypothesis seeds, then atheris where it installs) and records the counts in docs/BENCHMARKS.md. A finding
becomes a regression case in ``test_findings_stay_fixed``.
"""

from __future__ import annotations

import io
import tarfile
from typing import Callable, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import fuzzing

EXAMPLES = 120
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NAMES = [t.name for t in fuzzing.AGENT_TARGETS]  # the cloud's: tests/trainer/test_fuzz_cloud_parsers.py
EDITS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=8)


@pytest.mark.parametrize("name", NAMES)
def test_seeds_are_accepted_where_they_should_be(name: str) -> None:
    """The seeds must reach deep into each parser: most of them are valid inputs."""
    target = fuzzing.target(name)
    outcomes = [fuzzing.outcome(target, seed) for seed in fuzzing.seeds_of(target)]
    if name == "tuf.root-update":  # its seed claims version 2 without the signatures for it
        assert outcomes == ["rejected"]
    else:
        assert "accepted" in outcomes, outcomes


@pytest.mark.parametrize("name", NAMES)
def test_random_bytes(name: str) -> None:
    fuzzing.run_random_bytes(fuzzing.target(name), SETTINGS)


@pytest.mark.parametrize("name", NAMES)
def test_mutated_valid_inputs(name: str) -> None:
    fuzzing.run_mutations(fuzzing.target(name), SETTINGS)


_MEMBER_NAMES = st.sampled_from(
    ["bundle/bundle.json", "bundle/a", "bundle", "../x", "/etc/passwd", "bundle/../../x", "a/./b", "", ".", "b\x00c"]
) | st.text(min_size=1, max_size=12)
_MEMBER_TYPES = st.sampled_from(
    [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE]
)


@SETTINGS
@given(
    st.lists(
        st.tuples(_MEMBER_NAMES, _MEMBER_TYPES, st.integers(0, 0o7777), st.binary(max_size=64)), min_size=1, max_size=6
    ),
    st.sampled_from(["w", "w:gz"]),
)
def test_structured_archives(members: List[Tuple[str, bytes, int, bytes]], mode: str) -> None:
    """Archives built member by member: traversal, links, devices, set-id bits, duplicates, odd names."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:  # type: ignore[call-overload]
        for name, kind, perm, body in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = perm
            info.linkname = "../../etc/shadow" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            info.size = len(body) if kind == tarfile.REGTYPE else 0
            try:
                tar.addfile(info, io.BytesIO(body) if kind == tarfile.REGTYPE else None)
            except ValueError:  # tarfile itself refuses to write this header (e.g. NUL in a name)
                return
    fuzzing.outcome(fuzzing.target("usb.archive"), out.getvalue())


def _gzip_bundle() -> bytes:
    return fuzzing.seeds_of(fuzzing.target("usb.archive"))[1]


# Inputs the fuzzing found that once escaped as the wrong exception (a traceback instead of a clear error);
# each must now be a clean rejection. (target, why, how to make the input)
FINDINGS = [
    # mutated seed 1, edit (1, 3, 0): zlib.error "invalid stored block lengths" escaped vet_tar
    ("usb.archive", "corrupt deflate stream", lambda: fuzzing.mutate(_gzip_bundle(), [(1, 3, 0)])),
    ("usb.archive", "gzip stream cut short (EOFError)", lambda: _gzip_bundle()[: len(_gzip_bundle()) // 2]),
    ("usb.archive", "gzip header damaged (BadGzipFile)", lambda: b"\x1f\x8b\x09" + _gzip_bundle()[3:]),
    # atheris on the trainer's config: a complex mapping key (`? {...}`) raised TypeError in the loader
    ("config.yaml", "mapping key that is a mapping", lambda: b"? {a: 1}\n: x\n"),
    ("config.yaml", "mapping key that is a sequence", lambda: b"mqtt:\n  ? [a, b]\n  : x\n"),
]


@pytest.mark.parametrize("name, why, make", FINDINGS, ids=[f[1] for f in FINDINGS])
def test_findings_stay_fixed(name: str, why: str, make: Callable[[], bytes]) -> None:
    assert fuzzing.outcome(fuzzing.target(name), make()) == "rejected", why
