"""Signing keys of the release repositories: files by default, any securesystemslib signer URI in general.

``keys.json`` in the key directory lists, per role, the threshold and the keys (public key + private key
URI). ``keys init`` writes ed25519 keys as PKCS#8 PEM files with a ``file2:`` URI; to move a role onto an
HSM or a cloud KMS, replace its entry's ``uri`` (``hsm:``, ``gcpkms:``, ``awskms:``, ``azurekms:``,
``hashivault:``) and ``public`` key with the device's — nothing else changes (see docs/OTA.md).

Roles::

    root        3 keys, threshold 2   offline; signs root metadata of both repositories
    targets     1 key                 offline; delegates models/* to "trainer"
    snapshot    1 key                 online
    timestamp   1 key                 online
    trainer     1 key                 online; the delegated role that signs releases
    offline     1 key                 offline; targets/snapshot/timestamp of the long-lived USB repository
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from securesystemslib.signer import Key, Signer, SSlibKey

KEYS_FILE = "keys.json"
DEFAULT_LAYOUT = {
    "root": (3, 2),
    "targets": (1, 1),
    "snapshot": (1, 1),
    "timestamp": (1, 1),
    "trainer": (1, 1),
    "offline": (1, 1),
}


class KeyError_(Exception):
    """The key directory is missing, malformed or a key cannot be loaded."""


@dataclass
class RoleKeys:
    threshold: int
    keys: List[Dict[str, Any]] = field(default_factory=list)  # {"public": {...}, "uri": "file2:..."}
    retired: List[Dict[str, Any]] = field(default_factory=list)  # previous keys (root rotation signs with them)

    def public_keys(self) -> List[Key]:
        return [_key(k) for k in self.keys]


def _key(entry: Dict[str, Any]) -> Key:
    pub = dict(entry["public"])
    keyid = pub.pop("keyid")
    return Key.from_dict(keyid, pub)


@dataclass
class KeyRing:
    """All roles' keys, loaded from (and saved to) a key directory."""

    directory: Path
    roles: Dict[str, RoleKeys]

    @classmethod
    def load(cls, directory: Path) -> KeyRing:
        path = Path(directory) / KEYS_FILE
        try:
            raw = json.loads(path.read_text("utf-8"))
            roles = {
                name: RoleKeys(int(r["threshold"]), list(r["keys"]), list(r.get("retired", [])))
                for name, r in raw["roles"].items()
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyError_(f"cannot read {path}: {exc}") from exc
        missing = sorted(set(DEFAULT_LAYOUT) - set(roles))
        if missing:
            raise KeyError_(f"{path}: roles missing: {missing}")
        return cls(Path(directory), roles)

    def save(self) -> None:
        data = {
            "roles": {
                n: {"threshold": r.threshold, "keys": r.keys, "retired": r.retired} for n, r in self.roles.items()
            }
        }
        tmp = self.directory / (KEYS_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", "utf-8")
        os.replace(tmp, self.directory / KEYS_FILE)

    def signers(self, role: str, retired: bool = False) -> List[Signer]:
        """Signers for ``role`` (current keys, or the retired ones); relative ``file2:`` paths resolve here."""
        entries = self.roles[role].retired if retired else self.roles[role].keys
        out = []
        for entry in entries:
            uri = entry["uri"]
            if uri.startswith("file2:") and not os.path.isabs(uri[len("file2:") :]):
                uri = "file2:" + str(self.directory / uri[len("file2:") :])
            try:
                out.append(Signer.from_priv_key_uri(uri, _key(entry)))
            except Exception as exc:
                raise KeyError_(f"cannot load a {role} key from {entry['uri']}: {exc}") from exc
        return out

    def public(self, role: str) -> List[Key]:
        return self.roles[role].public_keys()


def generate_file_key(directory: Path, name: str) -> Dict[str, Any]:
    """A new ed25519 key written to ``directory/name.pem`` (mode 0600); returns its keys.json entry."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path = directory / f"{name}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = SSlibKey.from_crypto(private.public_key())
    entry = public.to_dict()
    entry["keyid"] = public.keyid
    return {"public": entry, "uri": f"file2:{name}.pem"}


def init_keys(directory: Path, layout: Dict[str, Any] = DEFAULT_LAYOUT) -> KeyRing:
    """Create a key directory with fresh keys for every role; refuses to overwrite an existing one."""
    directory = Path(directory)
    if (directory / KEYS_FILE).exists():
        raise KeyError_(f"{directory / KEYS_FILE} exists; use 'keys rotate' to change keys")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    roles = {}
    for role, (count, threshold) in layout.items():
        roles[role] = RoleKeys(threshold, [generate_file_key(directory, f"{role}-{i + 1}") for i in range(count)])
    ring = KeyRing(directory, roles)
    ring.save()
    return ring


def rotate_keys(ring: KeyRing, role: str, count: int = 0) -> KeyRing:
    """Replace every key of ``role`` with new ones (old ones move to ``retired`` for the root handover)."""
    if role not in ring.roles:
        raise KeyError_(f"unknown role {role!r}; roles: {sorted(ring.roles)}")
    current = ring.roles[role]
    n = count or len(current.keys)
    taken = {p.name for p in ring.directory.glob(f"{role}-*.pem")}
    new: List[Dict[str, Any]] = []
    i = 1
    while len(new) < n:
        name = f"{role}-{i}"
        if f"{name}.pem" not in taken:
            new.append(generate_file_key(ring.directory, name))
        i += 1
    ring.roles[role] = RoleKeys(min(current.threshold, n), new, current.keys)
    ring.save()
    return ring
