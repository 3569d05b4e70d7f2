# Breachbook: `make demo` and `make test` work on a fresh machine with Python 3.11 and pip.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
BENCH_SIZE ?= 1G

.PHONY: help venv demo test lint typecheck bench bench-scale conformance lab clean oracles

help:
	@echo "make demo   build the demo case and write its report"
	@echo "make test   run the test suite (installs what it needs)"
	@echo "make bench  speed and memory, side by side with tshark"
	@echo "make bench-scale  rotated captures, 1 vs 2 workers vs Dask"
	@echo "make lint   ruff + mypy"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,lab,logs,scan]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the oracle and browser tests use (tshark, chromium). Installed only
# when running as root (as CI does); otherwise those tests skip and say what to install.
oracles:
	@if ! command -v tshark >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tshark >/dev/null) \
	      || echo "could not install tshark; oracle tests will skip"; \
	  else echo "tshark not installed (apt-get install tshark); oracle tests will skip"; fi; \
	fi
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "could not install chromium; the browser test will skip"; \
	  else echo "chromium not installed (apt-get install chromium chromium-driver); the browser test will skip"; fi; \
	fi

demo: $(STAMP)
	$(PY) -m forensics.cli demo --out cases/demo --report reports/demo-report.html

test: $(STAMP) oracles
	$(PY) -c "import forensics.net; forensics.net.warmup()"
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check forensics widgets tests
	$(VENV)/bin/mypy

typecheck: lint

bench: $(STAMP) oracles
	$(PY) tests/bench/bench_ingest.py --size $(BENCH_SIZE) --out bench-out
	$(PY) tests/bench/bench_reassembly.py --size $(BENCH_SIZE) --out bench-out
	$(PY) tests/bench/bench_logs.py
	$(PY) tests/bench/bench_yara.py --out bench-out

# Share of Zeek's http/dns/ssl/smb/ftp/smtp rows we reproduce, per table.
conformance: $(STAMP)
	$(PY) -m forensics.conformance

# Rotated captures from several sensors, 1 vs 2 workers vs Dask. SCALE_SIZE per sensor.
SCALE_SIZE ?= 256M
bench-scale: $(STAMP)
	$(PY) tests/bench/bench_scale.py --sensors 4 --files-per-sensor 6 --size-per-sensor $(SCALE_SIZE) --out bench-out

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf cases reports bench-out .pytest_cache
