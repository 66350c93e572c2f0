# Entry points: `make book` builds the HTML book into _build/html, `make test`
# runs the test suite. Both create or refresh .venv first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= ci
# extra options for jupyter-book, e.g. BOOKFLAGS="-W -n --keep-going" as in CI
BOOKFLAGS ?=

.PHONY: book test venv clean

# .venv is refreshed whenever requirements.txt or pyproject.toml is newer than
# the stamp, and rebuilt if its interpreter no longer runs, so a stale
# environment is never used.
$(VENV)/.installed: requirements.txt pyproject.toml
	@$(BIN)/python -c "" 2>/dev/null || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

book: $(VENV)/.installed
	MVLIB_PROFILE=$(PROFILE) $(BIN)/jupyter-book build . $(BOOKFLAGS)
	@echo "Open _build/html/index.html in a browser."

test: $(VENV)/.installed
	$(BIN)/python -m pytest

clean:
	rm -rf _build
