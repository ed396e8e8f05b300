# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch 2.13.0 first: a pinned CPU-capable release that satisfies torch>=2.2.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo demo-multitask test test-slow test-distributed lint typecheck docs bench bench-distributed clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed-examples: $(VENV)/.torch pyproject.toml
	$(PIP) install --quiet -e ".[examples]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.torch pyproject.toml
	$(PIP) install --quiet -e ".[test]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.torch pyproject.toml
	$(PIP) install --quiet -e ".[dev]"
	touch $@

# The MMDG comparison on AV-Digits-DG, CPU-sized: every config in examples/mmdg/configs plus
# the unimodal baselines, leave-one-domain-out over 4 domains, 2 seeds; writes runs/mmdg/.
demo: $(VENV)/.installed-examples
	cd examples && ../$(PY) -m mmdg.compare --data mmdg/data/av-digits-dg \
		--configs mmdg/configs/*.yaml mmdg/configs/*.toml --seeds 2 --out ../runs/mmdg

demo-multitask: $(VENV)/.installed-examples
	$(PY) examples/multitask_demo.py

# The fast suite (under 10 minutes on 2 cores); test-slow runs the end-to-end checks.
test: $(VENV)/.installed-test
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m pytest -q -m "not slow"

test-slow: $(VENV)/.installed-test
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m pytest -q -m slow

test-distributed: $(VENV)/.installed-test
	OMP_NUM_THREADS=1 $(PY) -m pytest -q tests/distributed

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check gradsurgery tests examples benchmarks
	$(VENV)/bin/ruff format --check gradsurgery tests examples benchmarks

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy --strict gradsurgery

$(VENV)/.installed-docs: $(VENV)/.torch pyproject.toml
	$(PIP) install --quiet -e ".[docs]"
	touch $@

docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

bench: $(VENV)/.installed-examples
	$(PY) benchmarks/aggregate.py

bench-distributed: $(VENV)/.installed-examples
	OMP_NUM_THREADS=1 $(PY) benchmarks/distributed.py

clean:
	rm -rf $(VENV) build dist site .pytest_cache .hypothesis
