# Two set-up commands (see README): `make run` and `make test`. Both build .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MANIFEST ?=
OUT ?= runs
export HF_HUB_OFFLINE := 1
export RAY_AUTH_MODE := disabled

.PHONY: run test venv lint train-tiny eval-tiny bench-scale bench-gpu clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the local CPU build (any other spec pulls a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/kontext-batch run $(if $(MANIFEST),$(MANIFEST),--demo) --out $(OUT)

test: $(STAMP)
	$(BIN)/ruff check kontext_core manifests pipeline jobs tests
	$(BIN)/python -m pytest tests

lint: $(STAMP)
	$(BIN)/ruff check kontext_core manifests pipeline jobs tests

clean:
	rm -rf $(VENV) runs
