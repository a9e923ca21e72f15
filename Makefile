# The two commands: `make up` brings inferq up on the bundled model; `make test` runs the tests.
# Both set up everything they need first (virtualenv, packages, Redis, PostgreSQL, model).

VENV ?= .venv
PY := $(VENV)/bin/python
INFERQ := $(VENV)/bin/inferq
export HF_HUB_OFFLINE := 1

TEST_DB ?= inferq_test

.PHONY: up test install services model migrate lint format typecheck pytest bench clean

up: install model
	scripts/services.sh inferq
	$(INFERQ) migrate
	$(INFERQ) up

test: install model lint typecheck
	scripts/services.sh $(TEST_DB)
	scripts/browser.sh
	$(PY) -m pytest -ra

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/bootstrap.sh
	VENV=$(VENV) scripts/bootstrap.sh

model: install
	$(INFERQ) models assemble

migrate: install
	$(INFERQ) migrate

lint: install
	$(VENV)/bin/ruff check src tests bench migrations scripts
	$(VENV)/bin/ruff format --check src tests bench migrations scripts

format: install
	$(VENV)/bin/ruff format src tests bench migrations scripts
	$(VENV)/bin/ruff check --fix src tests bench migrations scripts

typecheck: install
	$(VENV)/bin/mypy

pytest: install
	$(PY) -m pytest -ra

bench: install model
	$(PY) bench/ttft_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
