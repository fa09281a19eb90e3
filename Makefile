# The two commands of the README: `make run` (the embedded default, 4 iterations) and
# `make test` (the whole suite). Both create .venv on first use and reuse it after.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.selflengthen-installed
ARGS ?=

.PHONY: run test inspect setup lock clean-venv

run: $(STAMP)
	$(PY) -m selflengthen run iterations=4 $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

inspect: $(STAMP)
	$(PY) -m selflengthen inspect $(ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_venv.sh locks/cpu.txt locks/gpu.txt
	VENV=$(VENV) bash scripts/setup_venv.sh

# re-resolve locks/cpu.txt and locks/gpu.txt (the versions every machine installs); commit them
lock:
	bash scripts/lock.sh

clean-venv:
	rm -rf $(VENV)
