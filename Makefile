# Two entry points (README quick start): `make demo` and `make test`.
# Both install whatever is missing first, so they work on a fresh Debian machine as root.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT    := DEBIAN_FRONTEND=noninteractive apt-get
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install system-deps bench clean

demo: install
	$(VENV)/bin/eqprop demo --out results/demo

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_euler.py
	$(PY) benchmarks/bench_engine.py --device cpu --batches 2 --threads 1
	$(PY) benchmarks/bench_spice.py --quick

install: system-deps $(STAMP)

# ngspice's shared library (PySpice dlopens it) and the CLI (subprocess fallback / cross-check).
system-deps:
	@if ! command -v ngspice >/dev/null 2>&1 || ! ls /usr/lib/*/libngspice.so.0 >/dev/null 2>&1; then \
		$(SUDO) $(APT) update && $(SUDO) $(APT) install -y ngspice libngspice0; fi
	@if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then \
		$(SUDO) $(APT) update && $(SUDO) $(APT) install -y python3 python3-venv python3-pip; fi

# torch first and pinned: the CPU build of 2.13.0 lies on these machines' disk; an unpinned
# torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) results .pytest_cache
