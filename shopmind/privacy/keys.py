"""The keyring: pseudonym keys and encryption keys, kept outside the database.

The key file is JSON (mode 0600) or the same JSON in the SHOPMIND_KEYRING environment variable:

    {"version": 1,
     "pseudonym":  {"active": "p1", "keys": {"p1": "<base64 32 bytes>"}},
     "encryption": {"active": "k1", "keys": {"k1": "<base64 32 bytes>"}},
     "token":      {"active": "t1", "keys": {"t1": "<base64 32 bytes>"}}}

`pseudonym` keys make user pseudonyms, `encryption` keys seal personal data, `token` keys make the
keyed hashes of sessions, devices and payment instruments. Rotation (shopmind.privacy.rotation) adds a
key and makes it active; old encryption keys stay until nothing is sealed with them, then are retired.
Token keys are not rotated: their hashes are not recoverable, so rotating would cut every device and
card off its history (risk features and block lists depend on it).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field
from typing import ClassVar
from pathlib import Path

from shopmind.config import private_dir
from shopmind.exceptions import ConfigError

KEY_BYTES = 32


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


@dataclass
class KeySet:
    """Keys of one kind, by id, and which one new data uses."""

    active: str
    keys: dict[str, bytes] = field(default_factory=dict)

    def get(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise ConfigError(f"key id {key_id!r} is not in the keyring (was it retired too early?)") from None

    def add(self, prefix: str) -> str:
        """Add a fresh key, make it active, return its id."""
        number = 1 + max((int(k[len(prefix):]) for k in self.keys if k[len(prefix):].isdigit()), default=0)
        key_id = f"{prefix}{number}"
        self.keys[key_id] = base64.b64decode(_new_key())
        self.active = key_id
        return key_id


@dataclass
class Keyring:
    """All of shopmind's secrets. Lives outside the database, so a database dump alone reveals no one."""

    pseudonym: KeySet
    encryption: KeySet
    token: KeySet

    KINDS: ClassVar[tuple[str, ...]] = ("pseudonym", "encryption", "token")
    PREFIXES: ClassVar[dict[str, str]] = {"pseudonym": "p", "encryption": "k", "token": "t"}

    @classmethod
    def generate(cls) -> "Keyring":
        ring = cls(KeySet(active=""), KeySet(active=""), KeySet(active=""))
        for kind in cls.KINDS:
            getattr(ring, kind).add(cls.PREFIXES[kind])
        return ring

    @classmethod
    def from_json(cls, text: str, source: str) -> "Keyring":
        try:
            raw = json.loads(text)
            sets = []
            for kind in cls.KINDS:
                part = raw[kind]
                keys = {kid: base64.b64decode(value, validate=True) for kid, value in part["keys"].items()}
                if part["active"] not in keys:
                    raise ValueError(f"{kind}.active names a key that is not in {kind}.keys")
                if any(len(k) != KEY_BYTES for k in keys.values()):
                    raise ValueError(f"every {kind} key must be {KEY_BYTES} bytes")
                sets.append(KeySet(active=part["active"], keys=keys))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # e.g. "keys" a list, not a map
            raise ConfigError(f"keyring from {source} is malformed: {exc}") from exc
        return cls(*sets)

    def to_json(self) -> str:
        def dump(ks: KeySet) -> dict:
            return {"active": ks.active, "keys": {k: base64.b64encode(v).decode() for k, v in ks.keys.items()}}

        return json.dumps({"version": 1, **{kind: dump(getattr(self, kind)) for kind in self.KINDS}}, indent=2)

    def save(self, path: Path) -> None:
        """Write atomically with owner-only permissions."""
        private_dir(path.parent)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def load_keyring(key_file: Path, inline: str = "") -> Keyring:
    """The keyring from inline JSON (environment) if given, else from the key file."""
    if inline:
        return Keyring.from_json(inline, "SHOPMIND_KEYRING")
    if not key_file.exists():
        raise ConfigError(f"no key file at {key_file}: run `shopmind init` (or set SHOPMIND_KEYRING)")
    return Keyring.from_json(key_file.read_text(), str(key_file))
