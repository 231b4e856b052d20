# DitBERT: `make demo` runs the whole pipeline on the embedded data, `make test` the tests.
# Both first create or refresh the virtual environment .venv (`make setup`).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_ARCHIVE := data/vaderSentiment-3.3.2.tar.gz

.PHONY: setup test demo bench submission clean

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

# Fine-tune DitBERT on CoLA, SST-2, MRPC, STS-B, RTE and WNLI and write glue_submission.zip (needs GLUE_DIR).
submission: setup
	bash scripts/submission.sh

clean:
	rm -rf runs .pytest_cache
