# DitBERT: `make demo` runs the whole pipeline on the embedded data, `make test` the tests.
# Both first create or refresh the virtual environment .venv (`make setup`).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_ARCHIVE := data/vaderSentiment-3.3.2.tar.gz

.PHONY: setup test demo bench submission clean gpu-check

setup: $(STAMP) $(DEMO_ARCHIVE)

$(STAMP): requirements.txt requirements-data.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-data.txt
	touch $@

# Labelled movie-review sentences for the offline demo task, from the source distribution of vaderSentiment.
$(DEMO_ARCHIVE): | $(STAMP)
	mkdir -p data
	$(PY) -m pip download --quiet --no-deps --no-binary :all: vadersentiment==3.3.2 -d data

test: setup
	$(PY) -m pytest

demo: setup
	bash scripts/demo.sh

bench: setup
	bash scripts/bench.sh

# Fine-tune DitBERT on GLUE_TASKS (default CoLA, SST-2, MRPC, STS-B, RTE and WNLI) and write glue_submission.zip
# from those runs (needs GLUE_DIR). MODEL: the run folders' label (default MODEL_LABEL or ditbert-<preset>), e.g.
#   GLUE_DIR=../shared/glue_data make submission GLUE_TASKS=rte,mrpc MODEL=ditbert-mine
submission: setup
	GLUE_TASKS="$(GLUE_TASKS)" MODEL="$(MODEL)" bash scripts/submission.sh

# The base recipe's GPU path end to end on a CUDA machine, offline, in about 5 minutes on one H100
# (README, "Pretraining on a GPU"). It uses the environment `make setup` made and fetches nothing.
gpu-check:
	@test -x $(PY) || { echo "gpu-check: no $(PY): run make setup first (once, with the network)"; exit 1; }
	$(PY) bench/gpu_check.py

clean:
	rm -rf runs .pytest_cache
