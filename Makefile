# One task runner that mirrors CI: `make test` is what .ci/run calls.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo test lint coverage bench bench-smoke soak memory clean

# Silent on stdout (progress on stderr): `make demo > out.ndjson` holds only documents.
$(BIN)/audit-ingest: pyproject.toml
	@echo "installing audit-ingest into $(VENV)" >&2
	@$(PY) -m venv $(VENV) >&2
	@$(BIN)/pip install -q --upgrade pip >&2
	@$(BIN)/pip install -q -e '.[dev]' >&2
	@touch $@

venv: $(BIN)/audit-ingest

# Parse and enrich the sample logs: no Redis, no Elasticsearch needed. stdout is pure NDJSON.
demo: venv
	@$(BIN)/audit-ingest parse --config examples/demo.toml --reference-time 2020-12-31T00:00:00Z examples/logs/*.log

test: venv
	$(BIN)/python -m pytest -q

# Per kind and program: how many lines of the message catalogue (tests/data/catalogue) are classified.
coverage: venv
	@$(BIN)/python -m tests.parsers.catalogue

lint: venv
	$(BIN)/ruff check ingest tests benchmarks
	$(BIN)/mypy ingest

bench: venv
	$(BIN)/python benchmarks/run.py

bench-smoke: venv
	$(BIN)/python benchmarks/run.py --smoke

# Soak runs (not in CI; benchmarks/soak.py): 5M events with RSS sampled every 10 s, then 30 minutes
# at 2,000 ev/s with a SIGKILL or an Elasticsearch fault every minute. SOAK_ARGS adds options to both.
soak: venv
	$(BIN)/python benchmarks/soak.py --mode rss $(SOAK_ARGS)
	$(BIN)/python benchmarks/soak.py --mode faults $(SOAK_ARGS)

# What the pipeline's memory holds, cache by cache (tracemalloc; benchmarks/memory.py).
memory: venv
	$(BIN)/python benchmarks/memory.py

clean:
	rm -rf $(VENV) .pytest_cache
