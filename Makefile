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

# The MMDG comparison on both AV-Digits-DG sets (acoustic conditions, then languages),
# CPU-sized: every config in examples/mmdg/configs plus the unimodal baselines,
# leave-one-domain-out over 4 domains, 1 seed, 10 epochs (the README's tables: 20 epochs,
# more seeds), 2 worker processes of one thread each (so a busy machine slows the demo down
# instead of collapsing it); writes runs/mmdg/acoustic/ and runs/mmdg/language/.
demo: $(VENV)/.installed-examples
	cd examples && OMP_NUM_THREADS=1 ../$(PY) -m mmdg.compare \
		--data mmdg/data/av-digits-dg-acoustic --configs mmdg/configs/*.yaml \
		mmdg/configs/*.toml --seeds 1 --epochs 10 --workers 2 --threads 1 \
		--out ../runs/mmdg/acoustic
	cd examples && OMP_NUM_THREADS=1 ../$(PY) -m mmdg.compare \
		--data mmdg/data/av-digits-dg --configs mmdg/configs/*.yaml \
		mmdg/configs/*.toml --seeds 1 --epochs 10 --workers 2 --threads 1 \
		--out ../runs/mmdg/language

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
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) benchmarks/bench.py

bench-distributed: $(VENV)/.installed-examples
	OMP_NUM_THREADS=1 $(PY) benchmarks/distributed.py

clean:
	rm -rf $(VENV) build dist site .pytest_cache .hypothesis
