# Builds every environment from nothing and runs the main job or the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
MEMBERS := chgnet-0.2.0 chgnet-0.3.0 chgnet-r2scan sevennet-0-11jul2024 sevennet-0-22may2024 sevennet-l3i5

FIT_VENV := .venv-fit
BENCH_VENV := .venv-bench
MONGO_VENV := .venv-mongo
# pyenv's python3.13 shim may not run: prefer the real interpreter
PYTHON313 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) python3.13)

.PHONY: setup cp2k fit-env bench-env mongo-env demo slurm-demo score-examples notebooks test test-fast benchmarks benchmark-campaign clean

setup: $(VENV)/.installed $(FIT_VENV)/.installed $(MONGO_VENV)/.installed cp2k
fit-env: $(FIT_VENV)/.installed

# torch==2.13.0 first: the CPU build here (a bare or looser torch requirement pulls a multi-GB CUDA
# build). GPU nodes: make setup TORCH_INDEX=https://download.pytorch.org/whl/cu124 (PyTorch's CUDA wheels).
TORCH_INDEX ?=
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -c constraints.txt -e '.[all,test]'
	touch $@

# Nonlinear pacemaker fits: tensorpotential needs numpy < 2.4 and pandas < 3, so it gets its own
# environment; --no-deps keeps tensorpotential from pulling CUDA builds of TensorFlow.
$(FIT_VENV)/.installed:
	$(PYTHON) -m venv $(FIT_VENV)
	$(FIT_VENV)/bin/pip install --quiet --upgrade pip
	$(FIT_VENV)/bin/pip install --quiet "numpy<2.4" "pandas<3" "tensorflow==2.20.*" "tf_keras==2.20.*" \
	    python-ace==0.4.0rc1 matscipy sympy pyyaml tqdm requests "questionary>=2.0" "rich>=13" scikit-learn scipy ase
	$(FIT_VENV)/bin/pip install --quiet --no-deps tensorpotential==0.6.2.1
	$(FIT_VENV)/bin/pacemaker -v
	touch $@

# A MongoDB wire-protocol test server (mongoeco on SQLite; needs Python ≥ 3.13) for the
# multi-process FireWorks tests. It is not MongoDB: production uses a real server.
mongo-env: $(MONGO_VENV)/.installed
$(MONGO_VENV)/.installed:
	$(PYTHON313) -m venv $(MONGO_VENV)
	$(MONGO_VENV)/bin/pip install --quiet --upgrade pip
	$(MONGO_VENV)/bin/pip install --quiet 'mongoeco[wire]==4.11.0'
	touch $@

# CP2K (the free DFT labeller) from Debian where we are root; otherwise say how, and go on.
cp2k:
	@command -v cp2k.psmp >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && apt-get install -y -qq cp2k cp2k-data >/dev/null; \
	  else \
	    echo "NOTE: CP2K is not installed and needs root: apt-get install cp2k cp2k-data." \
	         "CP2K labels and their tests are unavailable until then."; \
	  fi; }

# the demo needs the main environment and CP2K only (linear ACE; embedded databases)
demo: $(VENV)/.installed cp2k
	$(BIN)/uq-flows run workflows/demo.yaml

# the demo loop on a real single-node SLURM (root: installs slurm-wlm and munge, starts and stops
# them) with pilot workers from `uq-flows hpc-templates`; prints one JSON object
slurm-demo: $(VENV)/.installed $(MONGO_VENV)/.installed cp2k
	$(BIN)/python benchmarks/slurm_demo.py

score-examples: $(VENV)/.installed
	$(BIN)/uq-flows score examples/structures $(addprefix --model ,$(MEMBERS)) --out scored.extxyz

# every notebook top to bottom; the executed copies (with figures) go to NOTEBOOK_OUT
NOTEBOOK_OUT ?= $(or $(TMPDIR),/tmp)/uq-flows-notebooks
notebooks: setup
	cd notebooks && for notebook in *.ipynb; do \
	  ../$(BIN)/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=900 \
	      --output-dir "$(NOTEBOOK_OUT)" "$$notebook" || exit 1; done
	@echo "executed notebooks in $(NOTEBOOK_OUT)"

test: setup bench-env
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

# maml (the DIRECT reference) brings its own pins: its own environment, with numpy, scipy and
# scikit-learn at the main environment's versions so PCA and BIRCH give bit-identical results.
bench-env: $(BENCH_VENV)/.installed
$(BENCH_VENV)/.installed: $(VENV)/.installed
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet maml==2025.4.3 $$($(BIN)/python -c "import numpy, scipy, sklearn; \
	    print(f'numpy=={numpy.__version__} scipy=={scipy.__version__} scikit-learn=={sklearn.__version__}')")
	touch $@

benchmarks: setup bench-env
	$(BIN)/python benchmarks/uncertainty.py
	$(BIN)/python benchmarks/direct.py
	$(BIN)/python benchmarks/ace_fit.py
	$(BIN)/python benchmarks/cago.py
	$(BIN)/python benchmarks/loop_scale.py --sizes 1000 10000 --reference-max-n 1000

# the loop at 10^3, 10^4 and 10^5 candidates (about an hour here); the previous design at 10^3 only
benchmark-campaign: setup
	$(BIN)/python benchmarks/loop_scale.py --sizes 1000 10000 100000 --reference-max-n 1000 --max-seconds 5400

clean:
	rm -rf $(VENV) $(FIT_VENV) $(BENCH_VENV) $(MONGO_VENV) .pytest_cache scored.extxyz
