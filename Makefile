# Two commands on a fresh clone (see README):  `make demo`  and  `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha1sum | cut -c1-12)
OUTPUT ?= scan-output

export HF_HUB_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup demo test browser bench lock clean

setup: $(STAMP)

# torch/torchvision first, pinned to the builds that install from local disk here (others download GBs);
# then the project with the test extra (runtime + report + train + test), every version from requirements.lock
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

## the main job on the embedded default: scan the bundled sample media with a local Ray, then report
## (text on the terminal, and the HTML page: docs/report.md)
demo: setup
	$(BIN)/deepfakestream scan pipeline/samples --output $(OUTPUT)
	$(BIN)/deepfakestream report $(OUTPUT) --html $(OUTPUT)/report.html

## the test suite (skips ../shared-dependent tests when ../shared is absent)
test: setup browser
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

## headless Chromium for the report's browser tests (Debian's package; as root with apt-get only, else they skip)
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null \
		|| { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		     && { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; } ; } \
		|| echo "chromium not installed: the report's browser checks will skip (apt-get install chromium)"

bench: setup
	$(BIN)/python bench/scan.py 32 128
	$(BIN)/python bench/serve.py

## rewrite requirements.lock: resolve pyproject.toml's ranges (test extra plus the gcs/azure storage extras,
## which .venv does not install), keeping the versions installed in .venv (the tested ones) and the locked
## ones of the rest; to move a package, upgrade it in .venv, run `make test`, then `make lock`
lock: setup
	$(BIN)/pip freeze --exclude-editable > $(VENV)/lock-freeze.txt
	$(BIN)/pip install --quiet --dry-run --ignore-installed --report $(VENV)/lock-report.json \
		-c $(VENV)/lock-freeze.txt -c requirements.lock -e '.[test,gcs,azure]'
	{ sed -n '/^#/p' requirements.lock; $(BIN)/python -c "import json, re; \
		names = [(re.sub('[-_.]+', '-', i['metadata']['name']).lower(), i['metadata']['version']) \
		for i in json.load(open('$(VENV)/lock-report.json'))['install']]; \
		print('\\n'.join(sorted(f'{n}=={v}' for n, v in names if n != 'deepfakestream')))"; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) $(OUTPUT) .pytest_cache
