# Two commands: `make run` tries the course on its embedded defaults, `make test` tests it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make run` and `make course` are development: SQLite, the mail outbox, a local key.
DEV := COURSE_ENV=$${COURSE_ENV:-development}

.PHONY: run course test lint types bench clean messages translations

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(DEV) $(BIN)/course db upgrade
	$(DEV) $(BIN)/course run

# An operator command next to `make run`, with the same settings:
#   make course ARGS='stats'      make course ARGS='admin create you@example.org'
course: $(STAMP)
	@$(DEV) $(BIN)/course $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check course tests bench wsgi.py
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

types: $(STAMP)
	$(BIN)/mypy

# Benchmarks (not tests): needs PostgreSQL, and smtp-sink and wrk from Debian's postfix and
# wrk packages. See docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Translations (docs/translating.md): `make messages` extracts every message into the
# template and merges it into each language's .po; after translating, `make translations`
# compiles the .mo files that ship (tests/test_i18n.py fails while they disagree).
CATALOGS := course/translations
messages: $(STAMP)
	$(BIN)/pybabel extract --mapping-file babel.cfg --keywords lazy_gettext --no-location \
		--project course --copyright-holder "" \
		--output-file $(CATALOGS)/messages.pot .
	$(BIN)/pybabel update --input-file $(CATALOGS)/messages.pot --output-dir $(CATALOGS) \
		--no-fuzzy-matching --ignore-obsolete

translations: $(STAMP)
	$(BIN)/pybabel compile --directory $(CATALOGS) --statistics

lint: $(STAMP)
	$(BIN)/ruff check course tests wsgi.py
	$(BIN)/ruff format --check course tests wsgi.py

clean:
	rm -rf $(VENV) instance/outbox .pytest_cache dist build
