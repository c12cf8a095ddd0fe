"""The cloud side's parsers of outside bytes, fuzzed like the agent's (tests/agent/test_fuzz_parsers.py): the
ingest's decode of every device topic (a bad message must become a counted drop, never an exception) and the
trainer's configuration file."""

from __future__ import annotations

import pytest

from tests import fuzzing
from tests.agent.test_fuzz_parsers import SETTINGS

NAMES = ["ingest.decode", "config.trainer_yaml"]


@pytest.mark.parametrize("name", NAMES)
def test_seeds_are_accepted(name: str) -> None:
    target = fuzzing.target(name)
    assert all(fuzzing.outcome(target, seed) == "accepted" for seed in fuzzing.seeds_of(target))


@pytest.mark.parametrize("name", NAMES)
def test_random_bytes(name: str) -> None:
    fuzzing.run_random_bytes(fuzzing.target(name), SETTINGS)


@pytest.mark.parametrize("name", NAMES)
def test_mutated_valid_inputs(name: str) -> None:
    fuzzing.run_mutations(fuzzing.target(name), SETTINGS)


def test_a_complex_mapping_key_is_a_configuration_error() -> None:
    """Found by atheris (bench/fuzz.py): `? {...}` as a key escaped the loader as a TypeError."""
    target = fuzzing.target("config.trainer_yaml")
    assert fuzzing.outcome(target, b"# t\n? gate:e Ia   o{to: 1}\n: x\n") == "rejected"
    assert fuzzing.outcome(target, b"? {a: 1}\n: x\n") == "rejected"
