# Two entry points for a fresh machine (Python 3.11, no GPU needed):
#   make demo   installs into .venv and runs the offline demo
#   make test   installs into .venv (with test extras) and runs ruff, the import layering check
#               (lint-imports, contracts in pyproject.toml) and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# -c constraints.txt: the exact versions CI runs (pyproject.toml states the supported ranges)
$(VENV)/.installed-demo: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[demo]'
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed-demo

demo: $(VENV)/.installed-demo
	$(BIN)/transferdepth demo

# pytest exits 5 when it collects no test: that is a failure here, said plainly.
# The whole suite runs in one process. (From 2 to 3 Dec 2026 the OpenVINO / compile tests ran in a second one: the
# process died of SIGSEGV when OpenVINO's CPU plugin left the thread's alternate signal stack unmapped; fixed by
# deploy/openvino_engine.keep_signal_stack, tested in tests/deploy/test_openvino.py.)
test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q -ra; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc
