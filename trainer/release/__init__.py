"""Signed model releases: keys, the TUF repository, ``release`` and ``usb-bundle``.

Importable without torch (Python 3.8+): the agent's tests build repositories with it.
"""

from __future__ import annotations
