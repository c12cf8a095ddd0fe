"""Moved: the release commands are trainer/commands/release.py. This alias keeps ``from trainer.release.cli import
main`` working for the agent's tests (tests/agent/ota) until they import ``trainer.commands.release``; nothing in
trainer/ imports it. Delete it then (issue 27)."""

from __future__ import annotations

from trainer.commands.release import main

__all__ = ["main"]
