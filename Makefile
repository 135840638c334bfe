# The two commands in README: `make run` and `make test`. Both work from a fresh clone.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip > $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	$(BIN)/pip install -q -e '.[test]' >> $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; exit 1)
	touch $(STAMP)

# The oldest kubernetes client pyproject allows, over the main venv's other packages (a .pth
# adds them after its own site-packages), for tests/test_cloud_credentials.py.
OLDEST := .venv-oldest
OLDEST_STAMP := $(OLDEST)/.installed
KUBERNETES_FLOOR := 30.1.0

$(OLDEST_STAMP): $(STAMP)
	$(PY) -m venv $(OLDEST)
	$(OLDEST)/bin/pip install -q --no-deps 'kubernetes==$(KUBERNETES_FLOOR)' > $(OLDEST)/install.log 2>&1 || (cat $(OLDEST)/install.log; exit 1)
	$(OLDEST)/bin/python -c "import sysconfig, pathlib, sys; pathlib.Path(sysconfig.get_paths()['purelib'], 'scalelab-main-venv.pth').write_text('import site; site.addsitedir(%r)\n' % sys.argv[1])" "$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")"
	touch $(OLDEST_STAMP)

run: $(STAMP)
	$(BIN)/scalelab run scenarios/gsp777.yaml --out out/gsp777

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy sim cloud

test: lint $(OLDEST_STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_throughput.py
	$(BIN)/python benchmarks/bench_sweep.py

clean:
	rm -rf $(VENV) $(OLDEST) out .pytest_cache .mypy_cache .ruff_cache
