"""Reasoning envelopes (PROTOCOLS-RESPONSES §5.6): one opaque carrier for reasoning state across protocols.

An A thinking block's signature, an O `reasoning_content` or an R item's `encrypted_content` only verifies
where it was produced. When a client of another protocol has to carry it to the next turn (R
`encrypted_content`, A `signature`), the gateway hands out an envelope instead:

    "rg1." + base64url(nonce ‖ AES-256-GCM(key, JSON payload, aad = "rg1|tenant|channel|kind|model"))

The associated data binds it to the tenant, the channel (provider id), the kind of payload (`a`: one A
thinking/redacted_thinking block, `o`: {reasoning_content}, `r`: {id, encrypted_content}) and the upstream
model: an envelope replayed by another tenant, altered by one byte, or sent to another channel or model
does not open, and the item is dropped (never a 400, never "Invalid signature" upstream).

Pure: the key and the nonce source are passed in (the pipeline derives the key from SECRET_KEY).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "rg1."
NONCE_BYTES = 12


def is_envelope(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


@dataclass(frozen=True)
class Sealer:
    """Seals and opens envelopes for one request's tenant and route (channel + upstream model)."""

    key: bytes  # 32 bytes
    tenant: int
    channel: int
    model: str
    new_nonce: Callable[[int], bytes]  # os.urandom in production; deterministic in tests

    def _aad(self, kind: str) -> bytes:
        return f"rg1|{self.tenant}|{self.channel}|{kind}|{self.model}".encode()

    def seal(self, kind: str, payload: dict) -> str:
        nonce = self.new_nonce(NONCE_BYTES)
        plain = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        sealed = AESGCM(self.key).encrypt(nonce, plain, self._aad(kind))
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, kind: str, token: object) -> dict | None:
        """The payload, or None when the token is not an envelope of this tenant, route and kind."""
        if not is_envelope(token):
            return None
        raw = token[len(PREFIX) :]
        try:
            blob = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(blob) <= NONCE_BYTES:
            return None
        try:
            plain = AESGCM(self.key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], self._aad(kind))
        except InvalidTag:
            return None
        try:
            payload = json.loads(plain)
        except ValueError:
            return None
        return payload if isinstance(payload, dict) else None
