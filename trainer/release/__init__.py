"""Signed model releases: keys, the TUF repository, ``release`` and ``usb-bundle``, and the MQTT push of a release.

Importable without torch (Python 3.8+): the agent's tests build repositories with it.

Public surface: the keys (``KeyRing``), the repository, building releases and bundles, the metadata refresh, and
the push (``build_push``, ``Publisher``, ``publish``).
"""

from __future__ import annotations

from trainer.release.build import ROLE_FILENAMES, ReleaseSpec, build_bundle, build_release, channel_path
from trainer.release.keys import KeyError_, KeyRing, init_keys, rotate_keys
from trainer.release.push import DEFAULT_CHUNK, Publisher, PushError, build_push, bundle_manifest, publish, push_topic
from trainer.release.refresh import expiries, metrics_text, refresh, repository_lock, write_metrics
from trainer.release.repo import Repository, RepositoryError

__all__ = [
    "DEFAULT_CHUNK",
    "ROLE_FILENAMES",
    "KeyError_",
    "KeyRing",
    "Publisher",
    "PushError",
    "ReleaseSpec",
    "Repository",
    "RepositoryError",
    "build_bundle",
    "build_push",
    "build_release",
    "bundle_manifest",
    "channel_path",
    "expiries",
    "init_keys",
    "metrics_text",
    "publish",
    "push_topic",
    "refresh",
    "repository_lock",
    "rotate_keys",
    "write_metrics",
]
