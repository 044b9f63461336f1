"""Service account keys: the JSON `yc iam key create` writes, and the PS256 JWTs made from them.

The one home of `cryptography`. The uploader signs a JWT with the private key and
exchanges it for an IAM token (bulk_uploader.auth); the emulator checks the JWT by its own
reading of the rules (emulator/iam.py), with verify_pss_sha256 for the signature, before it
hands out a token. Neither the private key nor a JWT ever appears
in repr(), messages or logs.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bulk_uploader.errors import ConfigError
from bulk_uploader.records import FrozenRecord, record

AUDIENCE = "https://iam.api.cloud.yandex.net/iam/v1/tokens"
MAX_JWT_LIFETIME = 3600  # seconds from iat to exp the token service accepts
# PS256 (RFC 7518): RSASSA-PSS with SHA-256, MGF1 with SHA-256, a salt as long as the hash.
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _pem(text: str) -> bytes:
    # Keys from `yc` start with a "PLEASE DO NOT REMOVE THIS LINE! ..." line before the PEM.
    start = text.find("-----BEGIN")
    return text[start:].encode("ascii") if start >= 0 else text.encode("ascii", "replace")


@record(slots=True)
class ServiceAccountKey(FrozenRecord):
    """An authorized key of a service account; repr() shows the ids only."""

    key_id: str
    service_account_id: str
    private_key: str = field(default="", repr=False)  # PEM; empty when only the public half is known
    public_key: str = field(default="", repr=False)  # PEM

    @classmethod
    def load(cls, path: Path, *, need_private: bool = True) -> ServiceAccountKey:
        """Read a key file; ConfigError says what is wrong without quoting the file."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the service account key {path}: {exc.strerror}") from None
        except ValueError:
            raise ConfigError(f"{path} is not JSON; expected the file `yc iam key create --output` writes") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object with id, service_account_id and private_key")
        wanted = ("id", "service_account_id", "private_key") if need_private else ("id", "service_account_id")
        missing = [name for name in wanted if not isinstance(data.get(name), str) or not data[name].strip()]
        if missing:
            raise ConfigError(f"{path}: the service account key has no {', '.join(missing)}")
        key = cls(data["id"], data["service_account_id"], data.get("private_key") or "", data.get("public_key") or "")
        try:
            if key.private_key:
                key._private()
            elif not key.public_key:
                raise ConfigError(f"{path}: the key has neither private_key nor public_key")
            else:
                key._public()
        except ValueError:
            raise ConfigError(f"{path}: the key material is not a PEM RSA key") from None
        return key

    def _private(self) -> rsa.RSAPrivateKey:
        loaded = serialization.load_pem_private_key(_pem(self.private_key), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError("not an RSA key")
        return loaded

    def _public(self) -> rsa.RSAPublicKey:
        if not self.public_key:
            return self._private().public_key()
        loaded = serialization.load_pem_public_key(_pem(self.public_key))
        if not isinstance(loaded, rsa.RSAPublicKey):
            raise ValueError("not an RSA key")
        return loaded

    def jwt(self, now: float | None = None, lifetime: int = MAX_JWT_LIFETIME) -> str:
        """A PS256 JWT the IAM token service exchanges for an IAM token."""
        issued = int(time.time() if now is None else now)
        header = {"typ": "JWT", "alg": "PS256", "kid": self.key_id}
        claims = {"iss": self.service_account_id, "aud": AUDIENCE, "iat": issued, "exp": issued + lifetime}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self._private().sign(signing_input.encode("ascii"), _PSS, hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    def to_json(self) -> dict[str, Any]:
        """The key file's content, in the form `yc iam key create` writes."""
        return {
            "id": self.key_id,
            "service_account_id": self.service_account_id,
            "created_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
            "key_algorithm": "RSA_2048",
            "public_key": self.public_key,
            "private_key": self.private_key,
        }


def new_key(key_id: str, service_account_id: str) -> ServiceAccountKey:
    """A fresh RSA 2048 key pair (for the emulator and rehearsals; real keys come from `yc`)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    notice = f"PLEASE DO NOT REMOVE THIS LINE! Yandex.Cloud SA Key ID <{key_id}>\n"
    return ServiceAccountKey(key_id, service_account_id, notice + private_pem, public_pem)


def verify_pss_sha256(key: ServiceAccountKey, data: bytes, signature: bytes, salt_length: int) -> bool:
    """Whether `signature` is the key's RSASSA-PSS signature of `data` with SHA-256, MGF1 with
    SHA-256 and a salt of `salt_length` bytes (the caller says which: the emulator's JWT check)."""
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt_length)
    try:
        key._public().verify(signature, data, pss, hashes.SHA256())
    except InvalidSignature:
        return False
    return True
