# diskbench: `make test` and `make demo` work on a fresh clone; everything they
# need is installed here, once, into git-ignored virtualenvs under .venv/.
#   PY3=/path/to/python3  PY2=/path/to/python2.7   override the interpreters.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY3 ?= python3
# Python 2.7: `python2.7` if it really runs (a pyenv shim may not), else pyenv's.
PY2 ?= $(shell if python2.7 -c 'pass' >/dev/null 2>&1; then command -v python2.7; \
          else ls -d $$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)/versions/2.7*/bin/python 2>/dev/null | tail -n 1; fi)

VENV    := .venv
V3      := $(VENV)/py3
V2      := $(VENV)/py27
VTOOLS  := $(VENV)/tools
VLINT   := $(VENV)/lint
REQS    := requirements.txt requirements-test.txt
PYTEST_ARGS ?= tests
# make test: pytest-xdist workers per interpreter (both interpreters run at once);
# JOBS=0 runs each suite in one process
JOBS ?= 3
PYTEST_FLAGS := -q -rs --timeout=300 -p no:cacheprovider
XDIST = $(if $(filter-out 0,$(JOBS)),-n $(JOBS) --dist loadfile)

.PHONY: help test test3 test2 test-browser test-multihost lint demo demo2 bench clean env mutate dist bench-server readme-sample

help:
	@echo "make test    run the whole suite on Python 3 and on Python 2.7"
	@echo "make demo    a server and three local clients, then the report (demo2: on 2.7);"
	@echo "             KEEP=1 keeps its directory and prints where report.html is"
	@echo "make test-browser  install Chromium (apt) and check report.html renders in it"
	@echo "make test-multihost  install openssh-server (apt) if missing; the launcher over a real"
	@echo "             sshd and the network-namespace run, on both Pythons (root)"
	@echo "make bench   diskbench vs fio side by side (installs fio with apt if missing)"
	@echo "make bench-server  the server under 1000-20000 simulated clients, beside a bare threaded and a bare epoll server"
	@echo "make lint    ruff (pinned, ruff.toml), then byte-compile every file with both interpreters"
	@echo "make mutate  break the code on purpose (scripts/mutations.py): every breakage must turn a test red"
	@echo "make dist    build dist/diskbench-VERSION-py2.py3-none-any.whl and the sdist"
	@echo "make readme-sample  re-render README.md's sample report.txt from tests/data/readme_run"
	@echo "make clean   remove the virtualenvs and caches"

$(V3)/.installed: $(REQS)
	@command -v $(PY3) >/dev/null || { echo "error: no Python 3 ($(PY3)); set PY3=/path/to/python3" >&2; exit 1; }
	$(PY3) -m venv $(V3)
	$(V3)/bin/pip install -q --disable-pip-version-check -r requirements-test.txt
	@touch $@

$(VTOOLS)/.installed:
	$(PY3) -m venv $(VTOOLS)
	$(VTOOLS)/bin/pip install -q --disable-pip-version-check 'virtualenv<20.22'
	@touch $@

$(V2)/.installed: $(REQS) $(VTOOLS)/.installed
	@if [ -z "$(PY2)" ] || ! "$(PY2)" -c 'pass' >/dev/null 2>&1; then \
	  echo "error: no Python 2.7 found (tried python2.7 on PATH and \$$(pyenv root)/versions/2.7*)." >&2; \
	  echo "       Install it (e.g. 'pyenv install 2.7.18') or run 'make test PY2=/path/to/python2.7'." >&2; exit 1; fi
	$(VTOOLS)/bin/virtualenv -q -p "$(PY2)" $(V2)
	$(V2)/bin/pip install -q --disable-pip-version-check -r requirements-test.txt 2>&1 | grep -v "^WARNING: Url" || true
	@$(V2)/bin/python -c 'import pytest, mock' || { echo "error: Python 2.7 test environment incomplete" >&2; exit 1; }
	@touch $@

env: $(V3)/.installed $(V2)/.installed

# Both runs always happen, side by side, each on JOBS workers (the tests mostly
# wait on real processes and timers, so 2 cores keep up); each
# run's output is shown whole once both are done. The target fails if either failed.
test: env
	@rc=0; out=$$(mktemp -d); \
	echo "make test: Python 3 and Python 2.7 side by side (output follows when both are done)"; \
	( $(V3)/bin/python -m pytest $(PYTEST_FLAGS) $(XDIST) $(PYTEST_ARGS) > $$out/py3.log 2>&1; \
	  echo $$? > $$out/py3.rc ) & \
	( $(V2)/bin/python -m pytest $(PYTEST_FLAGS) $(XDIST) $(PYTEST_ARGS) > $$out/py27.log 2>&1; \
	  echo $$? > $$out/py27.rc ) & \
	wait; \
	echo "=== Python 3: $$($(V3)/bin/python -V 2>&1)"; cat $$out/py3.log; \
	echo "=== Python 2.7: $$($(V2)/bin/python -V 2>&1)"; cat $$out/py27.log; \
	[ "$$(cat $$out/py3.rc)" = 0 ] || rc=1; [ "$$(cat $$out/py27.rc)" = 0 ] || rc=1; \
	rm -rf $$out; \
	if [ $$rc -ne 0 ]; then echo "make test: FAILED on at least one interpreter" >&2; fi; \
	exit $$rc

