# make paper  set up, then reproduce Beguš & Zhou's analysis on the ciwGAN the project
#             trained on this CPU and ships (specs/ciwgan_3words.yaml, then
#             specs/fricatives_s_sh.yaml --profile cpu; see README.md for the time)
# make demo   set up, then run the embedded default experiment
# make test   set up, then run the default (fast) test suite
# make lock   refresh requirements.lock after a change to pyproject.toml (docs/environment.md)
VENV ?= .venv
PYTEST = $(VENV)/bin/python -m pytest

.PHONY: setup paper demo test test-slow test-cuda bench lint lock lock-upgrade clean

setup:
	scripts/setup.sh

# requirements.lock: `make lock` after a change to pyproject.toml's dependencies
# (keeps every other pin), `make lock-upgrade` to move every pin to the newest
# release; then run the suite on the new lock before committing it.
lock:
	scripts/lock.sh

lock-upgrade:
	scripts/lock.sh --upgrade

paper: setup
	$(VENV)/bin/wavelens run specs/ciwgan_3words.yaml
	$(VENV)/bin/wavelens run specs/fricatives_s_sh.yaml --profile cpu

demo: setup
	$(VENV)/bin/wavelens run specs/demo.yaml

test: setup
	$(PYTEST)

test-slow: setup
	$(PYTEST) -m slow

test-cuda: setup
	$(PYTEST) -m cuda

bench: setup
	$(PYTEST) tests/benchmarks --benchmark-only

lint: setup
	$(VENV)/bin/ruff check framework plugins tests examples scripts

clean:
	rm -rf runs .pytest_cache .benchmarks
