# Two entry points on a fresh clone: `make demo` and `make test`.
# Both create .venv and install kpnt into it.  The torch pin takes the CPU
# build that lies on disk on the project's machines (and in CI); GPU users
# override it, e.g. `make demo TORCH=torch`, to get their CUDA build
# (pyproject.toml itself accepts any recent torch).  The `bench` extra
# (demosaicnet, bm3d: the quality benchmark's peers) is installed too, so
# that the tests of the benchmark's peer wrappers run everywhere.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: demo test clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m kpnt.demo --out demo-out

test: $(VENV)/.installed
	$(PY) -m pytest -q -ra tests

clean-venv:
	rm -rf $(VENV)
