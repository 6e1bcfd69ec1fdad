"""``ocr-client``: recognise line images, list models, or dump batcher stats from a shell.

    ocr-client lines line1.png line2.png            # path<TAB>text per image
    ocr-client lines line.png --json --model NAME   # results with confidences and words
    ocr-client models [--json]
    ocr-client stats

The server address comes from ``--address``, else ``$OCR_ADDRESS``, else localhost:50051.
Expected failures (a server error, a missing file) print one ``error: ...`` line to stderr
and exit 1, without a traceback; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from ocr_client.client import DEFAULT_ADDRESS, DEFAULT_TIMEOUT_S, LineResult, OcrClient
from ocr_client.errors import OcrClientError

# The server's default max_lines_per_request; bigger inputs are sent as several calls.
MAX_IMAGES_PER_CALL = 256
# Confidences are float32 on the wire; more digits than this are noise in a report.
_CONFIDENCE_DIGITS = 4


class _CliError(Exception):
    """An expected failure detected by the CLI itself (not by the server)."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _line_json(image: str, line: LineResult) -> dict[str, Any]:
    return {
        "image": image,
        "text": line.text,
        "confidence": round(line.confidence, _CONFIDENCE_DIGITS),
        "words": [
            {
                "text": w.text,
                "confidence": round(w.confidence, _CONFIDENCE_DIGITS),
                "x_start": w.x_start,
                "x_end": w.x_end,
            }
            for w in line.words
        ],
    }


def _cmd_lines(args: argparse.Namespace) -> int:
    paths: list[str] = args.images
    # Every input is checked before the first call, so a typo in the last of many paths
    # does not cost (or half-print) the recognition of the others.
    for p in paths:
        if not Path(p).is_file():
            what = "not a file" if Path(p).exists() else "no such file"
            raise _CliError(f"{p}: {what}")
    model = ""
    lines: list[LineResult] = []
    with OcrClient(args.address, timeout=args.timeout) as client:
        for chunk in _chunks(paths, MAX_IMAGES_PER_CALL):
            # _recognize is recognize_lines plus the model name the server reports.
            ran, chunk_lines = client._recognize(
                chunk, model=args.model, color_order="rgb", timeout=None
            )
            model = model or ran
            lines.extend(chunk_lines)
    if args.json:
        results = [_line_json(p, r) for p, r in zip(paths, lines, strict=True)]
        doc = {"model": model, "results": results}
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    elif len(paths) == 1:
        print(lines[0].text)
    else:
        for p, r in zip(paths, lines, strict=True):
            print(f"{p}\t{r.text}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    with OcrClient(args.address, timeout=args.timeout) as client:
        models = client.list_models()
    if args.json:
        doc = {"models": [dataclasses.asdict(m) for m in models]}
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        for m in models:
            mark = "*" if m.is_default else " "  # '*' marks the default model
            print(
                f"{mark} {m.name}\tcharset_size={m.charset_size}\t"
                f"input_height={m.input_height}\t{m.source}"
            )
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    with OcrClient(args.address, timeout=args.timeout) as client:
        stats = client.get_stats()
    print(
        json_format.MessageToJson(
            stats,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,  # zero counters are information too
            ensure_ascii=False,
        )
    )
    return 0


def _build_parser() -> argparse.ArgumentParser:
    # Connection options live on each subcommand, so they may follow it
    # (`ocr-client lines x.png --address h:1`), as users type them.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--address",
        default=os.environ.get("OCR_ADDRESS") or DEFAULT_ADDRESS,
        metavar="HOST:PORT",
        help=f"server address (default: $OCR_ADDRESS, else {DEFAULT_ADDRESS})",
    )
    common.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="deadline of each call in seconds (default: %(default)s)",
    )
    parser = argparse.ArgumentParser(
        prog="ocr-client", description="Client of the OCR gRPC service."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_lines = sub.add_parser(
        "lines", parents=[common], help="recognise text-line images (one line of text each)"
    )
    p_lines.add_argument("images", nargs="+", metavar="IMG", help="image files")
    p_lines.add_argument("--json", action="store_true", help="print results as JSON")
    p_lines.add_argument("--model", default="", help="model name (default: the server's)")
    p_lines.set_defaults(func=_cmd_lines)

    p_models = sub.add_parser("models", parents=[common], help="list the server's models")
    p_models.add_argument("--json", action="store_true", help="print as JSON")
    p_models.set_defaults(func=_cmd_models)

    p_stats = sub.add_parser("stats", parents=[common], help="print batcher stats as JSON")
    p_stats.set_defaults(func=_cmd_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (argparse exits 2 itself on usage errors)."""
    args = _build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    # OSError / ValueError: an input file that cannot be read or is empty.
    except (OcrClientError, _CliError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
