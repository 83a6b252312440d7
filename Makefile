# The two set-up commands (see README): `make demo` runs the main job, `make test` runs the tests.
# Each creates .venv when missing and installs what it needs. torch==2.13.0 is installed first where no torch
# is present, so that no multi-GB CUDA build is pulled in; pyproject.toml itself keeps an open torch range.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.finerank-installed
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[serve,dev,export,clients,ray]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/finerank demo --out demo-out

test: $(STAMP)
	$(PY) -m pytest -q -ra

clean:
	rm -rf $(VENV) demo-out .pytest_cache
