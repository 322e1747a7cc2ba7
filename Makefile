# The two commands of the README: `make serve` and `make test`. Both create the
# virtual environment on first use, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint bench clean browser gpu-check gpu-check-dry

$(STAMP): pyproject.toml deploy/worker-constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c deploy/worker-constraints.txt -e '.[api,worker,runtimes,embedded,dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/dnnprof serve

# The report page is tested in real headless Chromium: Debian's package, installed when missing
# and this user can (root, as in CI); otherwise those tests say why they were skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium not installed: the report page tests will be skipped"; }

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m bench.fidelity

# On a lent GPU machine (no venv there: its torch, plus the wheels bench/gpu_wheels.sh put in .whl/).
gpu-check:
	bench/gpu_check.sh

# The same steps on this CPU, shrunk: run before spending device time.
gpu-check-dry: $(STAMP)
	bench/gpu_check.sh --dry-run

clean:
	rm -rf $(VENV) var
