"""The emulator's IAM token service: service account JWTs exchanged for IAM tokens.

IamTokenService.Create checks the JWT against the emulator's service account keys and
answers a token the emulator then accepts, for EmulatorOptions.iam_token_ttl seconds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import grpc
from grpc import aio

from bulk_uploader.proto import iam_pb2, iam_pb2_grpc
from bulk_uploader.sakey import check_jwt

if TYPE_CHECKING:
    from bulk_uploader.emulator.state import EmulatorState


class IamTokenServicer(iam_pb2_grpc.IamTokenServiceServicer):
    """IamTokenService.Create for service account keys: checks the JWT, answers an IAM token."""

    def __init__(self, emulator: EmulatorState) -> None:
        self.emu = emulator
        self.keys = {key.key_id: key for key in emulator.options.service_account_keys}

    async def Create(self, request: iam_pb2.CreateIamTokenRequest, context: aio.ServicerContext
                     ) -> iam_pb2.CreateIamTokenResponse:
        if request.WhichOneof("identity") != "jwt":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only jwt is supported by the emulator")
        try:
            check_jwt(request.jwt, self.keys)
        except ValueError as exc:
            self.emu.jwts_refused += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"invalid JWT: {exc}")
        ttl = self.emu.options.iam_token_ttl
        response = iam_pb2.CreateIamTokenResponse(iam_token=self.emu.issue_token(ttl))
        response.expires_at.FromNanoseconds(int((time.time() + ttl) * 1e9))
        self.emu.iam_tokens_issued += 1
        return response
