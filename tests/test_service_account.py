"""--sa-key: service account keys signed into JWTs and exchanged for expiring IAM tokens."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import ThreadedEmulator, cli_env, run_cli

from bulk_uploader import samples
from bulk_uploader.emulator import EmulatorOptions, FaultOptions
from bulk_uploader.emulator.iam import service_account_of
from bulk_uploader.errors import ConfigError
from bulk_uploader.results import read_records
from bulk_uploader.sakey import ServiceAccountKey, new_key
from bulk_uploader.transport.iam import IamTokenExchange

KEY = new_key("ajekey0001", "ajesa0001")  # made for these tests; no service knows it


def write_key(path: Path, key: ServiceAccountKey = KEY) -> Path:
    path.write_text(json.dumps(key.to_json()), encoding="utf-8")
    return path


def secrets_of(key: ServiceAccountKey) -> list[str]:
    """Pieces of a key that must never be printed."""
    body = key.private_key.split("-----BEGIN PRIVATE KEY-----")[1]
    return [line for line in body.splitlines() if len(line) > 40][:3]


def test_the_uploaders_jwt_is_ps256_and_the_emulators_check_holds_it_to_its_key() -> None:
    keys = {KEY.key_id: ServiceAccountKey(KEY.key_id, KEY.service_account_id, public_key=KEY.public_key)}
    now = time.time()
    token = KEY.jwt()
    assert service_account_of(token, keys, now) == "ajesa0001"
    header = json.loads(__import__("base64").urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"typ": "JWT", "alg": "PS256", "kid": "ajekey0001"}
    impostor = new_key("ajekey0001", "ajesa0001")  # same ids, another key pair
    with pytest.raises(ValueError, match="signature is not the key's"):
        service_account_of(impostor.jwt(), keys, now)
    head, claims, signature = token.split(".")
    with pytest.raises(ValueError, match="signature is not the key's"):
        service_account_of(f"{head}.{claims}.{signature[:-4]}AAAA", keys, now)
    with pytest.raises(ValueError, match="at most 3600"):
        service_account_of(KEY.jwt(lifetime=7200), keys, now)
    with pytest.raises(ValueError, match="expired"):
        service_account_of(KEY.jwt(now=now - 4000), keys, now)
    with pytest.raises(ValueError, match="no key"):
        service_account_of(new_key("other", "ajesa0001").jwt(), keys, now)


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
    # Every answer, the token service's too, comes 150 ms after its call: a token lives 0.85 s
    # from its arrival, and its renewal takes 0.15 s of that.
    server = ThreadedEmulator(EmulatorOptions(service_account_keys=(public,), iam_token_ttl=1.0,
                                              faults=FaultOptions(latency_ms=150)))
    try:
        manifest = samples.write_dataset(tmp_path, 200, sizes=(1000,))  # about 4 s at 8 x 150 ms
        key_file = write_key(tmp_path / "sa-key.json")
        started = time.monotonic()
        result = run_cli(str(manifest), "--endpoint", server.target, "--insecure", "--connection-id", "demo-audio",
                         "--concurrency", "8", "--sa-key", str(key_file), "--iam-endpoint", server.target)
        elapsed = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        records = read_records(manifest.with_name("manifest.jsonl.results.jsonl"))
        assert len(records) == 200 and all(r["status"] == "uploaded" for r in records)
        assert server.emulator.store.count() == 200
        issued = server.emulator.iam_tokens_issued
        refused = server.emulator.rejections.get("UNAUTHENTICATED", 0)
        print(f"{elapsed:.1f} s, {issued} IAM tokens issued, {refused} calls refused as unauthenticated")
        assert issued >= 3
        # Renewed before each token expired. A token renewed only once refused costs about the
        # calls in flight (8) at every renewal; one late renewal on a loaded machine is allowed.
        assert refused <= 8, f"{refused} calls were sent with an expired token ({issued} tokens)"
        output = result.stdout + result.stderr
        assert all(piece not in output for piece in secrets_of(KEY))
        assert all(token not in output for token in server.emulator._tokens)
    finally:
        server.close()


@pytest.mark.parametrize(("ttl", "latency_ms", "lives"), [(12 * 3600.0, 0, (12 * 3600 - 5, 12 * 3600)),
                                                         (1.0, 200, (0.7, 0.8)), (0.1, 200, None)])
async def test_a_tokens_lifetime_counts_from_its_arrival_and_is_unknown_once_past(
        ttl: float, latency_ms: float, lives: tuple[float, float] | None) -> None:
    """Answered 200 ms after issue, a 1-second token has 0.8 s left, not the second a floor once
    made of it; one that expired on the way (or by a clock ahead of the service's) has no lifetime."""
    public = ServiceAccountKey(KEY.key_id, KEY.service_account_id, public_key=KEY.public_key)
    server = ThreadedEmulator(EmulatorOptions(service_account_keys=(public,), iam_token_ttl=ttl,
                                              faults=FaultOptions(latency_ms=latency_ms)))
    try:
        token, lifetime = await IamTokenExchange(server.target, insecure=True)(KEY.jwt())
        assert token in server.emulator._tokens
        if lives is None:
            assert lifetime is None
        else:
            assert lifetime is not None and lives[0] <= lifetime <= lives[1]
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
        assert "gave no token for the service account key (UNAUTHENTICATED: invalid JWT: the signature is not the key's)" \
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


def hand_made_jwt(key: ServiceAccountKey, *, alg: str = "PS256", aud: str = "https://iam.api.cloud.yandex.net/iam/v1/tokens",
                  lifetime: int = 3600, issued: float | None = None, salt: int = 32, kid: str | None = None) -> str:
    """A JWT built here, apart from the uploader's signer and the emulator's check, as the token
    service's documentation describes it (PS256: RSASSA-PSS, SHA-256, salt 32 bytes)."""
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    iat = int(time.time() if issued is None else issued)
    head = part(json.dumps({"typ": "JWT", "alg": alg, "kid": kid or key.key_id}).encode())
    body = part(json.dumps({"iss": key.service_account_id, "aud": aud, "iat": iat, "exp": iat + lifetime}).encode())
    private = serialization.load_pem_private_key(key.private_key.encode(), password=None)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt)
    return f"{head}.{body}.{part(private.sign(f'{head}.{body}'.encode(), pss, hashes.SHA256()))}"  # type: ignore[union-attr,call-arg,arg-type]


