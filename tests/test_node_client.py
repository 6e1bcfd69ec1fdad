"""The .proto works from another language: Node.js (@grpc/grpc-js + @grpc/proto-loader) loads
proto/ocr/v1/ocr.proto unchanged and calls ListModels and RecognizeLines on a real server.

``npm ci`` installs the two packages into tests/node/node_modules (git-ignored) from the
committed package-lock.json, once: later runs reuse it while the lock file is unchanged.
Skipped, saying why, where node or npm is missing; an npm install that cannot reach its
registry skips too (an offline machine), any other npm failure fails the test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from google.rpc import status_pb2

from tests.conftest import REPO_ROOT, ServerProcess, png, render_line

pytestmark = pytest.mark.integration

NODE_DIR = REPO_ROOT / "tests" / "node"
NODE_MAJOR_MIN = 18  # node:util parseArgs; @grpc/grpc-js supports every maintained Node
TEXTS = ["Hello World 2026", "The quick brown fox"]
# npm's messages for a registry it cannot reach.
_OFFLINE = ("ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ECONNREFUSED", "ECONNRESET", "ENETUNREACH")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (needed for the Node.js client test)")
    return path


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with @grpc/grpc-js and @grpc/proto-loader installed beside the
    script (``npm ci`` only when node_modules is missing or older than the lock file)."""
    node = _tool("node")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < NODE_MAJOR_MIN:
        pytest.skip(f"node {version.stdout.strip()} is older than {NODE_MAJOR_MIN}")
    npm = _tool("npm")
    lock = NODE_DIR / "package-lock.json"
    installed = NODE_DIR / "node_modules" / ".package-lock.json"  # written by npm install/ci
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        proc = subprocess.run(
            [npm, "ci", "--prefer-offline", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        output = proc.stdout + proc.stderr
        if proc.returncode != 0:
            if any(code in output for code in _OFFLINE):
                pytest.skip(f"npm could not reach its registry: {output.strip()[-300:]}")
            pytest.fail(f"npm ci failed ({proc.returncode}):\n{output}")
    for package in ("@grpc/grpc-js", "@grpc/proto-loader"):
        assert (NODE_DIR / "node_modules" / package / "package.json").is_file(), package
    return node


def _google_protos() -> Path:
    """The folder holding google/rpc/status.proto: googleapis-common-protos (a client
    dependency) ships the .proto sources beside their generated modules."""
    root = Path(status_pb2.__file__).resolve().parents[2]
    assert (root / "google" / "rpc" / "status.proto").is_file(), root
    return root


def _run(node: str, address: str, *images: Path, timeout_s: float = 60) -> tuple[int, str, str]:
    proc = subprocess.run(
        [
            node,
            str(NODE_DIR / "ocr_client.js"),
            "--address",
            address,
            "--proto-root",
            str(REPO_ROOT / "proto"),
            "--include",
            str(_google_protos()),
            *map(str, images),
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_node_client_lists_models_and_reads_lines(
    node: str, server: ServerProcess, tmp_path: Path
) -> None:
    images = []
    for i, text in enumerate(TEXTS):
        path = tmp_path / f"line{i}.png"
        path.write_bytes(png(render_line(text)))
        images.append(path)
    code, out, err = _run(node, server.address, *images)
    assert code == 0, err
    answer = json.loads(out)
    default = [m for m in answer["models"] if m["is_default"]]
    assert [m["name"] for m in default] == ["ppocr-v6-small"]
    assert default[0]["input_height"] == 48 and default[0]["charset_size"] > 1000
    assert answer["limits"]["max_lines_per_request"] == 256
    assert answer["model"] == "ppocr-v6-small"
    assert [r["text"] for r in answer["results"]] == TEXTS
    first = answer["results"][0]
    assert 0.5 < first["confidence"] <= 1.0
    assert [w["text"] for w in first["words"]] == TEXTS[0].split()
    assert all(w["x_start"] < w["x_end"] for w in first["words"])


def test_node_client_reports_the_servers_error(
    node: str, server: ServerProcess, tmp_path: Path
) -> None:
    """A status from the server arrives in Node with its code and message intact."""
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    code, out, err = _run(node, server.address, bad)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "INVALID_ARGUMENT" in err and "decodable" in err, err
