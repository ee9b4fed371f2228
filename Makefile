# Two commands: `make run` and `make test`. Everything else is for developers.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test test-sqlite test-postgres bench lint install migration clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -e '.[dev]'
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/nurture run

# The whole suite on SQLite, then again on PostgreSQL when NURTURE_TEST_DATABASE_URL is set.
# pytest exits 5 when it collected no test: that fails the build like any other non-zero code.
test: $(STAMP)
	$(BIN)/python -m pytest
	@if [ -n "$$NURTURE_TEST_DATABASE_URL" ]; then \
		echo "== again on PostgreSQL =="; \
		$(BIN)/python -m pytest -m "not e2e"; \
	fi

bench: $(STAMP)
	@for script in bench/*.py; do \
		case $$script in bench/_*) continue;; esac; \
		echo "== $$script" >&2; $(BIN)/python $$script || exit 1; \
	done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Write a migration for model changes: make migration m="what changed"
migration: $(STAMP)
	$(BIN)/python scripts/new_migration.py "$(m)"

clean:
	rm -rf $(VENV) .nurture .pytest_cache .mypy_cache .ruff_cache