@pytest.mark.parametrize(("variant", "refused"), [
    ({}, None),
    ({"aud": "https://iam.api.cloud.yandex.net/iam/v1/token"}, "aud must be"),
    ({"lifetime": 3601}, "at most 3600"),
    ({"issued": time.time() - 4000}, "expired"),
    ({"issued": time.time() + 600}, "not yet valid"),
    ({"salt": 64}, "signature"),  # PSS, but not PS256's salt: a strict verifier refuses it
    ({"alg": "RS256"}, "alg must be PS256"),
    ({"kid": "another-key"}, "no key"),
])
def test_the_emulators_token_service_checks_the_documented_jwt(variant: dict[str, object], refused: str | None) -> None:
    import grpc

    from bulk_uploader.proto import iam_pb2, iam_pb2_grpc

    public = ServiceAccountKey(KEY.key_id, KEY.service_account_id, public_key=KEY.public_key)
    server = ThreadedEmulator(EmulatorOptions(service_account_keys=(public,)))
    try:
        with grpc.insecure_channel(server.target) as channel:
            create = iam_pb2_grpc.IamTokenServiceStub(channel).Create
            request = iam_pb2.CreateIamTokenRequest(jwt=hand_made_jwt(KEY, **variant))  # type: ignore[arg-type]
            if refused is None:
                assert create(request, timeout=30).iam_token
                assert create(iam_pb2.CreateIamTokenRequest(jwt=KEY.jwt()), timeout=30).iam_token  # the uploader's
                return
            with pytest.raises(grpc.RpcError) as info:
                create(request, timeout=30)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and refused in (info.value.details() or "")
    finally:
        server.close()
