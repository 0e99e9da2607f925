"""Field-level encryption of personal data with AES-256-GCM.

Each value is stored as an envelope `<key id>:<base64(nonce || ciphertext+tag)>`, so the key id sits
beside the ciphertext and rotation can find what each key still protects. The field name is bound as
associated data, so a ciphertext copied into another field fails to decrypt instead of leaking.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shopmind.exceptions import ConfigError
from shopmind.privacy.keys import KeySet

NONCE_BYTES = 12


class FieldCipher:
    """Encrypts with the active key; decrypts with whichever key the envelope names."""

    def __init__(self, keys: KeySet):
        self._keys = keys
        self._aead: dict[str, AESGCM] = {}

    def _cipher(self, key_id: str) -> AESGCM:
        if key_id not in self._aead:
            self._aead[key_id] = AESGCM(self._keys.get(key_id))
        return self._aead[key_id]

    @property
    def active_key_id(self) -> str:
        return self._keys.active

    def encrypt(self, field: str, plaintext: str | None) -> str | None:
        if plaintext is None:
            return None
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._cipher(self._keys.active).encrypt(nonce, plaintext.encode(), field.encode())
        return f"{self._keys.active}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, field: str, envelope: str | None) -> str | None:
        if envelope is None:
            return None
        key_id, _, body = envelope.partition(":")
        blob = base64.b64decode(body)
        try:
            plain = self._cipher(key_id).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], field.encode())
        except InvalidTag:
            raise ConfigError(f"cannot decrypt field {field!r} with key {key_id!r}: wrong key or tampered data") from None
        return plain.decode()

    @staticmethod
    def key_id_of(envelope: str) -> str:
        return envelope.partition(":")[0]
