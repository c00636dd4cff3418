# dicomvault — the two commands of the quickstart: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= $(wildcard dicomvault.toml)
CONFIG_FLAG := $(if $(CONFIG),--config $(CONFIG),)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages: DCMTK (interop tests), Tesseract (OCR de-identification),
# rsyslog + TLS (audit forwarding test), Chromium (browser tests; never a downloaded browser).
APT_PACKAGES := dcmtk tesseract-ocr tesseract-ocr-eng rsyslog rsyslog-gnutls fonts-dejavu-core chromium
APT_COMMANDS := storescu tesseract rsyslogd chromium

.PHONY: run test sysdeps install lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

sysdeps:
	@missing=""; for c in $(APT_COMMANDS); do command -v $$c >/dev/null || missing=1; done; \
	[ -f /usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so ] || [ -n "$$(ls /usr/lib/*/rsyslog/lmnsd_gtls.so 2>/dev/null)" ] || missing=1; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $(APT_PACKAGES)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

run: $(STAMP)
	@if [ ! -f "$${DICOMVAULT_DATA_DIR:-data}/keys/root.json" ]; then $(BIN)/dicomvault init $(CONFIG_FLAG); fi
	-$(BIN)/dicomvault viewer install $(CONFIG_FLAG)
	$(BIN)/dicomvault serve $(CONFIG_FLAG)

test: $(STAMP) sysdeps
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy src/dicomvault

bench: $(STAMP) sysdeps
	@for b in bench/bench_*.py; do $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) .pytest_cache
