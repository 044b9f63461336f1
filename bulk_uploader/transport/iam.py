"""IamTokenExchange: a service account's signed JWT exchanged for an IAM token (IamTokenService.Create)."""

from __future__ import annotations

import time

import grpc
from grpc import aio

from bulk_uploader.errors import AuthError, CallFailure
from bulk_uploader.options import DEFAULT_IAM_ENDPOINT
from bulk_uploader.proto import iam_pb2, iam_pb2_grpc
from bulk_uploader.retry import RetryPolicy
from bulk_uploader.transport.status import classify


def token_lifetime(expires_at: float, now: float) -> float | None:
    """Seconds a token expiring at `expires_at` (the service's clock) lives from `now` (ours).

    None when that is not after now: our clock is ahead of the service's, so the difference
    says nothing. The token is then renewed at the refresh interval and whenever the service
    refuses it, rather than in a loop (a lifetime floored to a second would hide a token
    answered late, which then expires before its renewal)."""
    lifetime = expires_at - now
    return lifetime if lifetime > 0 else None


class IamTokenExchange:
    """Exchanges a service account's signed JWT for an IAM token (IamTokenService.Create).

    A channel per exchange: it happens about once an hour. Transient answers are tried
    again under `retry` (by default three more times, a few seconds apart); anything else
    raises AuthError, which stops the run.
    """

    def __init__(self, endpoint: str = DEFAULT_IAM_ENDPOINT, *, insecure: bool = False, timeout: float = 30.0,
                 retry: RetryPolicy | None = None) -> None:
        self.endpoint = endpoint
        self.insecure = insecure
        self.timeout = timeout
        self.retry = retry or RetryPolicy(retries=3, backoff_base=1.0, backoff_max=4.0)

    async def __call__(self, jwt: str) -> tuple[str, float | None]:
        """(IAM token, seconds it lives: None when not told or not known, see token_lifetime)."""
        attempts = self.retry.attempts()
        while True:
            try:
                response = await self._create(jwt)
                break
            except CallFailure as failure:
                try:
                    await attempts.after(failure)
                except CallFailure:
                    raise AuthError(f"the IAM token service at {self.endpoint} gave no token for the service "
                                    f"account key ({failure})") from None
        if not response.iam_token:
            raise AuthError(f"the IAM token service at {self.endpoint} answered without a token")
        if not response.HasField("expires_at"):
            return response.iam_token, None  # not told: renewed at the refresh interval
        return response.iam_token, token_lifetime(response.expires_at.ToNanoseconds() / 1e9, time.time())

    async def _create(self, jwt: str) -> iam_pb2.CreateIamTokenResponse:
        channel = (aio.insecure_channel(self.endpoint) if self.insecure
                   else aio.secure_channel(self.endpoint, grpc.ssl_channel_credentials()))
        try:
            stub = iam_pb2_grpc.IamTokenServiceStub(channel)
            return await stub.Create(iam_pb2.CreateIamTokenRequest(jwt=jwt), timeout=self.timeout)
        except aio.AioRpcError as exc:
            raise classify(exc) from None
        finally:
            await channel.close()
