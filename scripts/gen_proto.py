"""Regenerate the checked-in Python stubs in client/proto from proto/.

Usage: python scripts/gen_proto.py [--check]

The API source of truth is ``proto/ocr/v1/ocr.proto`` (its path mirrors its package, as
other languages and buf expect). It compiles from the ``proto/`` include root, so its
descriptor is named ``ocr/v1/ocr.proto`` everywhere: in the Python stubs, in what server
reflection sends to grpcurl and friends, and in stubs a user generates from the same file
(two copies of one file under one name may share a process; under two names they clash
as duplicate symbols). The generated Python lives under the import name
``ocr_client.proto``, which protoc cannot know, so the lines that name the stubs' own
modules (imports and the messages' ``__module__``, which pickle needs) are rewritten to
that prefix; nothing else in the output changes.

``--check`` regenerates into a temporary folder and exits 1 if anything differs from
the checked-in stubs (used by the stale-stub test).
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.resources
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "client" / "proto"
PACKAGE = "ocr_client.proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _include_dirs() -> list[str]:
    """Include roots for google/protobuf (grpc_tools) and google/rpc (googleapis-common-protos)."""
    import google.rpc  # googleapis-common-protos ships status.proto beside status_pb2.py

    grpc_tools_protos = importlib.resources.files("grpc_tools") / "_proto"
    rpc_dir = Path(next(iter(google.rpc.__path__)))
    return [str(grpc_tools_protos), str(rpc_dir.parent.parent)]


def _own_modules(source: str, top_levels: set[str]) -> str:
    """``source`` with every module path generated from proto/ put under ``PACKAGE``.

    protoc writes them as the proto's path (``ocr.v1.ocr_pb2``) in imports, in the
    module name the messages are built under and in the grpc version check's message;
    modules of other include roots (``google.rpc``) are left as they are.
    """
    names = "|".join(sorted(re.escape(t) for t in top_levels))
    source = re.sub(rf"^(from|import) ({names})\b", rf"\1 {PACKAGE}.\2", source, flags=re.M)
    source = re.sub(
        rf"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')(({names})\.)",
        rf"\g<1>{PACKAGE}.\g<2>",
        source,
    )
    # The version check's message names the stub file.
    folder = PACKAGE.replace(".", "/")
    return re.sub(rf"(generated code in )(({names})/)", rf"\g<1>{folder}/\g<2>", source)


def generate(out_root: Path) -> list[Path]:
    """Compile every .proto under proto/ into ``out_root/...`` (the proto's own path)."""
    from grpc_tools import protoc

    protos = sorted(p.relative_to(PROTO_DIR) for p in PROTO_DIR.rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        *(f"-I{d}" for d in _include_dirs()),
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *(p.as_posix() for p in protos),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    top_levels = {p.parts[0] for p in protos}
    files = sorted(p for p in out_root.rglob("*") if p.name.endswith(GENERATED_SUFFIXES))
    for f in files:
        f.write_text(_own_modules(f.read_text(encoding="utf-8"), top_levels), encoding="utf-8")
    return files


def _package_inits(out_dir: Path, files: list[Path], generated_root: Path) -> None:
    for f in files:
        pkg = (out_dir / f.relative_to(generated_root)).parent
        while pkg != out_dir.parent:
            init = pkg / "__init__.py"
            if not init.exists():
                init.write_text("")
            pkg = pkg.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the stubs are stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(Path(tmp))
        generated_root = Path(tmp)
        stale = []
        for f in files:
            target = OUT_DIR / f.relative_to(generated_root)
            if args.check:
                if not target.exists() or not filecmp.cmp(f, target, shallow=False):
                    stale.append(target.relative_to(ROOT))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(f.read_bytes())
        if args.check:
            if stale:
                print("stale generated stubs (run: python scripts/gen_proto.py):", file=sys.stderr)
                for s in stale:
                    print(f"  {s}", file=sys.stderr)
                return 1
            return 0
        _package_inits(OUT_DIR, files, generated_root)
        for f in files:
            print(f"wrote {(OUT_DIR / f.relative_to(generated_root)).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
