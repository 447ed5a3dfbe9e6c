# Two commands on a fresh machine: `make run` (the demo) and `make test` (the suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install run test test-fast lint typecheck docs protos protos-check bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

run: install
	$(VENV)/bin/headwater demo

# GRPC_ENABLE_FORK_SUPPORT: see cli/__init__.py (grpc/grpc#43055).
test: install protos-check lint typecheck
	GRPC_ENABLE_FORK_SUPPORT=false $(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest tests/unit tests/contracts shared services $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

typecheck: install
	$(VENV)/bin/mypy -p headwater.shared -p headwater.services -p headwater.cli

docs: install
	$(PY) tools/gen_settings_doc.py

protos: install
	$(PY) tools/gen_protos.py

# Generated code is committed; fail when it no longer matches protos/.
protos-check: protos
	@test -z "$$(git status --porcelain -- shared/proto)" || \
		(git status --short -- shared/proto; echo "shared/proto is stale: run make protos and commit"; exit 1)

bench: install
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .state
