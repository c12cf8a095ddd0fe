"""The cloud side's parsers of outside bytes, fuzzed like the agent's (tests/agent/test_fuzz_parsers.py): the
ingest's decode of every device topic (a bad message must become a counted drop, never an exception) and the
trainer's configuration file."""

from __future__ import annotations

from typing import List, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import fuzzing
from tests.agent.test_fuzz_parsers import EDITS, SETTINGS

NAMES = ["ingest.decode", "config.trainer_yaml"]


@pytest.mark.parametrize("name", NAMES)
def test_seeds_are_accepted(name: str) -> None:
    target = fuzzing.target(name)
    assert all(fuzzing.outcome(target, seed) == "accepted" for seed in fuzzing.seeds_of(target))


@pytest.mark.parametrize("name", NAMES)
def test_random_bytes(name: str) -> None:
    target = fuzzing.target(name)

    @SETTINGS
    @given(st.binary(max_size=512))
    def run(data: bytes) -> None:
        fuzzing.outcome(target, data)

    run()


@pytest.mark.parametrize("name", NAMES)
def test_mutated_valid_inputs(name: str) -> None:
    target = fuzzing.target(name)
    seeds = fuzzing.seeds_of(target)

    @SETTINGS
    @given(st.integers(0, len(seeds) - 1), EDITS)
    def run(which: int, edits: List[Tuple[int, int, int]]) -> None:
        fuzzing.outcome(target, fuzzing.mutate(seeds[which], edits))

    run()


def test_a_complex_mapping_key_is_a_configuration_error() -> None:
    """Found by atheris (bench/fuzz.py): `? {...}` as a key escaped the loader as a TypeError."""
    target = fuzzing.target("config.trainer_yaml")
    assert fuzzing.outcome(target, b"# t\n? gate:e Ia   o{to: 1}\n: x\n") == "rejected"
    assert fuzzing.outcome(target, b"? {a: 1}\n: x\n") == "rejected"
