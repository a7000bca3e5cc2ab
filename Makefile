# gatewayd: two commands do all the set-up on a fresh Debian machine.
#   make run    create .venv, install, start gatewayd on config/gatewayd.yaml
#   make test   install what the tests need, then ruff, mypy --strict, pytest
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= config/gatewayd.yaml

.PHONY: run test lint typecheck unit bench system-packages clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

run: $(STAMP)
	@echo "gatewayd on $(CONFIG)"
	@echo "  health:  http://127.0.0.1:8080/healthz   readiness: http://127.0.0.1:8080/readyz"
	@echo "  metrics: http://127.0.0.1:8080/metrics"
	@echo "  SIP:     sip:echo@127.0.0.1:5060 (UDP and TCP)"
	@echo "  pages:   http://127.0.0.1:8080/test (device test); demo agent and citizen link below"
	@echo "  stop with Ctrl-C (drains calls first)"
	exec $(BIN)/gatewayd run --demo --config $(CONFIG)

system-packages:
	@bash scripts/install-system-packages.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: system-packages $(STAMP) lint typecheck
	$(BIN)/pytest

unit: $(STAMP)
	$(BIN)/pytest tests/unit tests/fuzz -q

bench: $(STAMP)
	$(BIN)/python -m bench all

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache .hypothesis
