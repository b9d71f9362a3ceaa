# poolpolicy-operator. The two commands a fresh machine needs: `make demo` and `make test`.
# Node 24 comes from the npm package `node` (devDependency): npm scripts put it first on PATH.
SHELL := /bin/bash
export PATH := $(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: all deps node-deps tools node-tools build typecheck lint format generate test test-unit test-matrix test-integration demo bench bench-smoke e2e e2e-clean e2e-kind lint-chart clean

all: build

## deps: PostgreSQL, Redis (apt-get as root), prometheus + promtool from Debian's package (into the tools cache), Go check, and node_modules
deps: node-deps
	@bash tools/install-deps.sh

node-deps: node_modules/.package-lock.json
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

## tools: build etcd, kube-apiserver, controller-manager, scheduler, kubectl, kwok, helm; fetch CloudNativePG's Cluster CRD (cached by version)
tools:
	@bash tools/build-tools.sh

build: node-deps
	npm run build

typecheck: node-deps
	npm run typecheck

## generate: regenerate the CRD from src/api/schema.ts
generate: node-deps
	npm run generate

## test: every test (unit, the PostgreSQL 13–18 matrix, integration against a real control plane, PostgreSQL and Redis, then the story on a real node)
test: deps tools node-tools typecheck lint
	@bash tools/run-tests.sh

test-unit: node-deps
	@bash tools/run-tests.sh unit

## test-matrix: the PostgreSQL-facing tests on every major from 13 to 18 (no control plane; POOLPOLICY_PG_MATRIX="16 17" narrows it)
test-matrix: deps
	@bash tools/run-tests.sh matrix

test-integration: deps tools
	@bash tools/run-tests.sh integration

## demo: the story as it happens, then kept running until Ctrl-C (which removes everything). With Docker, as root: on real pods, with the node, images and chart of `make e2e`; else (or DEMO=kwok): a local control plane with kwok's simulated pods, PostgreSQL and Redis, the operator, and a PoolPolicy converging
demo: deps tools
	npm run -s demo

## bench: the benchmarks of docs/benchmarks.md (about 30 min; BENCH_SCALE=small for about 10); not part of `make test`
bench: deps tools
	npm run -s bench

## bench-smoke: every benchmark scenario at a tiny size (a few minutes), report to a temp file
bench-smoke: deps tools
	npm run -s bench:smoke

## node-tools: the real node's kubelet, kube-proxy, CoreDNS (cached by version) and its Debian packages (containerd, runc, CNI, iptables)
node-tools:
	@bash tools/build-node.sh

## e2e: the user's story on a real node (kubelet + containerd + real pods), images built here and cached by content
e2e: deps tools node-tools node-deps
	@bash tools/run-tests.sh e2e

## e2e-clean: remove whatever an interrupted `make e2e` left on this machine (its node, containers, mounts, netns)
e2e-clean:
	@bash tools/e2e/node.sh down

## e2e-kind: for machines with Docker: kind cluster, image, Helm install, example policy
e2e-kind:
	bash tools/e2e-kind.sh

lint-chart: tools
	"$$(bash tools/build-tools.sh --print-dir)/helm" lint --strict charts/poolpolicy-operator

clean:
	rm -rf dist coverage

## lint: the formatter's check and the linter (Biome); `make format` rewrites the files
lint: node-deps
	npm run -s lint

format: node-deps
	npm run -s format
