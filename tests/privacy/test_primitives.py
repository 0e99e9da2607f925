"""Pseudonyms, field encryption and the keyring on their own."""

from __future__ import annotations

import pytest

from shopmind.exceptions import ConfigError
from shopmind.privacy.crypto import FieldCipher
from shopmind.privacy.keys import Keyring
from shopmind.privacy.pseudonym import Pseudonymizer


def test_pseudonyms_are_stable_keyed_and_domain_separated():
    ring, other = Keyring.generate(), Keyring.generate()
    p = Pseudonymizer(ring.pseudonym, ring.token)
    assert p.user("42") == p.user("42") and len(p.user("42")) == 32
    assert p.user("42") != p.user("43")
    assert p.user("42") != Pseudonymizer(other.pseudonym, other.token).user("42")
    assert len({p.user("42"), p.session("42"), p.token("device", "42")}) == 3  # each pair differs


def test_field_encryption_round_trip_and_binding():
    ring = Keyring.generate()
    cipher = FieldCipher(ring.encryption)
    sealed = cipher.encrypt("users.email", "a@b.c")
    assert sealed.startswith(ring.encryption.active + ":") and "a@b.c" not in sealed
    assert cipher.encrypt("users.email", "a@b.c") != sealed  # fresh nonce every time
    assert cipher.decrypt("users.email", sealed) == "a@b.c"
    with pytest.raises(ConfigError, match="users.phone"):
        cipher.decrypt("users.phone", sealed)  # moved to another field
    kid, body = sealed.split(":")
    tampered = kid + ":" + body[:-4] + ("AAAA" if body[-4:] != "AAAA" else "BBBB")
    with pytest.raises(ConfigError):
        cipher.decrypt("users.email", tampered)


def test_malformed_keyrings_are_refused_by_name():
    with pytest.raises(ConfigError, match="malformed"):
        Keyring.from_json('{"pseudonym": {}}', "test")
    ring = Keyring.generate()
    ring.encryption.active = "k9"
    with pytest.raises(ConfigError, match="encryption.active"):
        Keyring.from_json(ring.to_json(), "test")
