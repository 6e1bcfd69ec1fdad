"""Accuracy on the 12 real pages of shared/eval/real, through the server, default model.

Metric (the one the issue's reference figures used): order-insensitive token error, bag of
words for English and the multilingual Latin sheet, bag of characters for Chinese, NFKC and
case-folded; pages whose ground truth leaves chart text out count only missed tokens. Pooled
per language: total token errors / total reference tokens. Targets: en <= 3.0 %, zh <= 15 %
(RapidOCR 3.10 with the same models: 4.0 % / 53.4 %).

All pages go through one StreamRecognize call, so they also share the batcher.
Skipped, with the reason, where the real data folder is absent (a user's clone).
"""

from __future__ import annotations

import grpc
import pytest

from ocr_client.proto.ocr.v1 import ocr_pb2, ocr_pb2_grpc
from ocr_core.evaluation import bag_errors
from tests.conftest import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.real_data]

TARGETS = {"en": 0.030, "zh": 0.15}
ROTATED_PHOTOS = (
    "mdp_zh_slide45_photo_indoor_light_right_bend_in",
    "mdp_zh_slide45_photo_indoor_light_right_bend_out",
)


@pytest.fixture(scope="module")
def results(server: ServerProcess, real_pages: list[dict]) -> dict[str, ocr_pb2.PageResult]:
    def requests():
        for item in real_pages:
            yield ocr_pb2.StreamRecognizeRequest(
                id=item["id"], page=ocr_pb2.Image(data=item["bytes"])
            )

    with grpc.insecure_channel(server.address) as channel:
        stub = ocr_pb2_grpc.OcrServiceStub(channel)
        responses = list(stub.StreamRecognize(requests(), timeout=600))
    errors = {r.id: r.error.message for r in responses if r.HasField("error")}
    assert not errors
    return {r.id: r.page for r in responses}


def test_page_token_error_meets_targets(
    real_pages: list[dict], results: dict[str, ocr_pb2.PageResult]
) -> None:
    totals = {"en": [0, 0], "zh": [0, 0]}
    for item in real_pages:
        group = "zh" if item["lang"] == "zh" else "en"
        counts = bag_errors(item["text"], results[item["id"]].text, by_chars=group == "zh")
        partial = item.get("gt_scope", "").startswith("partial")
        errors = counts.errors(count_extra=not partial)
        totals[group][0] += errors
        totals[group][1] += counts.reference
        print(
            f"{item['id']:50} rotation {results[item['id']].rotation:3}  "
            f"{errors:4}/{counts.reference:4} = {errors / counts.reference:6.1%}"
        )
    for group, (errors, reference) in totals.items():
        rate = errors / reference
        print(f"{group}: {errors}/{reference} = {rate:.2%} (target {TARGETS[group]:.0%})")
        assert rate <= TARGETS[group], f"{group} page token error {rate:.2%}"


def test_rotated_photos_are_turned_upright(results: dict[str, ocr_pb2.PageResult]) -> None:
    """The two photos shot sideways are read after a quarter turn; the upright ones are not."""
    for page_id, page in results.items():
        expected = 270 if page_id in ROTATED_PHOTOS else 0
        assert page.rotation == expected, page_id
