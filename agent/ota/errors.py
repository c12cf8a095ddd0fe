"""Errors of the OTA installer, split by fault; each carries a stable ``reason`` code for reports.

::

    OtaError                          base; ``reason`` (str) and ``detail`` (str)
    ├── TransportError                 "transport"         network / drive / chunk source failed (retry later)
    │     also "too_slow": past the fetch deadline or below the minimum average rate (slow retrieval)
    ├── VerificationError              the bytes are not what the signed metadata says (never retried as is)
    │     reasons: "unsigned" (missing, wrong or below-threshold signatures), "expired", "replayed"
    │     (older metadata than already seen), "hash_mismatch", "length_mismatch", "too_large",
    │     "not_found" (not in signed metadata), "metadata_invalid", "clock_rolled_back"
    ├── ReleaseRejected                the release is signed but not for us: "manifest_invalid",
    │                                  "incompatible", "below_floor", "known_bad"
    ├── HealthCheckFailed              "health_check_failed" (``problems`` lists what did not match)
    ├── BundleError                    "bundle_unsafe" / "bundle_invalid": a USB or pushed archive refused
    └── StateError                     "state": the installer's own state cannot be used (no known-good...)
          └── InProbation                a release is on probation: an install must wait (``ota install`` of a
                                         local bundle queues it instead; a push is deferred)
"""

from __future__ import annotations

from typing import List, Optional, Sequence


class OtaError(Exception):
    """Base class of OTA errors."""

    reason = "error"

    def __init__(self, detail: str, reason: Optional[str] = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


class TransportError(OtaError):
    """Fetching bytes failed (network, drive, chunk source); nothing was trusted or changed."""

    reason = "transport"


class VerificationError(OtaError):
    """Metadata or a target failed TUF verification (or our own time-floor / length checks)."""

    reason = "verification_failed"


class ReleaseRejected(OtaError):
    """A verified release that this device must not install."""

    reason = "rejected"


class HealthCheckFailed(OtaError):
    """The installed release did not pass its health check."""

    reason = "health_check_failed"

    def __init__(self, detail: str, problems: Sequence[str] = ()) -> None:
        super().__init__(detail)
        self.problems: List[str] = list(problems)


class BundleError(OtaError):
    """An archive or bundle directory was refused before anything was extracted or trusted."""

    reason = "bundle_unsafe"


class StateError(OtaError):
    """The installer state does not allow the operation (or could not be read)."""

    reason = "state"


class InProbation(StateError):
    """A release is on probation: another one may not be switched to before it commits or rolls back."""
