"""The committed generated code is exactly what protos/generate.py makes from the .proto files, with
the pinned generators of the vendor environment (tests/vendor_env.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(900)  # it may build the vendor environment
def test_committed_code_matches_the_protos(tmp_path: Path, vendor_python: Path) -> None:
    subprocess.run(
        [str(vendor_python), str(REPO / "protos" / "generate.py"), "--out", str(tmp_path)],
        check=True, capture_output=True, text=True,
    )
    fresh = sorted((tmp_path / "bulk_uploader" / "proto").glob("*.py*"))
    assert [p.name for p in fresh] == [
        "iam_pb2.py", "iam_pb2.pyi", "iam_pb2_grpc.py", "iam_pb2_grpc.pyi",
        "speechsense_pb2.py", "speechsense_pb2.pyi", "speechsense_pb2_grpc.py", "speechsense_pb2_grpc.pyi",
    ]
    for path in fresh:
        committed = REPO / "bulk_uploader" / "proto" / path.name
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} drifted from protos/: run `python protos/generate.py` and commit the result"
        )
