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
# The OpenVINO / torch.compile tests run in a second pytest process: in one process with the whole suite, the
# pytest process died of SIGSEGV (in poll(), while waiting on a child process, the test after OpenVINO's first
# compiled model; seen twice in CI on 2 Dec 2026). Cause found on 3 Dec: OpenVINO's CPU plugin left the thread's
# alternate signal stack unmapped (deploy/openvino_engine.keep_signal_stack, tested in test_openvino.py); the
# split stays until a whole-suite run in one process has passed with that fix.
NATIVE_ENGINE_TESTS = tests/deploy/test_engines.py tests/deploy/test_openvino.py tests/deploy/test_nncf.py
test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q -ra $(addprefix --ignore=,$(NATIVE_ENGINE_TESTS)); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; [ $$rc -eq 0 ] || exit $$rc; \
	$(BIN)/pytest -q -ra $(NATIVE_ENGINE_TESTS)