test3: $(V3)/.installed
	$(V3)/bin/python -m pytest $(PYTEST_FLAGS) $(PYTEST_ARGS)

test2: $(V2)/.installed
	$(V2)/bin/python -m pytest $(PYTEST_FLAGS) $(PYTEST_ARGS)

$(VLINT)/.installed: requirements-lint.txt
	$(PY3) -m venv $(VLINT)
	$(VLINT)/bin/pip install -q --disable-pip-version-check -r requirements-lint.txt
	@touch $@

# ruff (pinned; rules in ruff.toml, chosen so 2.7 code stays valid), then every file
# byte-compiled by both interpreters. CI runs it before the tests.
lint: $(VLINT)/.installed
	$(VLINT)/bin/ruff check --no-cache .
	@files=$$(git ls-files '*.py'; git ls-files --others --exclude-standard '*.py'); \
	for py in $(PY3) $(PY2); do \
	  echo "py_compile with $$py"; \
	  $$py -c 'import sys; [compile(open(f, "rb").read(), f, "exec") for f in sys.argv[1:]]' $$files || exit 1; \
	done

DEMO_FLAGS = $(if $(filter-out 0,$(KEEP)),--keep)

demo: $(V3)/.installed
	$(V3)/bin/python scripts/demo.py $(DEMO_FLAGS)

# README.md's sample report.txt, re-rendered by the current code from a recorded run
# (tests/readme_sample.py; tests/test_readme_samples.py checks it is current).
readme-sample: $(V3)/.installed
	$(V3)/bin/python -m tests.readme_sample

demo2: $(V2)/.installed
	$(V2)/bin/python scripts/demo.py $(DEMO_FLAGS)

# Headless Chromium opens a real report.html (Debian's chromium package) and saves
# docs/report-screenshot.png; `make test` skips this test when Chromium is absent.
test-browser: $(V3)/.installed
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }
	DISKBENCH_SCREENSHOT=docs/report-screenshot.png $(V3)/bin/python -m pytest $(PYTEST_FLAGS) tests/test_report_browser.py

# The launcher over a real ssh to a private sshd, and server + 3 clients in network
# namespaces; `make test` runs the same files and skips, saying why, what needs root or sshd.
MULTIHOST_TESTS := tests/test_launch.py tests/faults/test_multihost_netns.py
test-multihost: env
	@test -x /usr/sbin/sshd || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y openssh-server; }
	$(V3)/bin/python -m pytest $(PYTEST_FLAGS) $(MULTIHOST_TESTS)
	$(V2)/bin/python -m pytest $(PYTEST_FLAGS) $(MULTIHOST_TESTS)

mutate: $(V3)/.installed $(V2)/.installed
	$(V3)/bin/python scripts/mutate.py --python $(CURDIR)/$(V3)/bin/python \
	  --python2 $(CURDIR)/$(V2)/bin/python

bench-server: env
	$(V3)/bin/python -m pytest $(PYTEST_FLAGS) -m slow tests/test_server_ingest.py
	$(V2)/bin/python -m pytest $(PYTEST_FLAGS) -m slow tests/test_server_ingest.py
	$(V3)/bin/python scripts/bench_server.py --python $(CURDIR)/$(V3)/bin/python \
	  --clients 1000 5000 20000 --duration 60
	$(V3)/bin/python scripts/bench_server.py --python $(CURDIR)/$(V2)/bin/python \
	  --clients 1000 5000 --duration 60

# One universal wheel (the same code runs on 2.7 and 3) and an sdist; pip builds
# the wheel in an isolated environment with setuptools/wheel from the index.
dist: $(V3)/.installed
	rm -rf dist build *.egg-info
	$(V3)/bin/python -m pip wheel -q --no-deps -w dist .
	$(V3)/bin/python setup.py -q sdist -d dist
	rm -rf build *.egg-info
	@ls -1 dist

bench: env
	$(V3)/bin/python scripts/bench_vs_fio.py --python $(V3)/bin/python --python $(V2)/bin/python

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name '*.pyc' -delete
