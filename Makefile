# The two set-up commands (see README): `make run` and `make test`. Both build .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
MANIFEST ?=
OUT ?= runs
MODEL ?=
TINY_OUT ?= runs/kontext-tiny-retrained
export HF_HUB_OFFLINE := 1

.PHONY: soak job-demo bench-step-cache run test venv lint train-tiny eval-tiny bench-gpu bench-scale bench-reports bench-manifest clean

$(RUN_STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the local CPU build (any other spec pulls a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP)
	$(BIN)/pip install -q -e '.[test]'
	touch $(TEST_STAMP)

venv: $(TEST_STAMP)

## make run [MANIFEST=catalog.parquet] [OUT=runs] [MODEL=path-or-preset]: the main job (default: the shipped demo)
run: $(RUN_STAMP)
	$(BIN)/kontext-batch run $(if $(MANIFEST),$(MANIFEST),--demo) --out $(OUT) $(if $(MODEL),--model $(MODEL),)

## make test: lint + the whole test suite (CPU only, no network)
test: $(TEST_STAMP)
	$(BIN)/ruff check kontext_core manifests pipeline jobs tests benchmarks
	$(BIN)/python -m pytest tests

lint: $(TEST_STAMP)
	$(BIN)/ruff check kontext_core manifests pipeline jobs tests benchmarks

## make train-tiny: train kontext-tiny from scratch (CPU or GPU) into TINY_OUT (~110 min on 2 CPU cores;
## the time caps only bind on a slower machine, then the result depends on its speed)
train-tiny: $(RUN_STAMP)
	$(BIN)/python -m kontext_core.tiny.train --out $(TINY_OUT) --device auto --ae-max-minutes 25 --max-minutes 76 --dec-max-minutes 8

## make eval-tiny [MODEL=...]: held-out edit metrics of kontext-tiny (or another tiny model folder)
eval-tiny: $(RUN_STAMP)
	$(BIN)/python -m kontext_core.tiny.evaluate --model $(if $(MODEL),$(MODEL),kontext-tiny)

## make soak: every crash kill point from a clean state (~5 min; make test runs them chained)
soak: $(TEST_STAMP)
	KONTEXT_SOAK=1 $(BIN)/python -m pytest tests/e2e/test_crash_kill_points.py -k soak

## make job-demo: the example nightly job over the demo catalog
job-demo: $(RUN_STAMP)
	$(BIN)/kontext-batch job run jobs/examples/demo-nightly.yaml

bench-gpu: $(TEST_STAMP)
	$(BIN)/python benchmarks/bench_gpu.py --out $(OUT)/bench_gpu.json

bench-scale: $(TEST_STAMP)
	$(BIN)/python benchmarks/bench_scale.py

bench-reports: $(TEST_STAMP)
	$(BIN)/python benchmarks/bench_reports.py

bench-step-cache: $(TEST_STAMP)
	$(BIN)/python benchmarks/bench_step_cache.py

bench-manifest: $(TEST_STAMP)
	$(BIN)/python benchmarks/bench_manifest.py

clean:
	rm -rf $(VENV) runs
