"""A client made of nothing but the vendor SDK's stubs (run by the pinned vendor environment, tests/vendor_env.py)
uploads to `bulk-upload emulator`."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY, cli_env, run_cli

from bulk_uploader import samples
from bulk_uploader.emulator import messages_digest

pytestmark = pytest.mark.timeout(900)  # the first test may build the vendor environment


def test_sdk_client_uploads_wav_stream_and_chat(tmp_path: Path, emulator_process: Any, vendor_python: Path) -> None:
    store = tmp_path / "store.sqlite3"
    process = emulator_process("--api-key", API_KEY, "--store", str(store))
    wav, big = tmp_path / "call.wav", tmp_path / "big.wav"
    wav.write_bytes(samples.wav(200_000, seed=1))
    big.write_bytes(samples.wav(10 * 1024 * 1024, seed=2))
    out = subprocess.run(
        [str(vendor_python), str(Path(__file__).with_name("sdk_client.py")), process.target, str(wav), str(big)],
        capture_output=True, text=True, check=True, env=cli_env(API_KEY=API_KEY), timeout=120,
    )
    ids = json.loads(out.stdout)
    process.stop()
    talks = {t["talk_id"]: t for t in map(json.loads, run_cli("talks", str(store)).stdout.splitlines())}
    assert len(talks) == 3
    assert talks[ids["upload"]]["rpc"] == "Upload"
    assert talks[ids["upload"]]["sha256"] == hashlib.sha256(wav.read_bytes()).hexdigest()
    assert talks[ids["stream"]]["rpc"] == "UploadAsStream"
    assert talks[ids["stream"]]["size"] == big.stat().st_size > 10 * 1024 * 1024
    assert talks[ids["stream"]]["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
    chat = [("op-1", "2025-04-24T11:34:19Z", "Здравствуйте!"), ("cl-1", "2025-04-24T11:34:30.125Z", "Добрый день")]
    assert talks[ids["text"]]["rpc"] == "UploadText" and talks[ids["text"]]["message_count"] == 2
    assert talks[ids["text"]]["sha256"] == messages_digest(chat)[0]
