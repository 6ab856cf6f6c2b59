# whyslow: `make run` installs everything and runs the demo; `make test` runs the tests.
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: run test install lint rabbitmq clean

run: install rabbitmq
	$(BIN)/whyslow demo

test: install rabbitmq
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml deploy/local/install.sh
	VENV=$(VENV) deploy/local/install.sh
	touch $@

rabbitmq:
	deploy/local/rabbitmq.sh

clean:
	rm -rf $(VENV) build *.egg-info
