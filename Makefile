# Set-up and the two entry points the README names: `make demo` and `make test`.
#
# The virtualenv is made once; the editable install (which builds the stub
# with gcc and the cffi module) is redone only when what it builds from
# changes, or when its products are gone, so both targets are quick once set up.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
SETUP  := $(VENV)/.aioumm-installed

# What the install builds from: a change to any of these reinstalls.
INSTALL_INPUTS := pyproject.toml setup.py aioumm/_native.c aioumm/_native_build.py \
                  $(wildcard aioumm/stub_src/*.[chS] aioumm/stub_src/*.ld aioumm/stub_src/Makefile)

# The install's products live in the work tree, not in the virtualenv: if one
# is missing (a fresh checkout next to an old .venv), install again.
ifeq ($(and $(wildcard aioumm/_bin/aioumm-stub),$(wildcard aioumm/_bin/stub_code.bin),$(wildcard aioumm/_native*.so)),)
.PHONY: $(SETUP)
endif

.PHONY: demo test setup examples

demo: setup examples
	$(PY) -m aioumm demo

# ruff and mypy run inside the suite (tests/test_lint.py).
test: setup
	$(PY) -m pytest -q

setup: $(SETUP)

examples: setup
	$(PY) -m aioumm demo --build-only

$(PY):
	$(PYTHON) -m venv $(VENV)

# editable_mode=compat: a plain path in a .pth file rather than an import hook, which
# costs every start of `aioumm run` about 11 ms of imports; and the bytecode written now,
# as an install would, even where PYTHONDONTWRITEBYTECODE is set.
$(SETUP): $(PY) $(INSTALL_INPUTS)
	$(PY) -m pip install -q -e '.[test,bench]' --config-settings editable_mode=compat
	$(PY) -m compileall -q aioumm
	touch $@
