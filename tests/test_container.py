"""The container image, checked piece by piece where Docker cannot build it.

The Dockerfile is parsed (instructions, stages, ENV) and each of its promises is checked
against the repository and the real commands: the files it copies exist and are tracked, its
environment variables are ones the server reads and parse to a valid configuration, its
entrypoint and HEALTHCHECK commands exist in the venv and do what the image relies on
(``ocr-server --no-fetch`` fails fast without models; ``ocr-client health`` exits 0 only for
SERVING, 1 for another answer and 2 when nothing answers).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ocr_client import AsyncOcrClient, ServerUnavailable, cli
from ocr_server.config import build_parser, parse_config
from tests.conftest import REPO_ROOT, ServerProcess, free_port

DOCKERFILE = REPO_ROOT / "Dockerfile"
VENV_BIN = Path(sys.executable).parent
SERVER_PORT = 50051


# --------------------------------------------------------------------------- Dockerfile parsing


@dataclass
class Instruction:
    keyword: str
    args: str  # continuation lines joined


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """Every ENV of the stage, in order (later wins), quotes removed as Docker does."""
        env: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for token in shlex.split(instruction.args):
                key, sep, value = token.partition("=")
                assert sep, f"ENV {instruction.args!r}: use the KEY=value form"
                env[key] = value
        return env


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile: comments dropped, backslash
    continuations joined. Enough for this repository's Dockerfile, not a full parser."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, value = args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append(Instruction(keyword, args))
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _server_env_names() -> set[str]:
    """OCR_* names the server reads: one per flag of its real parser (``--some-name`` is
    ``OCR_SOME_NAME``), plus ``OCR_MODEL_DIR``, also read by the model registry."""
    parser = build_parser({})
    names = {
        "OCR_" + option[2:].upper().replace("-", "_")
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    assert {"OCR_PORT", "OCR_WORKERS", "OCR_MODEL_DIR", "OCR_GRACE_S"} <= names
    return names


def _json_array(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"use the exec (JSON array) form: {args}"
    return value


# --------------------------------------------------------------------------- the Dockerfile


def test_two_stages_on_the_same_slim_python_311(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    global_args, stages = dockerfile
    assert len(stages) == 2, "a builder stage and a final stage"
    builder, final = stages
    assert builder.name == "builder"
    # Both stages on one base: the venv copied across links to that base's python.
    assert builder.base == final.base == "${PYTHON_IMAGE}"
    image = global_args["PYTHON_IMAGE"]
    assert image.startswith("python:3.11-slim"), image


def test_builder_installs_the_server_and_fetches_the_model(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    builder = dockerfile[1][0]
    runs = " && ".join(i.args for i in builder.all("RUN"))
    assert "python -m venv /opt/venv" in runs
    assert 'pip install ".[${EXTRAS}]"' in runs
    assert any(i.args == "EXTRAS=server" for i in builder.all("ARG"))
    # The model is fetched (and so verified by sha256) where the final stage copies it from.
    assert "ocr-models fetch" in runs
    model_dir = builder.env()["OCR_MODEL_DIR"]
    assert model_dir == "/opt/models"
    assert builder.env()["PATH"].startswith("/opt/venv/bin:")


def test_final_stage_gets_only_the_venv_and_the_models(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    final = dockerfile[1][1]
    copies = [i.args.split() for i in final.all("COPY")]
    assert copies == [
        ["--from=builder", "/opt/venv", "/opt/venv"],
        ["--from=builder", "/opt/models", "/opt/models"],
    ]
    runs = " ".join(i.args for i in final.all("RUN"))
    # Only the user is created: no package installs, so no compilers or build tools.
    assert "apt-get" not in runs and "pip" not in runs, runs
    assert "useradd" in runs


def test_final_stage_runs_the_server_as_a_non_root_user(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    final = dockerfile[1][1]
    (user,) = final.all("USER")
    uid = user.args.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, user.args
    assert f"--uid {uid}" in " ".join(i.args for i in final.all("RUN"))
    # USER comes before the entrypoint is defined and after every COPY/RUN.
    keywords = [i.keyword for i in final.instructions]
    assert keywords.index("USER") > max(n for n, k in enumerate(keywords) if k in ("COPY", "RUN"))
    assert _json_array(final.all("ENTRYPOINT")[0].args) == ["ocr-server", "--no-fetch"]
    assert not final.all("CMD"), "no default CMD: arguments to `docker run` are server flags"
    assert [i.args for i in final.all("EXPOSE")] == [str(SERVER_PORT)]


def test_environment_is_what_the_server_accepts(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    final = dockerfile[1][1]
    env = final.env()
    ocr_names = {k for k in env if k.startswith("OCR_")}
    unknown = ocr_names - _server_env_names()
    assert not unknown, f"the server reads no such variables: {sorted(unknown)}"
    assert {"OCR_PORT", "OCR_MODEL_DIR", "OCR_WORKERS", "OCR_THREADS"} <= ocr_names
    # The values parse to a valid configuration, with the entrypoint's own flags.
    entrypoint = _json_array(final.all("ENTRYPOINT")[0].args)
    config = parse_config(entrypoint[1:], env=env)
    assert config.port == SERVER_PORT
    assert config.model_dir == Path(dockerfile[1][0].env()["OCR_MODEL_DIR"])
    assert config.fetch_missing is False
    assert (config.workers, config.threads) == (2, 1)
    assert config.log_format == "json"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_healthcheck_uses_the_client_health_subcommand(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    final = dockerfile[1][1]
    (check,) = final.all("HEALTHCHECK")
    options, _, command = check.args.partition(" CMD ")
    assert command.startswith("ocr-client health "), command
    assert '--address "127.0.0.1:${OCR_PORT}"' in command
    timeout = float(options.split("--timeout=")[1].split("s")[0])
    client_timeout = float(command.split("--timeout ")[1].split()[0])
    assert client_timeout < timeout, "the check must answer before Docker gives up on it"
    # The arguments parse with the real CLI parser.
    args = cli.parse_args(shlex.split(command.replace("${OCR_PORT}", str(SERVER_PORT)))[1:])
    assert args.func is cli._cmd_health and args.address == f"127.0.0.1:{SERVER_PORT}"


def test_copied_files_exist_are_tracked_and_not_ignored(
    dockerfile: tuple[dict[str, str], list[Stage]],
) -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    ignore = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    included = {line[1:] for line in ignore if line.startswith("!")}
    assert "*" in ignore, ".dockerignore starts from nothing and lists what the build needs"
    sources: list[str] = []
    for stage in dockerfile[1]:
        for copy in stage.all("COPY"):
            words = copy.args.split()
            if any(w.startswith("--from=") for w in words):
                continue
            sources += [w.removesuffix("/") for w in words[:-1] if not w.startswith("--")]
    assert {"pyproject.toml", "README.md", "client", "server", "ocr_core", "models"} <= set(sources)
    for source in sources:
        path = REPO_ROOT / source
        assert path.exists(), f"COPY {source}: not in the repository"
        assert any(t == source or t.startswith(source + "/") for t in tracked), (
            f"COPY {source}: not tracked by git, so a clean clone would not have it"
        )
        assert source in included, f"COPY {source}: excluded by .dockerignore"
    # The package's source folders are exactly what the image copies (pyproject package-dir).
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    for folder in ("client", "server", "ocr_core", "models"):
        assert f'= "{folder}"' in pyproject, folder


# --------------------------------------------------------------------------- the commands


def _run(*argv: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str]:
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO_ROOT,
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("ocr-server", ["--no-fetch", "OCR_PORT", "--grace-s", "OCR_MODEL_DIR"]),
        ("ocr-client", ["health"]),
        ("ocr-models", ["fetch"]),
    ],
)
def test_image_commands_exist_in_the_venv_and_parse_help(command: str, expected: list[str]) -> None:
    path = VENV_BIN / command
    assert path.is_file() and os.access(path, os.X_OK), f"{path}: not installed"
    code, output = _run(str(path), "--help")
    assert code == 0, output
    for text in expected:
        assert text in output, f"{command} --help does not mention {text}"


def test_server_without_models_and_no_fetch_fails_fast(tmp_path: Path) -> None:
    """The image's entrypoint on an empty model dir: a one-line reason and exit 1 at once,
    never a download or a hang (a broken image must not look like a slow start)."""
    empty = tmp_path / "models"
    empty.mkdir()
    start = time.monotonic()
    code, output = _run(
        str(VENV_BIN / "ocr-server"),
        "--no-fetch",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        env={"OCR_MODEL_DIR": str(empty)},
    )
    elapsed = time.monotonic() - start
    assert code == 1, output
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert "not fetched" in output and "ocr-models fetch" in output, output
    assert str(empty) in output, "the message names the folder that was searched"
    assert "Traceback" not in output, output
    assert not any(empty.iterdir()), "--no-fetch wrote into the model dir"


# --------------------------------------------------------------------------- ocr-client health


@pytest.mark.integration
def test_health_of_a_real_server_is_serving(server: ServerProcess) -> None:
    """The HEALTHCHECK's command line, run as Docker runs it: a process, its exit status."""
    code, output = _run(str(VENV_BIN / "ocr-client"), "health", "--address", server.address)
    assert code == 0, output
    assert output.strip() == "SERVING"


