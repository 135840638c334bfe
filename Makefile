# The two commands in README: `make run` and `make test`. Both work from a fresh clone.
# `make run` installs only what simulating needs (pyproject's dependencies: no TensorFlow, no
# test extra); `make test` installs the test extra into the same .venv, upgrading one that
# `make run` made. Each stamp says what the venv holds; editing pyproject.toml redoes both.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
LOG := $(VENV)/install.log

.PHONY: run test lint bench clean

$(BIN)/python:
	@echo "creating the virtual environment $(VENV) ($(PY) -m venv)"
	@$(PY) -m venv $(VENV)

# Everything the tests need (the test extra: TensorFlow, the cloud clients, linters).
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "installing scalelab with its test extra into $(VENV) (TensorFlow included: minutes; log: $(LOG))"
	@$(BIN)/pip install -q --upgrade pip > $(LOG) 2>&1 || (cat $(LOG); exit 1)
	@$(BIN)/pip install -q -e '.[test]' >> $(LOG) 2>&1 || (cat $(LOG); exit 1)
	@touch $(STAMP) $(RUN_STAMP)

# What simulating needs; a venv `make test` installed already has it.
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@if [ $(STAMP) -nt pyproject.toml ]; then touch $(RUN_STAMP); else \
	  echo "installing scalelab and what simulating needs into $(VENV) (simpy, pydantic, numpy, plotly, ...; log: $(LOG))" && \
	  ($(BIN)/pip install -q -e . > $(LOG) 2>&1 || (cat $(LOG); exit 1)) && touch $(RUN_STAMP); fi

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

run: $(RUN_STAMP)
	@echo "simulating scenarios/gsp777.yaml (the lab, 30 simulated minutes) into out/gsp777"
	@$(BIN)/scalelab run scenarios/gsp777.yaml --out out/gsp777

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy sim cloud

# Tests that measure this machine (marked serial in tests/conftest.py) run alone, after the
# rest, which run in one worker a CPU.
test: lint $(OLDEST_STAMP)
	$(BIN)/pytest -n auto --dist worksteal -m 'not serial and not benchmark and not gke'
	$(BIN)/pytest -m 'serial and not benchmark and not gke'

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_throughput.py
	$(BIN)/python benchmarks/bench_sweep.py

clean:
	rm -rf $(VENV) $(OLDEST) out .pytest_cache .mypy_cache .ruff_cache
