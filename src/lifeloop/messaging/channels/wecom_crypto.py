"""WeCom (and WeChat) callback message encryption, as Tencent's WXBizMsgCrypt does it.

- ``msg_signature`` = SHA-1 of the sorted concatenation of token, timestamp, nonce and the ciphertext;
- the AES key is base64(EncodingAESKey + "="), 32 bytes; AES-256-CBC with the key's first 16 bytes
  as IV; PKCS#7 padding to a 32-byte block;
- plaintext = 16 random bytes + message length (4 bytes, big-endian) + message + receiveid
  (the corp id for a company's own app).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

_BLOCK = 32


class CallbackCryptoError(Exception):
    """A callback that is forged, corrupted, or meant for another receiver."""


def msg_signature(token: str, timestamp: str, nonce: str, encrypted: str) -> str:
    return hashlib.sha1("".join(sorted([token, timestamp, nonce, encrypted])).encode()).hexdigest()


class WeComCrypto:
    def __init__(self, token: str, encoding_aes_key: str, receive_id: str) -> None:
        if len(encoding_aes_key) != 43:
            raise ValueError("EncodingAESKey must be the 43 characters shown in the WeCom admin console")
        try:
            self.key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except binascii.Error:
            raise ValueError("EncodingAESKey is not valid base64") from None
        self.token = token
        self.receive_id = receive_id

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))

    def verify(self, signature: str, timestamp: str, nonce: str, encrypted: str) -> None:
        expected = msg_signature(self.token, timestamp, nonce, encrypted)
        if not hmac.compare_digest(expected, signature or ""):
            raise CallbackCryptoError("msg_signature does not match: not sent by WeCom with this token")

    def decrypt(self, encrypted: str) -> str:
        try:
            raw = base64.b64decode(encrypted, validate=True)
        except binascii.Error:
            raise CallbackCryptoError("ciphertext is not base64") from None
        if not raw or len(raw) % 16:
            raise CallbackCryptoError("ciphertext length is not a multiple of the AES block")
        decryptor = self._cipher().decryptor()
        padded = decryptor.update(raw) + decryptor.finalize()
        pad = padded[-1]
        if not 1 <= pad <= _BLOCK or padded[-pad:] != bytes([pad]) * pad:
            raise CallbackCryptoError("bad padding: wrong EncodingAESKey or corrupted message")
        plain = padded[:-pad]
        if len(plain) < 20:
            raise CallbackCryptoError("decrypted message is too short")
        (length,) = struct.unpack(">I", plain[16:20])
        message, receive_id = plain[20 : 20 + length], plain[20 + length :]
        if len(message) != length:
            raise CallbackCryptoError("decrypted message length does not match its header")
        if receive_id.decode(errors="replace") != self.receive_id:
            raise CallbackCryptoError("message is addressed to another corp id")
        return message.decode()

    def encrypt(self, message: str, *, random16: bytes | None = None) -> str:
        body = message.encode()
        plain = (random16 or secrets.token_bytes(16)) + struct.pack(">I", len(body)) + body
        plain += self.receive_id.encode()
        pad = _BLOCK - len(plain) % _BLOCK
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()).decode()

    def open(self, signature: str, timestamp: str, nonce: str, encrypted: str) -> str:
        """Verify, then decrypt: what a callback handler does first with every request."""
        self.verify(signature, timestamp, nonce, encrypted)
        return self.decrypt(encrypted)

    def seal(self, message: str, timestamp: str, nonce: str) -> tuple[str, str]:
        """Encrypt and sign (ciphertext, msg_signature): what WeCom does when it calls us."""
        encrypted = self.encrypt(message)
        return encrypted, msg_signature(self.token, timestamp, nonce, encrypted)
