# whyslow: `make run` installs everything and runs the demo; `make test` runs the tests;
# `make lint` checks style and types.
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: run test install install-train lint rabbitmq clean

run: install rabbitmq
	$(BIN)/whyslow demo

test: install-train rabbitmq
	$(BIN)/pytest

# mypy checks training against its stack too (torch, transformers, peft): install-train.
lint: install-train
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml deploy/local/install.sh
	VENV=$(VENV) deploy/local/install.sh
	touch $@

# The training pipeline's stack (CPU torch, transformers, peft): the tests need it.
install-train: $(VENV)/.installed-train

$(VENV)/.installed-train: pyproject.toml deploy/local/install.sh
	VENV=$(VENV) EXTRAS=dev,train deploy/local/install.sh
	touch $@ $(VENV)/.installed

rabbitmq:
	deploy/local/rabbitmq.sh

clean:
	rm -rf $(VENV) build *.egg-info
