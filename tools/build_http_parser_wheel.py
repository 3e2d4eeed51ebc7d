"""Build a pure-Python wheel of ``http-parser`` from its upstream sdist.

pymesos needs ``http-parser``, which is published only as an sdist whose C
extension no longer compiles on CPython >= 3.11 and whose ``setup.py`` imports
``imp`` (gone in 3.12). The package also ships a pure-Python parser that
``http_parser.http`` falls back to, and that is all pymesos needs. This script
downloads the upstream sdist through pip (so the package index stays the only
source), keeps its ``.py`` modules, and writes them as a ``py3-none-any`` wheel
into a wheelhouse; ``pip install --find-links <wheelhouse> .`` then prefers
that wheel and installs pymesos normally.

Usage: python tools/build_http_parser_wheel.py WHEELHOUSE
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

NAME = "http-parser"
VERSION = "0.9.0"
WHEEL_NAME = f"http_parser-{VERSION}-py3-none-any.whl"
DIST_INFO = f"http_parser-{VERSION}.dist-info"


def download_sdist(into: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--dest",
            str(into),
            f"{NAME}=={VERSION}",
        ],
        check=True,
    )
    return next(into.glob("http-parser-*.tar.gz"))


def python_modules(sdist: Path) -> dict[str, bytes]:
    """The ``http_parser/*.py`` files of the sdist, keyed by archive path."""
    files: dict[str, bytes] = {}
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) == 3 and parts[1] == "http_parser" and parts[2].endswith(".py"):
                files[f"http_parser/{parts[2]}"] = tar.extractfile(member).read()
            elif len(parts) == 2 and parts[1] == "LICENSE":
                files[f"{DIST_INFO}/LICENSE"] = tar.extractfile(member).read()
    if "http_parser/pyparser.py" not in files:
        raise SystemExit(f"{sdist.name}: no http_parser/pyparser.py inside")
    return files


def record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def write_wheel(files: dict[str, bytes], wheelhouse: Path) -> Path:
    files = dict(files)
    files[f"{DIST_INFO}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n"
        "Summary: http request/response parser (pure-Python build, C extension left out)\n"
        "License: MIT\n"
    ).encode()
    files[f"{DIST_INFO}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: consul-registration-hook tools\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [record_line(path, data) for path, data in sorted(files.items())]
    record.append(f"{DIST_INFO}/RECORD,,")
    files[f"{DIST_INFO}/RECORD"] = ("\n".join(record) + "\n").encode()

    wheelhouse.mkdir(parents=True, exist_ok=True)
    target = wheelhouse / WHEEL_NAME
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in sorted(files.items()):
            wheel.writestr(path, data)
    return target


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    wheelhouse = Path(argv[1])
    if (wheelhouse / WHEEL_NAME).exists():
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        sdist = download_sdist(Path(tmp))
        print(f"built {write_wheel(python_modules(sdist), wheelhouse)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
