# Two commands: `make run` tries the course on its embedded defaults, `make test` tests it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	COURSE_ENV=$${COURSE_ENV:-development} $(BIN)/course db upgrade
	COURSE_ENV=$${COURSE_ENV:-development} $(BIN)/course run --host $${HOST:-127.0.0.1} --port $${PORT:-5000}

test: $(STAMP)
	$(BIN)/ruff check course tests bench wsgi.py
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Benchmarks (not tests): needs PostgreSQL, and smtp-sink and wrk from Debian's postfix and
# wrk packages. See docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check course tests wsgi.py
	$(BIN)/ruff format --check course tests wsgi.py

clean:
	rm -rf $(VENV) instance/outbox .pytest_cache
