"""The emulator's IAM token service: service account JWTs exchanged for IAM tokens.

IamTokenService.Create checks the JWT against the emulator's service account keys and
answers a token the emulator then accepts, for EmulatorOptions.iam_token_ttl seconds. The
check is the emulator's own reading of the documented JWT (../shared/SPEECHSENSE.md, "Auth"),
written apart from the uploader's signing and checking (bulk_uploader.sakey): PS256 as RFC
7518 defines it (RSASSA-PSS, SHA-256, MGF1 with SHA-256, a salt as long as the hash), kid the
key id, iss its service account, aud the token service, exp - iat at most an hour.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import TYPE_CHECKING

import grpc
from grpc import aio

from bulk_uploader.emulator.guard import sleep_until
from bulk_uploader.proto import iam_pb2, iam_pb2_grpc
from bulk_uploader.sakey import verify_pss_sha256

if TYPE_CHECKING:
    from bulk_uploader.emulator.state import EmulatorState
    from bulk_uploader.sakey import ServiceAccountKey

TOKEN_SERVICE = "https://iam.api.cloud.yandex.net/iam/v1/tokens"  # the JWT's audience
LONGEST_JWT = 3600  # seconds from iat to exp
CLOCK_SKEW = 60  # seconds an iat may lie ahead of the emulator's clock
PS256_SALT = 32  # bytes: RFC 7518 makes PS256's salt as long as SHA-256's output


def _segment(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def service_account_of(jwt: str, keys: dict[str, ServiceAccountKey], now: float) -> str:
    """The service account a JWT proves; ValueError saying why it proves none."""
    try:
        head, body, signature = jwt.split(".")
        header, claims = json.loads(_segment(head)), json.loads(_segment(body))
        signed = _segment(signature)
    except (ValueError, binascii.Error):
        raise ValueError("not a JWT (three base64url parts, the first two JSON)") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("not a JWT (its header and claims must be JSON objects)")
    if header.get("alg") != "PS256":
        raise ValueError(f"alg must be PS256, not {header.get('alg')!r}")
    key = keys.get(header.get("kid")) if isinstance(header.get("kid"), str) else None
    if key is None:
        raise ValueError(f"no key {header.get('kid')!r}")
    if not verify_pss_sha256(key, f"{head}.{body}".encode("ascii"), signed, salt_length=PS256_SALT):
        raise ValueError("the signature is not the key's")
    if claims.get("iss") != key.service_account_id:
        raise ValueError("iss is not the key's service account")
    if claims.get("aud") != TOKEN_SERVICE:
        raise ValueError(f"aud must be {TOKEN_SERVICE}")
    issued, expires = claims.get("iat"), claims.get("exp")
    if type(issued) is not int or type(expires) is not int:
        raise ValueError("iat and exp must be whole seconds")
    if expires - issued > LONGEST_JWT:
        raise ValueError(f"the JWT lives {expires - issued} s; at most {LONGEST_JWT}")
    if not issued - CLOCK_SKEW <= now < expires:
        raise ValueError("the JWT is expired or not yet valid")
    return key.service_account_id


class IamTokenServicer(iam_pb2_grpc.IamTokenServiceServicer):
    """IamTokenService.Create for service account keys: checks the JWT, answers an IAM token."""

    def __init__(self, emulator: EmulatorState) -> None:
        self.emu = emulator
        self.keys = {key.key_id: key for key in emulator.options.service_account_keys}

    async def Create(self, request: iam_pb2.CreateIamTokenRequest, context: aio.ServicerContext
                     ) -> iam_pb2.CreateIamTokenResponse:
        answer_at = time.monotonic() + self.emu.injector.delay()  # the response time every call has
        try:
            return await self._create(request, context)
        finally:
            await sleep_until(answer_at)

    async def _create(self, request: iam_pb2.CreateIamTokenRequest, context: aio.ServicerContext
                      ) -> iam_pb2.CreateIamTokenResponse:
        if request.WhichOneof("identity") != "jwt":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only jwt is supported by the emulator")
        try:
            service_account_of(request.jwt, self.keys, time.time())
        except ValueError as exc:
            self.emu.jwts_refused += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"invalid JWT: {exc}")
        ttl = self.emu.options.iam_token_ttl
        response = iam_pb2.CreateIamTokenResponse(iam_token=self.emu.issue_token(ttl))
        response.expires_at.FromNanoseconds(int((time.time() + ttl) * 1e9))
        self.emu.iam_tokens_issued += 1
        return response
