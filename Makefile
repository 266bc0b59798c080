# The two commands that do everything on a fresh machine: `make train` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup train test lint bench

setup:
	bash scripts/setup_env.sh

train: setup
	$(PY) scripts/train.py env=sokoban algo=drgrpo_soft trainer.val_before_train=true es_manager.val.env_groups=16 $(ARGS)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

lint: setup
	$(VENV)/bin/ruff check .
