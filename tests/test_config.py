"""Server configuration from flags and environment (ocr_server.config)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ocr_core.batching import BatchLimits
from ocr_core.engine import LOOP_DECODE_MAX_PIXELS, LOOP_DECODE_MAX_THREADS
from ocr_server.app import batch_limits
from ocr_server.config import (
    ServerConfig,
    _default_workers,
    build_parser,
    loop_decode_bound,
    parse_config,
)


def test_defaults_with_empty_env() -> None:
    config = parse_config([], env={})
    assert config.port == 50051
    assert config.host == "[::]"
    assert config.model == ""
    assert config.extra_models == ()
    assert config.reflection is True
    assert config.fetch_missing is True
    assert config.workers == _default_workers()
    assert config.workers >= 1
    # Everything else is the dataclass's defaults.
    assert config == replace(ServerConfig(), workers=_default_workers())


def test_flags_override_defaults() -> None:
    config = parse_config(
        [
            "--host",
            "127.0.0.1",
            "--port",
            "6000",
            "--model",
            "ppocr-en",
            "--extra-models",
            "x,y ,,z",
            "--workers",
            "3",
            "--threads",
            "2",
            "--max-delay-ms",
            "5.5",
            "--max-batch-lines",
            "8",
            "--log-level",
            "debug",
            "--log-format",
            "json",
            "--graph-optimization",
            "disabled",
            "--models-config",
            "/tmp/models.toml",
            "--no-reflection",
            "--no-fetch",
            "--no-pages",
        ],
        env={},
    )
    assert config.host == "127.0.0.1"
    assert config.port == 6000
    assert config.model == "ppocr-en"
    assert config.extra_models == ("x", "y", "z")
    assert config.workers == 3
    assert config.threads == 2
    assert config.max_delay_ms == 5.5
    assert isinstance(config.max_delay_ms, float)
    assert config.max_batch_lines == 8
    assert config.log_level == "DEBUG"
    assert config.log_format == "json"
    assert config.graph_optimization == "disabled"
    assert config.models_config == Path("/tmp/models.toml")
    assert config.reflection is False
    assert config.fetch_missing is False
    assert config.pages is False


def test_env_vars_honoured_with_types() -> None:
    env = {
        "OCR_PORT": "50052",
        "OCR_MODEL": "my-model",
        "OCR_MAX_DELAY_MS": "7.25",
        "OCR_NO_REFLECTION": "true",
        "OCR_EXTRA_MODELS": "a, b",
        "OCR_WORKERS": "4",
        "OCR_MODEL_DIR": "/var/cache/ocr",
        "OCR_NO_FETCH": "1",
        "OCR_GRACE_S": "0",
        "OCR_NO_PAGES": "yes",
    }
    config = parse_config([], env=env)
    assert config.port == 50052
    assert isinstance(config.port, int)
    assert config.model == "my-model"
    assert config.max_delay_ms == 7.25
    assert isinstance(config.max_delay_ms, float)
    assert config.reflection is False
    assert config.extra_models == ("a", "b")
    assert config.workers == 4
    assert config.model_dir == Path("/var/cache/ocr")
    assert config.fetch_missing is False
    assert config.grace_s == 0.0
    assert config.pages is False
    assert parse_config([], env={}).pages is True


@pytest.mark.parametrize(
    ("value", "reflection"),
    [("true", False), ("1", False), ("YES", False), ("false", True), ("0", True), ("", True)],
)
def test_boolean_env_values(value: str, reflection: bool) -> None:
    assert parse_config([], env={"OCR_NO_REFLECTION": value}).reflection is reflection


def test_flag_beats_env() -> None:
    env = {"OCR_PORT": "1111", "OCR_MODEL": "from-env", "OCR_NO_REFLECTION": "true"}
    config = parse_config(
        ["--port", "2222", "--model", "from-flag", "--no-reflection", "false"], env=env
    )
    assert config.port == 2222
    assert config.model == "from-flag"
    assert config.reflection is True


def test_env_beats_default_only_for_its_own_flag() -> None:
    config = parse_config([], env={"OCR_THREADS": "3", "OTHER": "x", "OCR_UNKNOWN": "9"})
    assert config.threads == 3
    assert config.port == 50051


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--workers", "0"], {}),
        (["--log-format", "xml"], {}),
        ([], {"OCR_PORT": "abc"}),
        ([], {"OCR_LOG_FORMAT": "yaml"}),
        (["--port", "1.5"], {}),
        (["--max-delay-ms", "-1"], {}),
        (["--grace-s", "-0.5"], {}),
        (["--graph-optimization", "fast"], {}),
        (["--queue-capacity", "0"], {}),
        ([], {"OCR_NO_REFLECTION": "maybe"}),
        ([], {"OCR_MAX_DELAY_MS": "soon"}),
        (["--no-such-flag"], {}),
        (["--idle-threads", "-1"], {}),
        ([], {"OCR_IDLE_THREADS": "many"}),
        (["--pin-workers", "yes"], {}),
        (["--loop-decode-max-pixels", "-1"], {}),
        ([], {"OCR_PIN_WORKERS": "always"}),
        (["--log-level", "verbose"], {}),
        ([], {"OCR_LOG_LEVEL": "loud"}),
        # review, session 27: these were accepted (70000 served on 4464, nan crashed later)
        (["--port", "70000"], {}),
        (["--port", "-5"], {}),
        ([], {"OCR_PORT": "65536"}),
        (["--grace-s", "nan"], {}),
        (["--grace-s", "inf"], {}),
        (["--max-delay-ms", "nan"], {}),
        (["--max-connection-age-s", "nan"], {}),
        (["--port", "9000", "--metrics-port", "9000"], {}),
        (["--port", "9001", "--metrics-port", "9000", "--processes", "2"], {}),
    ],
)
def test_invalid_values_exit_with_usage_error(
    argv: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_config(argv, env=env)
    assert exc.value.code == 2
    assert "ocr-server: error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, None),
        (["--idle-threads", "0"], {}, 0),
        (["--idle-threads", "auto"], {"OCR_IDLE_THREADS": "4"}, None),
        ([], {"OCR_IDLE_THREADS": "4"}, 4),
        ([], {"OCR_IDLE_THREADS": "Auto"}, None),
    ],
)
def test_idle_threads_is_auto_or_a_count(
    argv: list[str], env: dict[str, str], expected: int | None
) -> None:
    assert parse_config(argv, env=env).idle_threads == expected


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, BatchLimits().idle_max_pixels),
        (["--idle-max-pixels", "49152"], {}, 49152),
        ([], {"OCR_IDLE_MAX_PIXELS": "196608"}, 196608),
        (["--idle-max-pixels", "0"], {}, None),
    ],
)
def test_idle_bound_from_flag_or_env_with_0_for_none(
    argv: list[str], env: dict[str, str], expected: int | None
) -> None:
    assert batch_limits(parse_config(argv, env=env)).idle_max_pixels == expected


def test_a_negative_idle_bound_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_config(["--idle-max-pixels", "-1"], env={})
    assert exc.value.code == 2
    assert "--idle-max-pixels must not be negative" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, "auto"),
        ([], {"OCR_PIN_WORKERS": "on"}, "on"),
        (["--pin-workers", "off"], {"OCR_PIN_WORKERS": "on"}, "off"),
    ],
)
def test_pin_workers_is_auto_on_or_off(argv: list[str], env: dict[str, str], expected: str) -> None:
    assert parse_config(argv, env=env).pin_workers == expected


def test_sched_batch_is_auto_on_or_off(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_config([], env={}).sched_batch == "auto"
    assert parse_config([], env={"OCR_SCHED_BATCH": "off"}).sched_batch == "off"
    assert parse_config(["--sched-batch", "on"], env={"OCR_SCHED_BATCH": "off"}).sched_batch == "on"
    with pytest.raises(SystemExit):
        parse_config(["--sched-batch", "yes"], env={})
    assert "--sched-batch must be auto|on|off, got 'yes'" in capsys.readouterr().err


def test_loop_decode_bound_from_flag_or_env() -> None:
    assert parse_config([], env={}).loop_decode_max_pixels is None  # auto
    assert parse_config(["--loop-decode-max-pixels", "auto"], env={}).loop_decode_max_pixels is None
    assert parse_config(["--loop-decode-max-pixels", "0"], env={}).loop_decode_max_pixels == 0
    env = {"OCR_LOOP_DECODE_MAX_PIXELS": "5000"}
    assert parse_config([], env=env).loop_decode_max_pixels == 5000


def test_workers_error_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_config(["--workers", "0"], env={})
    assert "--workers must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OCR_WORKERS": "0"}, "--workers must be at least 1, got 0"),
        ({"OCR_PORT": "abc"}, "argument --port: invalid int value: 'abc'"),
        ({"OCR_NO_PAGES": "maybe"}, "argument --no-pages: expected true/false, got 'maybe'"),
        ({"OCR_PORT": "0", "OCR_PROCESSES": "2"}, "--processes needs a fixed --port"),
    ],
)
def test_an_environment_value_error_names_its_variable(
    env: dict[str, str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # An operator who set OCR_WORKERS=0 in a container spec passed no --workers flag.
    with pytest.raises(SystemExit):
        parse_config([], env=env)
    err = capsys.readouterr().err
    assert expected in err
    for var in env:
        assert var in err.splitlines()[-1]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--workers=0"], "--workers must be at least 1, got 0"),
        (["--work", "0"], "--workers must be at least 1, got 0"),
        (["--workers", "x"], "argument --workers: invalid int value: 'x'"),
    ],
)
def test_a_command_line_error_does_not_blame_the_environment(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The flag overrides the variable, so the variable is not what is wrong.
    with pytest.raises(SystemExit):
        parse_config(argv, env={"OCR_WORKERS": "2"})
    assert capsys.readouterr().err.splitlines()[-1] == f"ocr-server: error: {expected}"


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCR_PORT", "50999")
    monkeypatch.setenv("OCR_EXTRA_MODELS", "m1")
    config = parse_config([])
    assert config.port == 50999
    assert config.extra_models == ("m1",)


def test_empty_environment_variables_count_as_unset() -> None:
    config = parse_config([], env={"OCR_MODEL_DIR": "", "OCR_PORT": "", "OCR_REUSE_PORT": ""})
    assert config.model_dir is None  # not Path(""), the working directory
    assert config.port == ServerConfig().port
    assert config.reuse_port is False


def test_auto_loop_decode_follows_the_inference_threads() -> None:
    # On the loop while the cores are the limit (few threads), on the pool once the one
    # loop thread is (16 threads: +24 % lines/s and a 14x shorter stream tail on 16 cores).
    assert loop_decode_bound(None, 2) == LOOP_DECODE_MAX_PIXELS
    assert loop_decode_bound(None, LOOP_DECODE_MAX_THREADS) == LOOP_DECODE_MAX_PIXELS
    assert loop_decode_bound(None, LOOP_DECODE_MAX_THREADS + 1) == 0
    assert loop_decode_bound(None, 16) == 0
    assert loop_decode_bound(5000, 16) == 5000  # a number given is kept
    assert loop_decode_bound(0, 2) == 0


def test_help_shows_defaults_only_where_a_flag_has_one() -> None:
    """`ocr-server --help` gives "(default: 50051)" but no "(default: None)" or "(default: )"."""
    text = " ".join(build_parser({}).format_help().split())  # wrapping follows $COLUMNS
    assert "(default: 50051)" in text
    assert "(default: None)" not in text
    assert "(default: )" not in text
    assert "[env OCR_TLS_CERT]" in text  # unset flags keep their help, without a default
    assert "--no-pages [BOOL]" in text  # a switch takes an optional true/false


def test_word_choices_from_the_environment_ignore_case() -> None:
    """OCR_LOG_LEVEL=debug was taken while OCR_LOG_FORMAT=JSON or OCR_PIN_WORKERS=ON were
    refused."""
    env = {
        "OCR_LOG_FORMAT": "JSON",
        "OCR_PIN_WORKERS": "ON",
        "OCR_SCHED_BATCH": "Off",
        "OCR_GRAPH_OPTIMIZATION": "ALL",
    }
    config = parse_config([], env=env)
    assert (config.log_format, config.pin_workers, config.sched_batch) == ("json", "on", "off")
    assert config.graph_optimization == "all"
    assert parse_config(["--port", "9000", "--metrics-port", "9001"], env={}).metrics_port == 9001
