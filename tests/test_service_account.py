"""--sa-key: service account keys signed into JWTs and exchanged for expiring IAM tokens."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import ThreadedEmulator, cli_env, run_cli

from bulk_uploader import samples
from bulk_uploader.emulator import EmulatorOptions, FaultOptions
from bulk_uploader.errors import ConfigError
from bulk_uploader.results import read_records
from bulk_uploader.sakey import ServiceAccountKey, check_jwt, new_key

KEY = new_key("ajekey0001", "ajesa0001")  # made for these tests; no service knows it


def write_key(path: Path, key: ServiceAccountKey = KEY) -> Path:
    path.write_text(json.dumps(key.to_json()), encoding="utf-8")
    return path


def secrets_of(key: ServiceAccountKey) -> list[str]:
    """Pieces of a key that must never be printed."""
    body = key.private_key.split("-----BEGIN PRIVATE KEY-----")[1]
    return [line for line in body.splitlines() if len(line) > 40][:3]


def test_jwt_is_ps256_and_checked_against_the_public_key() -> None:
    keys = {KEY.key_id: ServiceAccountKey(KEY.key_id, KEY.service_account_id, public_key=KEY.public_key)}
    token = KEY.jwt()
    assert check_jwt(token, keys) == "ajesa0001"
    header = json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"typ": "JWT", "alg": "PS256", "kid": "ajekey0001"}
    impostor = new_key("ajekey0001", "ajesa0001")  # same ids, another key pair
    with pytest.raises(ValueError, match="signature does not match"):
        check_jwt(impostor.jwt(), keys)
    head, claims, signature = token.split(".")
    with pytest.raises(ValueError, match="signature does not match"):
        check_jwt(f"{head}.{claims}.{signature[:-4]}AAAA", keys)
    with pytest.raises(ValueError, match="at most 3600"):
        check_jwt(KEY.jwt(lifetime=7200), keys)
    with pytest.raises(ValueError, match="expired"):
        check_jwt(KEY.jwt(now=time.time() - 4000), keys)
    with pytest.raises(ValueError, match="unknown key id"):
        check_jwt(new_key("other", "ajesa0001").jwt(), keys)


def test_key_files_as_yc_writes_them_and_broken_ones(tmp_path: Path) -> None:
    loaded = ServiceAccountKey.load(write_key(tmp_path / "key.json"))
    assert loaded.private_key.startswith("PLEASE DO NOT REMOVE THIS LINE!")  # as yc writes it
    assert (loaded.key_id, loaded.service_account_id) == ("ajekey0001", "ajesa0001")
    assert "PRIVATE" not in repr(loaded) and secrets_of(KEY)[0] not in repr(loaded)
    (tmp_path / "bad.json").write_text(json.dumps({"id": "k", "service_account_id": "s", "private_key": "nope"}))
    with pytest.raises(ConfigError, match="not a PEM RSA key"):
        ServiceAccountKey.load(tmp_path / "bad.json")
    (tmp_path / "partial.json").write_text(json.dumps({"id": "k"}))
    with pytest.raises(ConfigError, match="no service_account_id, private_key"):
        ServiceAccountKey.load(tmp_path / "partial.json")


def test_a_run_with_sa_key_keeps_going_across_token_expiries(tmp_path: Path) -> None:
    public = ServiceAccountKey(KEY.key_id, KEY.service_account_id, public_key=KEY.public_key)
    server = ThreadedEmulator(EmulatorOptions(service_account_keys=(public,), iam_token_ttl=1.0,
                                              faults=FaultOptions(latency_ms=100)))
    try:
        manifest = samples.write_dataset(tmp_path, 300, sizes=(1000,))  # about 4 s at 8 x 100 ms
        key_file = write_key(tmp_path / "sa-key.json")
        started = time.monotonic()
        result = run_cli(str(manifest), "--endpoint", server.target, "--insecure", "--connection-id", "demo-audio",
                         "--concurrency", "8", "--sa-key", str(key_file), "--iam-endpoint", server.target)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        records = read_records(manifest.with_name("manifest.jsonl.results.jsonl"))
        assert len(records) == 300 and all(r["status"] == "uploaded" for r in records)
        assert server.emulator.store.count() == 300
        issued = server.emulator.iam_tokens_issued
        print(f"{elapsed:.1f} s, {issued} IAM tokens issued, "
              f"{server.emulator.rejections.get('UNAUTHENTICATED', 0)} calls refused as unauthenticated")
        assert issued >= 3 and issued >= elapsed - 1  # renewed before each 1-second token expired
        output = result.stdout + result.stderr
        assert all(piece not in output for piece in secrets_of(KEY))
        assert all(token not in output for token in server.emulator._tokens)
    finally:
        server.close()


def test_a_key_the_token_service_does_not_accept_stops_the_run(tmp_path: Path) -> None:
    public = ServiceAccountKey(KEY.key_id, KEY.service_account_id, public_key=KEY.public_key)
    server = ThreadedEmulator(EmulatorOptions(service_account_keys=(public,)))
    try:
        manifest = samples.write_dataset(tmp_path, 5, sizes=(1000,))
        impostor = new_key(KEY.key_id, KEY.service_account_id)
        key_file = write_key(tmp_path / "stolen.json", impostor)
        result = run_cli(str(manifest), "--endpoint", server.target, "--insecure", "--connection-id", "demo-audio",
                         "--sa-key", str(key_file), "--iam-endpoint", server.target, env=cli_env())
        assert result.returncode == 2
        assert "gave no token for the service account key (UNAUTHENTICATED: invalid JWT: the JWT's signature" \
            in result.stderr
        assert "Traceback" not in result.stderr
        assert all(piece not in result.stderr + result.stdout for piece in secrets_of(impostor))
        assert server.emulator.store.count() == 0 and server.emulator.jwts_refused == 1
    finally:
        server.close()


def test_emulator_process_makes_a_key_and_accepts_it(tmp_path: Path, emulator_process: type) -> None:
    key_file = tmp_path / "rehearsal-key.json"
    emulator = emulator_process("--sa-key", str(key_file), "--store", str(tmp_path / "store.sqlite3"))
    assert key_file.stat().st_mode & 0o077 == 0  # the private key is the owner's only
    manifest = samples.write_dataset(tmp_path, 20, sizes=(1000,))
    result = run_cli(str(manifest), "--endpoint", emulator.target, "--insecure", "--connection-id", "demo-audio",
                     "--sa-key", str(key_file), "--iam-endpoint", emulator.target, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "uploaded 20" in result.stderr
