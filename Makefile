# Two entry points (README quick start): `make demo` and `make test`.
# Both install whatever is missing first, so they work on a fresh Debian machine as root.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT    := DEBIAN_FRONTEND=noninteractive apt-get
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-ngspice39 install system-deps bench clean

demo: install
	$(VENV)/bin/eqprop demo --out results/demo

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# The tests that drive ngspice, against Debian 12's ngspice 39 (Sparse only) unpacked beside 46
# (.ci/with-ngspice39: apt-get download + dpkg-deb -x into .venv/ngspice-39, nothing installed).
test-ngspice39: install
	sh .ci/with-ngspice39 $(PY) -m pytest -q -m ngspice

bench: install
	$(PY) benchmarks/bench_euler.py
	$(PY) benchmarks/bench_engine.py --device cpu --batches 2 --threads 1
	$(PY) benchmarks/bench_spice.py --quick

install: system-deps $(STAMP)

# ngspice's shared library (PySpice dlopens it) and the CLI (subprocess fallback / cross-check):
# ngspice 46 with KLU from bookworm-backports on Debian 12, the plain packages elsewhere, and
# Debian 12's 39 where backports cannot be reached (.ci/install-ngspice says why).
system-deps:
	@sh .ci/install-ngspice
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
