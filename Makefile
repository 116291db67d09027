# Portcullis: the two commands a new user runs are `make run` and `make test`.
# Everything they need is installed here, into .venv, from pyproject.toml.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
GEN     := protos/_gen
PROTOS  := $(shell find protos -name '*.proto' -not -path 'protos/third_party/*' -not -path '$(GEN)/*')
STAMP   := $(VENV)/.installed

.PHONY: all setup proto run test test-fast lint typecheck bench clean

all: setup

$(STAMP): pyproject.toml
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

run: setup
	$(BIN)/python -m tests.support.demo -c config/demo.yaml

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m 'not slow'

lint: setup
	$(BIN)/ruff check gateway translators screening tests bench

typecheck: setup
	$(BIN)/mypy gateway translators screening

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(GEN) .pytest_cache
