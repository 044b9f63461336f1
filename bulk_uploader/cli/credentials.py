"""Which credentials an upload runs with: a service account key, a token command, or a fixed key
or token from the file given, else from API_KEY / IAM_TOKEN in the environment the caller passes
in (the command reads the environment, this module does not); cryptography loads only when a
service account key is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from bulk_uploader.auth import AuthProvider, Credentials, ServiceAccountAuth, TokenCommand
from bulk_uploader.cli.upload_args import AuthArgs
from bulk_uploader.errors import ConfigError
from bulk_uploader.options import is_loopback


def _read_secret(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from None


def credentials_from(api_key_file: Path | None, iam_token_file: Path | None,
                     env: Mapping[str, str]) -> Credentials | None:
    """Credentials from the files given, else from API_KEY / IAM_TOKEN as the vendor's docs name them."""
    if api_key_file and iam_token_file:
        raise ConfigError("give either --api-key-file or --iam-token-file, not both")
    if api_key_file:
        return Credentials("Api-Key", _read_secret(api_key_file, "API key"))
    if iam_token_file:
        return Credentials("Bearer", _read_secret(iam_token_file, "IAM token"))
    if env.get("API_KEY"):
        return Credentials("Api-Key", env["API_KEY"].strip())
    if env.get("IAM_TOKEN"):
        return Credentials("Bearer", env["IAM_TOKEN"].strip())
    return None


def choose_credentials(auth: AuthArgs, insecure: bool, env: Mapping[str, str]) -> AuthProvider | None:
    """The run's credentials; None when none are given (a dry run needs none)."""
    if auth.sa_key and auth.iam_token_command:
        raise ConfigError("give either --sa-key or --iam-token-command, not both")
    if auth.sa_key:
        if insecure and not is_loopback(auth.iam_endpoint):
            raise ConfigError("--insecure would send the service account's signed JWT in plaintext to "
                              f"{auth.iam_endpoint}; with the emulator, pass --iam-endpoint as well")
        from bulk_uploader.sakey import ServiceAccountKey  # cryptography, only when needed
        from bulk_uploader.transport import IamTokenExchange  # gRPC

        return ServiceAccountAuth(ServiceAccountKey.load(auth.sa_key),
                                  IamTokenExchange(auth.iam_endpoint, insecure=insecure),
                                  refresh_every=auth.token_refresh_seconds)
    if auth.iam_token_command:
        return TokenCommand(auth.iam_token_command, refresh_every=auth.token_refresh_seconds)
    return credentials_from(auth.api_key_file, auth.iam_token_file, env)
