"""Regenerate the committed protobuf/gRPC code from the .proto files under protos/.

    python protos/generate.py            # rewrite bulk_uploader/proto/ in place
    python protos/generate.py --out DIR  # write into DIR (the drift test compares)

Run it with the pinned generators (grpcio-tools, mypy-protobuf) of the vendor environment:
`python tests/vendor_env.py` builds it and prints its interpreter, which runs this script.
The generated modules check the protobuf and grpcio runtime versions at import, so the
floors in pyproject.toml must match the generator that produced the committed code.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
PACKAGE_DIR = Path("bulk_uploader") / "proto"


def _plugin(name: str) -> str:
    """Locate a protoc plugin installed beside this interpreter (venvs) or on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: run this script with the interpreter `python tests/vendor_env.py` prints")
    return found


def generate(out_root: Path) -> list[Path]:
    """Generate code for every .proto under protos/ into out_root; return the files written."""
    import grpc_tools
    from grpc_tools import protoc  # generator-only dependency

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in (out_root / PACKAGE_DIR).iterdir() if p.is_file() and p.name != "__init__.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT)
    written = generate(parser.parse_args().out)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
