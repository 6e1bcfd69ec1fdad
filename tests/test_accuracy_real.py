"""Accuracy and batch invariance on the 82 real line crops of shared/eval/real.

- Through the running server, NFKC CER per language must be no worse than the raw model run
  one line at a time at the line's natural width (no padding, no batching), with one
  character of slack per language.
- Every line's text sent alone must equal its text when sent within a 64-way concurrent
  burst of separate clients, and the burst must really have been batched.

Skipped, with the reason, where the real data folder is absent (a user's clone).
"""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from ocr_client import AsyncOcrClient, OcrClient
from ocr_core.evaluation import char_errors
from ocr_core.images import decode_image
from ocr_core.preprocess import WidthBuckets, prepare_line
from ocr_core.recognizer import LineRecognizer, SessionConfig
from ocr_core.registry import ModelRegistry
from tests.conftest import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.real_data]

LANGS = ("en", "zh")


@pytest.fixture(scope="module")
def raw_texts(real_lines: list[dict]) -> dict[str, str]:
    """The raw model, in process: natural width (no bucket padding), one line per run."""
    spec = ModelRegistry.from_files().resolve("ppocr-v6-small")
    recognizer = LineRecognizer.load(spec, SessionConfig(workers=1, intra_op_threads=2))
    texts = {}
    for item in real_lines:
        line = prepare_line(decode_image(item["bytes"], 10**8), 48, WidthBuckets())
        line = dataclasses.replace(line, bucket_width=line.width)  # truly unpadded
        texts[item["id"]] = recognizer.infer(0, [line])[0].text
    return texts


@pytest.fixture(scope="module")
def alone_texts(server: ServerProcess, real_lines: list[dict]) -> dict[str, str]:
    """Each line in its own call, one call at a time: batches of one."""
    with OcrClient(server.address, timeout=60) as client:
        return {item["id"]: client.recognize_line(item["bytes"]).text for item in real_lines}


def cer_by_lang(lines: list[dict], texts: dict[str, str]) -> dict[str, tuple[int, int]]:
    return {
        lang: char_errors((i["text"], texts[i["id"]]) for i in lines if i["lang"] == lang)
        for lang in LANGS
    }


def test_server_cer_is_no_worse_than_the_raw_model(
    real_lines: list[dict], raw_texts: dict[str, str], alone_texts: dict[str, str]
) -> None:
    raw = cer_by_lang(real_lines, raw_texts)
    served = cer_by_lang(real_lines, alone_texts)
    report = {
        lang: f"raw {raw[lang][0]}/{raw[lang][1]} = {100 * raw[lang][0] / raw[lang][1]:.2f}%, "
        f"server {served[lang][0]}/{served[lang][1]} = "
        f"{100 * served[lang][0] / served[lang][1]:.2f}%"
        for lang in LANGS
    }
    print(report)
    for lang in LANGS:
        assert served[lang][1] == raw[lang][1] > 0
        assert served[lang][0] <= raw[lang][0] + 1, report


async def burst(address: str, lines: list[dict], clients: int) -> dict[str, str]:
    """Send every line once from ``clients`` separate clients (channels), all at once."""
    opened = [AsyncOcrClient(address, timeout=120) for _ in range(clients)]
    try:
        await asyncio.gather(*(c.wait_ready(timeout=30) for c in opened))
        start = asyncio.Event()

        async def one(k: int, item: dict) -> tuple[str, str]:
            await start.wait()
            result = await opened[k % clients].recognize_line(item["bytes"])
            return item["id"], result.text

        tasks = [asyncio.create_task(one(k, item)) for k, item in enumerate(lines)]
        await asyncio.sleep(0)
        start.set()
        return dict(await asyncio.gather(*tasks))
    finally:
        await asyncio.gather(*(c.close() for c in opened))


def test_every_line_reads_the_same_alone_and_in_a_64_way_burst(
    server: ServerProcess, real_lines: list[dict], alone_texts: dict[str, str]
) -> None:
    with OcrClient(server.address) as client:
        before = client.get_stats().batchers[0]
    burst_texts = asyncio.run(burst(server.address, real_lines, clients=64))
    with OcrClient(server.address) as client:
        after = client.get_stats().batchers[0]
    changed = {
        k: (alone_texts[k], burst_texts[k]) for k in alone_texts if alone_texts[k] != burst_texts[k]
    }
    assert not changed, f"lines that read differently in a burst: {changed}"
    assert len(burst_texts) == len(real_lines) == 82
    # The burst must really have been batched, or this test would prove nothing.
    sizes = {
        size: after.batch_size_counts[size] - before.batch_size_counts.get(size, 0)
        for size in after.batch_size_counts
    }
    batched_lines = sum(size * n for size, n in sizes.items() if size > 1)
    print({"batch sizes in burst": {k: v for k, v in sorted(sizes.items()) if v}})
    assert batched_lines >= 20, sizes


def test_bucket_padding_keeps_inputs_identical_alone_and_batched(real_lines: list[dict]) -> None:
    """By construction: a line's tensor row is the same whatever bucket-mates it has."""
    from ocr_core.preprocess import assemble_batch

    buckets = WidthBuckets()
    prepared = [prepare_line(decode_image(i["bytes"], 10**8), 48, buckets) for i in real_lines]
    by_bucket: dict[int, list] = {}
    for line in prepared:
        by_bucket.setdefault(line.bucket_width, []).append(line)
    shared = [group for group in by_bucket.values() if len(group) > 1]
    assert len(shared) >= 5
    for group in shared:
        together = assemble_batch(group, 48)
        for k, line in enumerate(group):
            assert np.array_equal(together[k], assemble_batch([line], 48)[0])


def test_stream_of_real_lines_matches_unary_results(
    server: ServerProcess, real_lines: list[dict], alone_texts: dict[str, str]
) -> None:
    with OcrClient(server.address, timeout=120) as client:
        results = list(client.stream_recognize((i["id"], i["bytes"]) for i in real_lines))
    assert {r.id: r.line.text for r in results if r.line is not None} == alone_texts
    assert all(r.error is None for r in results)