@pytest.mark.integration
def test_health_of_the_ocr_service_and_of_an_unknown_one(
    server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["health", "--address", server.address, "--service"]
    assert cli.main([*argv, "ocr.v1.OcrService"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    assert cli.main([*argv, "no.such.Service"]) == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == "SERVICE_UNKNOWN"
    assert "no health status for service 'no.such.Service'" in captured.err


def test_health_of_a_closed_port_is_unreachable() -> None:
    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    code, output = _run(str(VENV_BIN / "ocr-client"), "health", "--address", address)
    assert code == 2, output
    assert f"error: no health answer from {address}" in output, output
    assert "UNAVAILABLE" in output
    assert time.monotonic() - start < 10, "a refused connection must not wait for the timeout"


@pytest.fixture
def health_server() -> Iterator[tuple[str, health.HealthServicer]]:
    """A bare gRPC server with only a health service, whose status the test sets."""
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(0)


def test_health_not_serving_exits_1(
    health_server: tuple[str, health.HealthServicer], capsys: pytest.CaptureFixture[str]
) -> None:
    address, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert cli.main(["health", "--address", address]) == 1
    assert capsys.readouterr().out.strip() == "NOT_SERVING"
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert cli.main(["health", "--address", address]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"


def test_health_without_an_answer_in_time_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A server that accepts the connection but never answers (here: a health service
    whose Check blocks) is as good as unreachable for a probe."""

    class Stuck(health_pb2_grpc.HealthServicer):
        def Check(self, request: object, context: grpc.ServicerContext) -> object:
            time.sleep(3)
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(Stuck(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert cli.main(["health", "--address", f"127.0.0.1:{port}", "--timeout", "0.5"]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert "DEADLINE_EXCEEDED" in captured.err
    finally:
        server.stop(0)


def test_health_of_a_server_without_a_health_service_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert cli.main(["health", "--address", f"127.0.0.1:{port}"]) == 1
        assert "UNIMPLEMENTED" in capsys.readouterr().err
    finally:
        server.stop(0)


async def test_async_client_check_health(
    health_server: tuple[str, health.HealthServicer],
) -> None:
    """The same answers from AsyncOcrClient.check_health as the CLI prints."""
    address, servicer = health_server
    servicer.set("ocr.v1.OcrService", health_pb2.HealthCheckResponse.NOT_SERVING)
    async with AsyncOcrClient(address, timeout=5) as client:
        assert await client.check_health() == "SERVING"  # "" is SERVING by default
        assert await client.check_health("ocr.v1.OcrService") == "NOT_SERVING"
        assert await client.check_health("no.such.Service") == "SERVICE_UNKNOWN"
    async with AsyncOcrClient(f"127.0.0.1:{free_port()}", timeout=5) as client:
        with pytest.raises(ServerUnavailable):
            await client.check_health()
