"""RapidOCR as a library, driven page by page over stdin/stdout by ``bench.bench_pages``.

Why a separate script: RapidOCR must not be installed into the project's virtual environment
(its dependencies and OpenCV requirement must not change what the server runs with), so
``bench_pages`` creates a side environment and runs this file with that environment's
interpreter. It therefore imports nothing from the project, only the standard library and
RapidOCR.

Protocol (one JSON object per line, both ways, UTF-8):

* start-up: argv names the model files, the intra-op thread count and a file holding the
  page paths (one per line). The worker reads every page into memory *before* answering, so
  file reads are never timed, and builds RapidOCR's three ONNX Runtime sessions (which
  RapidOCR would otherwise build inside the first page), then writes
  ``{"ready": true, "rapidocr": ..., ...}``.
* ``{"k": <int>, "page": <position in the page list>}``: recognise that page; answer
  ``{"k": ..., "page": ..., "text": <lines joined by "\\n">, "lines": <count>,
  "elapsed_s": <seconds of the RapidOCR call alone>}``, or ``{"k": ..., "error": "..."}``.
* ``{"info": true}``: the session options RapidOCR actually built (intra-op threads per
  session), so the bench can check the CPU budget it asked for was applied.
* end of input: exit 0.

    <side-venv>/bin/python bench/rapidocr_worker.py --det D.onnx --rec R.onnx --cls C.onnx \\
        --threads 1 --pages pages.txt
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def build_engine(det: str, rec: str, cls: str, threads: int) -> Any:
    """RapidOCR 3.10 with explicit model files and intra-op threads; everything else default.

    The keys are RapidOCR's own config paths (``rapidocr/config.yaml``, applied by
    ``ParseParams.update_batch``): ``<Section>.model_path`` makes each stage load exactly the
    file given instead of resolving (and possibly downloading) its default, and enum-typed
    keys must be passed as RapidOCR's enums. The versions named are the defaults of 3.10
    (PP-OCRv6 small detector and recognizer, PP-OCRv4 "mobile" classifier, i.e. the
    ``ch_ppocr_mobile_v2.0_cls`` file with its 48x192 input); they are spelled out so that a
    changed default cannot silently change what is measured. Logging is lowered to warnings
    only so that per-page info lines do not cost time on stderr.
    """
    from rapidocr import RapidOCR
    from rapidocr.utils.typings import ModelType, OCRVersion

    params = {
        "Det.model_path": det,
        "Det.ocr_version": OCRVersion.PPOCRV6,
        "Det.model_type": ModelType.SMALL,
        "Rec.model_path": rec,
        "Rec.ocr_version": OCRVersion.PPOCRV6,
        "Rec.model_type": ModelType.SMALL,
        "Cls.model_path": cls,
        "Cls.ocr_version": OCRVersion.PPOCRV4,
        "Cls.model_type": ModelType.MOBILE,
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "Global.log_level": "warning",
    }
    return RapidOCR(params=params)


def session_info(engine: Any) -> dict[str, Any]:
    """Intra/inter-op threads of the ONNX Runtime sessions RapidOCR built (private attributes).

    RapidOCR ignores ``intra_op_num_threads`` values outside 1..cpu_count without a word, so
    the bench asks what the sessions really got rather than trusting what it passed.
    """
    out: dict[str, Any] = {}
    for stage in ("text_det", "text_cls", "text_rec"):
        try:
            options = getattr(engine, stage).session.session.get_session_options()
            out[stage] = {
                "intra_op_num_threads": options.intra_op_num_threads,
                "inter_op_num_threads": options.inter_op_num_threads,
            }
        except AttributeError:
            out[stage] = None  # not loaded yet (lazy) or RapidOCR's internals changed
    return out


def preload(engine: Any) -> None:
    """Build the detector, classifier and recognizer sessions now rather than on page one.

    RapidOCR 3.10 builds them lazily inside its first call; loading them before "ready"
    keeps model loading out of every page the bench times, including the warm-up page whose
    CPU use overlaps another worker's measured pages. Private methods, hence the guard: if a
    later RapidOCR renames them, the first page simply pays the load again.
    """
    for name in ("_load_det_model", "_load_cls_model", "_load_rec_model"):
        load = getattr(engine, name, None)
        if callable(load):
            load()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--det", required=True)
    p.add_argument("--rec", required=True)
    p.add_argument("--cls", required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--pages", required=True, help="file listing the page images, one a line")
    args = p.parse_args()

    from importlib.metadata import version

    import onnxruntime

    pages = [Path(x).read_bytes() for x in Path(args.pages).read_text().splitlines() if x]
    engine = build_engine(args.det, args.rec, args.cls, args.threads)
    preload(engine)
    out = sys.stdout

    def send(message: dict[str, Any]) -> None:
        out.write(json.dumps(message, ensure_ascii=False) + "\n")
        out.flush()

    send(
        {
            "ready": True,
            "rapidocr": version("rapidocr"),
            "onnxruntime": onnxruntime.__version__,
            "pages": len(pages),
        }
    )
    for raw in sys.stdin:
        if not raw.strip():
            continue
        request = json.loads(raw)
        if request.get("info"):
            send({"info": session_info(engine)})
            continue
        k, page = request["k"], request["page"]
        try:
            t0 = time.perf_counter()
            result = engine(pages[page])
            elapsed = time.perf_counter() - t0
            txts = tuple(getattr(result, "txts", None) or ())
            send(
                {
                    "k": k,
                    "page": page,
                    "text": "\n".join(txts),
                    "lines": len(txts),
                    "elapsed_s": elapsed,
                }
            )
        except Exception as exc:  # one bad page must not end the run; the bench counts it
            send({"k": k, "page": page, "error": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
