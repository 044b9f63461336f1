"""The vendor environment: a virtual environment of its own with the pinned vendor SDK and code
generators (tests/vendor-requirements.txt), for the tests that compare our protos with the SDK's
and regenerate the committed code. The rest of the suite runs on the versions users install.

    python tests/vendor_env.py     # build it (or check it is current) and print its interpreter

Built once at .venv-vendor/ and rebuilt when the requirements file changes;
BULK_UPLOAD_VENDOR_PYTHON names an interpreter built elsewhere instead.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = Path(__file__).with_name("vendor-requirements.txt")
HOME = REPO / ".venv-vendor"
BUILD_SECONDS = 900  # a fresh machine downloads and installs about 20 packages


def _stamp() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def _python(home: Path) -> Path:
    return home / "bin" / "python"


def vendor_python() -> Path:
    """The vendor environment's interpreter, built first if it is missing or out of date."""
    given = os.environ.get("BULK_UPLOAD_VENDOR_PYTHON")
    if given:
        return Path(given)
    HOME.parent.mkdir(parents=True, exist_ok=True)
    with open(REPO / ".venv-vendor.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once build it once
        stamp = HOME / "requirements.sha256"
        if not (stamp.is_file() and stamp.read_text() == _stamp() and _python(HOME).exists()):
            _build()
    return _python(HOME)


def _build() -> None:
    shutil.rmtree(HOME, ignore_errors=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(HOME)
    result = subprocess.run(
        [str(_python(HOME)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
        capture_output=True, text=True, timeout=BUILD_SECONDS,
    )
    if result.returncode != 0:
        raise RuntimeError(f"building the vendor environment failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    (HOME / "requirements.sha256").write_text(_stamp())


if __name__ == "__main__":
    print(vendor_python())
    sys.exit(0)
