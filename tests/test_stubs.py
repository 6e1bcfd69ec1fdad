"""The checked-in generated stubs match proto/ and the installed grpcio can run them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grpc

from ocr_client.proto.ocr.v1 import ocr_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent


def _version_tuple(version: str) -> tuple[int, ...]:
    """'1.85.1' -> (1, 85, 1); a pre-release suffix ('1.86.0rc1') is ignored."""
    numbers = []
    for part in version.split(".")[:3]:
        digits = re.match(r"\d+", part)
        numbers.append(int(digits.group()) if digits else 0)
    return tuple(numbers)


def test_generated_stubs_are_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"gen_proto.py --check failed:\n{proc.stderr}{proc.stdout}"


def test_installed_grpcio_is_not_older_than_the_stubs() -> None:
    generated = _version_tuple(ocr_pb2_grpc.GRPC_GENERATED_VERSION)
    installed = _version_tuple(grpc.__version__)
    assert generated <= installed, (
        f"stubs generated for grpcio {ocr_pb2_grpc.GRPC_GENERATED_VERSION}, "
        f"installed grpcio is {grpc.__version__}"
    )
