"""Prometheus metrics at ``/metrics`` on ``--metrics-port`` (prometheus-client).

Two kinds of metric, kept apart on purpose:

* events the servicer sees (calls by method and status, call latency, pages and stream items
  by outcome) are counted as they happen, in metrics owned by ``ServerMetrics``;
* the batchers' own counters (queue depth, batch sizes, inference time per batch, padding,
  dropped lines) are read from ``MicroBatcher.stats()`` at scrape time by a collector, so the
  batcher stays free of any metrics library and the figures are the same ones ``GetStats``
  returns.

Everything lives in a registry owned by this object (no process-global registry), so tests
can run several servers in one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ocr_core.batching import INFERENCE_BUCKETS_S
from ocr_core.engine import OcrEngine

#: Call latency buckets, seconds: a line takes tens of ms, a dense page several seconds.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64)


class ServerMetrics:
    """The server's metrics and the HTTP endpoint that serves them."""

    def __init__(self, engine: OcrEngine) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter(
            "ocr_rpc_calls",
            "Finished calls of ocr.v1.OcrService by method and gRPC status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ocr_rpc_duration_seconds",
            "Wall time of ocr.v1.OcrService calls, from handler start to the last response.",
            ["method"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.pages = Counter(
            "ocr_pages_recognized",
            "Pages recognised (RecognizePage, RecognizeDocument pages, stream page items).",
            ["model"],
            registry=self.registry,
        )
        self.stream_items = Counter(
            "ocr_stream_items",
            "StreamRecognize items answered, by kind (line, page) and gRPC status code.",
            ["kind", "code"],
            registry=self.registry,
        )
        self.serving = Gauge(
            "ocr_serving",
            "1 while health reports SERVING, 0 while starting or shutting down.",
            registry=self.registry,
        )
        self.registry.register(_BatcherCollector(engine))

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        self.calls.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)

    def start_http(self, port: int, host: str = "") -> int:
        """Serve ``/metrics`` on ``host:port`` in a daemon thread; returns the bound port."""
        server, _thread = start_http_server(port, addr=host or "0.0.0.0", registry=self.registry)
        return int(server.server_port)


class _BatcherCollector(Collector):
    """Reads every served model's batcher counters at scrape time."""

    def __init__(self, engine: OcrEngine) -> None:
        self._engine = engine

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to pre-declare

    def collect(self) -> Iterator[Metric]:
        def family(
            kind: Callable[..., Metric], name: str, doc: str
        ) -> Metric:  # one labelled family per metric
            return kind(name, doc, labels=["model"])

        queue = family(GaugeMetricFamily, "ocr_queue_depth", "Lines waiting in the queue now.")
        capacity = family(
            GaugeMetricFamily, "ocr_queue_capacity", "Queue capacity in lines (then refused)."
        )
        loaded = family(GaugeMetricFamily, "ocr_model_loaded", "1 for each model loaded.")
        pages = family(
            GaugeMetricFamily, "ocr_model_reads_pages", "1 when the model has a text detector."
        )
        lines = family(CounterMetricFamily, "ocr_lines_recognized", "Lines through inference.")
        enqueued = family(CounterMetricFamily, "ocr_lines_enqueued", "Lines accepted.")
        dropped = CounterMetricFamily(
            "ocr_lines_dropped",
            "Lines dropped before inference, by reason (cancelled, expired, queue_full).",
            labels=["model", "reason"],
        )
        failed = family(
            CounterMetricFamily, "ocr_failed_batches", "Batches whose inference failed."
        )
        idle = family(
            CounterMetricFamily,
            "ocr_idle_batches",
            "Batches run on the idle session (all the batcher had, on every core it owns).",
        )
        padding = CounterMetricFamily(
            "ocr_batch_pixels",
            "Pixels fed to the model, by kind (content, padding); waste = padding / total.",
            labels=["model", "kind"],
        )
        wait = family(
            CounterMetricFamily, "ocr_queue_wait_seconds", "Summed time lines waited in the queue."
        )
        batch_size = HistogramMetricFamily("ocr_batch_size", "Lines per batch.", labels=["model"])
        inference = HistogramMetricFamily(
            "ocr_batch_inference_seconds", "Inference time per batch.", labels=["model"]
        )
        for name, served in sorted(self._engine.models.items()):
            s = served.batcher.stats()
            queue.add_metric([name], served.batcher.queue_depth)
            capacity.add_metric([name], served.batcher.limits.queue_capacity)
            loaded.add_metric([name], 1)
            pages.add_metric([name], 1 if served.pages is not None else 0)
            lines.add_metric([name], s.lines_inferred)
            enqueued.add_metric([name], s.lines_enqueued)
            dropped.add_metric([name, "cancelled"], s.dropped_cancelled)
            dropped.add_metric([name, "expired"], s.dropped_expired)
            dropped.add_metric([name, "queue_full"], s.rejected_queue_full)
            failed.add_metric([name], s.failed_batches)
            idle.add_metric([name], s.idle_batches)
            padding.add_metric([name, "content"], s.content_pixels)
            padding.add_metric([name, "padding"], s.padded_pixels)
            wait.add_metric([name], s.queue_wait_s_total)
            sizes = [
                (str(bound), sum(n for size, n in s.batch_sizes.items() if size <= bound))
                for bound in _BATCH_SIZE_BOUNDS
            ]
            total = sum(s.batch_sizes.values())
            sum_lines = sum(size * n for size, n in s.batch_sizes.items())
            batch_size.add_metric([name], [*sizes, ("+Inf", total)], sum_lines)
            buckets = [
                ("+Inf" if bound == float("inf") else str(bound), count)
                for bound, count in zip(INFERENCE_BUCKETS_S, s.inference_s_buckets, strict=True)
            ]
            inference.add_metric([name], buckets, s.inference_s_total)
        yield from (
            queue,
            capacity,
            loaded,
            pages,
            lines,
            enqueued,
            dropped,
            failed,
            idle,
            padding,
            wait,
            batch_size,
            inference,
        )
