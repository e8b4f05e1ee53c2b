# The two commands of the README: `make demo` and `make test` (and `make test-fast`, the suite
# without the tests marked slow). Each creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch/torchvision pair that installs from this machine's local disk (CPU use).
# Elsewhere: `make demo TORCH_PIN=` to take the range from pyproject.toml instead.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= train,server,plots,dev
# The suite runs in this many pytest-xdist worker processes (one per core here: the tests
# are mostly single-threaded CLI runs and child processes; 2 workers took the suite from
# about 17 to 10.5 minutes on the 2-core machine, README "Tests"). 1 runs it in one process.
TEST_WORKERS ?= 2
PYTEST_PAR := $(if $(filter 1,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope)

.PHONY: demo test test-fast lint venv clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_PIN),$(PY) -m pip install --quiet $(TORCH_PIN))
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	# The project root on sys.path as well: setuptools' editable finder runs after Python's
	# path search, so a data folder named `cache/` in the working directory would otherwise
	# be imported as the cache package (tests/test_install.py).
	$(PY) -c "import os, site; open(os.path.join(site.getsitepackages()[0], 'vlm_distill_root.pth'), 'w').write(os.getcwd() + '\n')"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/vlm-distill demo

test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q $(PYTEST_PAR)

# What `make test` runs but the tests marked slow (end-to-end runs of many seconds each).
test-fast: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest -q $(PYTEST_PAR) -m "not slow"

lint: $(VENV)/.installed
	$(PY) -m ruff check . && $(PY) -m mypy

clean:
	rm -rf $(VENV) build *.egg-info
