# Two commands for a new user:  `make serve`  and  `make test`.
# Both create the virtual environment (.venv) and fetch the default model when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup models serve test lint proto bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

models: setup
	$(VENV)/bin/ocr-models fetch

serve: models
	$(VENV)/bin/ocr-server $(ARGS)

test: models
	$(PY) -m pytest $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

proto: setup
	$(PY) scripts/gen_proto.py

# The whole suite: lines (both models, three modes, five concurrencies, three repeats),
# then pages against RapidOCR; writes docs/benchmarks.md and docs/bench-lines-*.png.
bench: bench-lines bench-pages

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

.PHONY: bench-lines
bench-lines: models $(VENV)/.bench-installed
	$(VENV)/bin/ocr-models fetch ppocr-v6-small ppocr-v6-tiny
	$(PY) -m bench.bench_lines $(ARGS)

.PHONY: bench-pages
bench-pages: models $(VENV)/.bench-installed
	$(PY) -m bench.bench_pages --repeats 3 $(ARGS)

# The real server against a gRPC server that does no OCR, same load: what gRPC costs alone.
.PHONY: bench-floor
bench-floor: models
	$(VENV)/bin/ocr-models fetch ppocr-v6-small ppocr-v6-tiny
	$(PY) -m bench.grpc_floor $(ARGS)

# The event loop's own CPU per line (servicer, engine, batcher), without gRPC or inference.
.PHONY: bench-loop
bench-loop: setup
	$(PY) -m bench.loop_cost $(ARGS)

# CPU per page by stage of the page pipeline, in process (detection, classifiers, recognition).
.PHONY: bench-page-cost
bench-page-cost: models
	$(PY) -m bench.page_cost $(ARGS)

# Two callers under light load, wide and narrow lines: what each --idle-max-pixels costs.
.PHONY: bench-mixed
bench-mixed: models
	$(PY) -m bench.mixed_callers $(ARGS)

# Ten minutes of steady load at ~70 % of capacity; RSS growth and errors -> docs/reliability.md.
.PHONY: soak
soak: models
	$(PY) -m bench.soak $(ARGS)
