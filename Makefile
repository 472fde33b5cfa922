# Two commands on a fresh clone (see README):  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
OUTPUT ?= scan-output

export HF_HUB_OFFLINE := 1
export RAY_AUTH_MODE := disabled
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup demo test bench clean

setup: $(STAMP)

# torch/torchvision first, pinned to the builds that install from local disk here (others download GBs)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[test,train]'
	touch $(STAMP)

## the main job on the embedded default: scan the bundled sample media with a local Ray, then report
demo: setup
	$(BIN)/deepfakestream scan pipeline/samples --output $(OUTPUT)
	$(BIN)/deepfakestream report $(OUTPUT)

## the test suite (skips ../shared-dependent tests when ../shared is absent)
test: setup
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

bench: setup
	$(BIN)/python bench/scan.py
	$(BIN)/python bench/serve.py

clean:
	rm -rf $(VENV) $(OUTPUT) .pytest_cache
