# The two set-up commands (README.md): `make demo` and `make test`. Both work on a fresh machine.
# Without make (Windows): `python tools/bootstrap.py demo` and `python tools/bootstrap.py test`.
PYTHON ?= python3

.PHONY: demo test lint clean

demo:
	$(PYTHON) tools/bootstrap.py demo

test:
	$(PYTHON) tools/bootstrap.py test

lint:
	$(PYTHON) tools/bootstrap.py lint

clean:
	rm -rf .venv out
