# The two commands of the README: `make demo` and `make test`. Both build .venv themselves.
# Installs use uv when it is on PATH (much faster), pip otherwise, always with constraints.txt
# pinning torch==2.13.0 (an unpinned torch pulls gigabytes of CUDA packages).

VENV       ?= .venv
PYTHON     ?= python3
EXTRAS     ?= dev
BIN        := $(VENV)/bin
UV         := $(shell command -v uv 2>/dev/null)
# uv ignores pip's settings: hand it pip's find-links folder (where the local torch wheel lies).
FIND_LINKS := $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
UV_FLAGS   := $(if $(FIND_LINKS),--find-links $(FIND_LINKS))
STAMP      := $(VENV)/.installed-$(EXTRAS)

.PHONY: setup demo test test-fast clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
ifneq ($(UV),)
	$(UV) venv --allow-existing --python $(PYTHON) $(VENV)
	VIRTUAL_ENV=$(VENV) $(UV) pip install $(UV_FLAGS) -c constraints.txt -e '.[$(EXTRAS)]'
else
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e '.[$(EXTRAS)]'
endif
	@# Precompile: with PYTHONDONTWRITEBYTECODE set, every process would recompile transformers.
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $@

demo: setup
	$(BIN)/fincocktail models pull smollm2-135m-instruct
	$(BIN)/fincocktail data check
	$(BIN)/fincocktail reproduce --quick

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

clean-venv:
	rm -rf $(VENV)
