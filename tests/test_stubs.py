"""The checked-in generated stubs match proto/ and the installed grpcio can run them."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc

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


def test_descriptor_is_named_by_the_proto_path_and_messages_pickle() -> None:
    assert ocr_pb2.DESCRIPTOR.name == "ocr/v1/ocr.proto"
    assert ocr_pb2.Image.__module__ == "ocr_client.proto.ocr.v1.ocr_pb2"
    request = ocr_pb2.RecognizeLinesRequest(images=[ocr_pb2.Image(data=b"png")], model="m")
    assert pickle.loads(pickle.dumps(request)) == request  # finds the class by __module__


def test_stubs_a_user_generates_from_the_proto_load_beside_ours(tmp_path: Path) -> None:
    """A program with its own stubs of ``proto/ocr/v1/ocr.proto`` (protoc's usual
    ``-I proto``) that also imports this client gets one ``ocr.v1`` in one process; with
    the file registered under two names, protobuf refused the second as duplicate symbols."""
    protoc = pytest.importorskip("grpc_tools.protoc")
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        from gen_proto import _include_dirs
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    args = ["protoc", f"-I{REPO_ROOT / 'proto'}", *(f"-I{d}" for d in _include_dirs())]
    args += [f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}", "ocr/v1/ocr.proto"]
    assert protoc.main(args) == 0
    script = (
        "import ocr_client.proto.ocr.v1.ocr_pb2 as ours\n"
        "import ocr.v1.ocr_pb2 as theirs, ocr.v1.ocr_pb2_grpc\n"
        "assert theirs.DESCRIPTOR is ours.DESCRIPTOR and theirs.Image is ours.Image\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
