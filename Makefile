# presence-router: the two commands are `make run` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
SYNAPSE_VERSION ?= 1.163.2
VENV := .venv
VENV_PY := $(VENV)/bin/python
BIN := bin/presence-router
export CGO_ENABLED := 1
# goolm: mautrix's pure-Go Olm and Megolm (end-to-end encryption without
# libolm). Every build and test takes it; the -tags below add it again.
export GOFLAGS := -tags=goolm

.PHONY: all build venv services test unit adapter-test e2e lint run run-workers fuzz fuzz-smoke bench bench-smoke soak clean image wheel container-tools

all: build

build:
	go build -o $(BIN) .

# A Python venv with Synapse, the adapter (editable) and the adapter's test
# tools (pytest, mypy). Rebuilt when the Makefile or the adapter's
# pyproject.toml changes; pip skips what is already installed.
MYPY_VERSION = 1.13.0
venv: $(VENV)/.stamp
$(VENV)/.stamp: adapter/pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install --quiet --upgrade pip
	$(VENV_PY) -m pip install --quiet "matrix-synapse[redis]==$(SYNAPSE_VERSION)" psycopg2-binary pytest "mypy==$(MYPY_VERSION)"
	$(VENV_PY) -m pip install --quiet -e ./adapter
	touch $@

# Static checks, with tools pinned here and installed into bin/tools.
STATICCHECK_VERSION = v0.8.2
GOIMPORTS_VERSION = v0.52.0
TOOLS := $(CURDIR)/bin/tools
$(TOOLS)/staticcheck: Makefile
	GOBIN=$(TOOLS) go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
$(TOOLS)/goimports: Makefile
	GOBIN=$(TOOLS) go install golang.org/x/tools/cmd/goimports@$(GOIMPORTS_VERSION)

lint: $(TOOLS)/staticcheck $(TOOLS)/goimports
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@out=$$($(TOOLS)/goimports -local github.com/presence-router/presence-router -l .); if [ -n "$$out" ]; then echo "goimports -local github.com/presence-router/presence-router would change:"; echo "$$out"; exit 1; fi
	go vet ./...
	go vet -tags 'e2e goolm' ./e2e/...
	go vet -tags 'e2e bench goolm' ./e2e/...
	$(TOOLS)/staticcheck -tags goolm ./...
	$(TOOLS)/staticcheck -tags 'e2e goolm' ./e2e/...
	@cp go.mod /tmp/presence-router-go.mod.$$$$ && cp go.sum /tmp/presence-router-go.sum.$$$$ && go mod tidy && \
	  if ! git diff --quiet -- go.mod go.sum; then echo "go mod tidy changes go.mod or go.sum; run it and commit"; git diff -- go.mod go.sum; \
	    cp /tmp/presence-router-go.mod.$$$$ go.mod; cp /tmp/presence-router-go.sum.$$$$ go.sum; exit 1; fi

# PostgreSQL, Redis and HAProxy, for the store's tests on PostgreSQL, the
# worker deployment and the active/standby pair: installed from Debian's packages when missing (as root, as CI
# runs), or a message naming the packages. The tests start and stop their
# own servers on loopback; nothing runs as a system service.
services:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || missing="postgresql"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing="$$missing haproxy"; \
	missing=$$(echo $$missing); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing $$missing from Debian's packages"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "Missing: $$missing. Install them (Debian: sudo apt-get install $$missing) and run make again."; exit 1; fi; \
	fi

unit: services
	go test -race -count=1 ./...
	PR_TEST_POSTGRES=start go test -race -count=1 ./store/ ./follower/ .

adapter-test: venv
	$(VENV_PY) -m mypy --strict adapter/presence_router_adapter
	$(VENV_PY) -m pytest -q adapter/tests

e2e: build venv services image wheel
	$(E2E_ENV) go test -tags 'e2e goolm' -count=1 -v -timeout 20m ./e2e/...

# Everything CI runs.
test: lint unit fuzz-smoke adapter-test bench-smoke e2e

# Benchmarks: figures and ratios against in-run references (see BENCHMARKS.md).
E2E_ENV = PR_PYTHON=$(CURDIR)/$(VENV_PY) PR_BINARY=$(CURDIR)/$(BIN) PR_IMAGE=$(IMAGE):latest \
	PR_WHEEL=$$(ls $(CURDIR)/$(WHEEL_DIR)/presence_router_adapter-*-py3-none-any.whl 2>/dev/null) PR_SYNAPSE_VERSION=$(SYNAPSE_VERSION)
bench: build venv
	go test -run='^$$' -bench=. -benchmem ./router/
	go run ./bench/load
	go run ./bench/load --groups --rounds 5
	go run ./bench/scale --binary $(BIN)
	go test -run='^$$' -bench=ApplyOneChange -benchtime=50x ./store/
	PR_SCALE=1 go test -count=1 -run TestScale_ListAndHistory -v ./bot/ | grep -E '^(scale:|--- |ok|FAIL|\s+\S+_test.go:)'
	$(VENV_PY) bench/adapter_bench.py --cold $(BIN)
	$(E2E_ENV) go test -tags 'e2e bench goolm' -count=1 -run TestBenchPropagation -v ./e2e/ | grep -E '^(propagation|--- |ok|FAIL|\s+\S+_test.go:)'
	$(E2E_ENV) go test -tags 'e2e bench goolm' -count=1 -timeout 18m -run TestBenchGroupVsRoom -v ./e2e/ | grep -E '^(grouproom|--- |ok|FAIL|\s+\S+_test.go:)'
	PR_TEST_POSTGRES=start PR_BENCH_STANDBY=200 go test -count=1 -run TestBenchStandbyPropagation -v ./follower/ | grep -E '^(standby|  |--- |ok|FAIL)'
	PR_BENCH_PATTERNS=7 go test -count=1 -run TestBenchPatternCost -v ./router/ | grep -E '^(patterns|--- |ok|FAIL)'
	PR_BENCH_GROUPS=7 go test -count=1 -run TestBenchGroupCost -v ./router/ | grep -E '^(groups|--- |ok|FAIL)'

# A short run of the benchmarks, to keep them working.
bench-smoke: build venv services
	go test -run='^$$' -bench=. -benchtime=1x ./router/
	go run ./bench/load --quick
	go run ./bench/load --groups --quick
	go run ./bench/scale --quick --binary $(BIN)
	$(VENV_PY) bench/adapter_bench.py --quick --cold $(BIN)
	$(E2E_ENV) PR_PROPAGATION_RUNS=3 go test -tags 'e2e bench goolm' -count=1 -run TestBenchPropagation -v ./e2e/ | grep -E '^(propagation|--- |ok|FAIL|\s+\S+_test.go:)'
	$(E2E_ENV) PR_GROUPROOM_USERS=8 go test -tags 'e2e bench goolm' -count=1 -run TestBenchGroupVsRoom -v ./e2e/ | grep -E '^(grouproom|--- |ok|FAIL|\s+\S+_test.go:)'
	PR_TEST_POSTGRES=start PR_BENCH_STANDBY=3 go test -count=1 -run TestBenchStandbyPropagation -v ./follower/ | grep -E '^(standby|  |--- |ok|FAIL)'
	PR_BENCH_PATTERNS=1 go test -count=1 -run TestBenchPatternCost -v ./router/ | grep -E '^(patterns|--- |ok|FAIL)'
	PR_BENCH_GROUPS=1 go test -count=1 -run TestBenchGroupCost -v ./router/ | grep -E '^(groups|--- |ok|FAIL)'

# Crash safety under kill -9, repeated: on SQLite, on PostgreSQL, and with
# encrypted commands (SOAK_COUNT=5 runs of each, about 25 s each).
SOAK_COUNT ?= 5
soak: build venv services
	$(E2E_ENV) go test -tags 'e2e goolm' -count=$(SOAK_COUNT) -v -timeout 30m -run 'TestCrashSafety|TestEncryptedControlRoom$$/.*/kill' ./e2e/...

# Every fuzz target, starting from the seed corpora committed under
# */testdata/fuzz (make fuzz FUZZTIME=5m for longer; 30 s each by default).
# Go minimizes each new interesting input for up to -fuzzminimizetime (60 s
# by default) and counts none of those executions until it is done, so a
# short run could spend its whole budget minimizing, printing "0/sec".
FUZZTIME ?= 30s
FUZZMINIMIZETIME ?= 2s
FUZZFLAGS = -run='^$$' -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZETIME)
fuzz:
	go test $(FUZZFLAGS) -fuzz=FuzzParse ./userid/
	go test $(FUZZFLAGS) -fuzz=FuzzParseCommand ./commands/
	go test $(FUZZFLAGS) -fuzz=FuzzUsersForStatesDecode ./router/
	go test $(FUZZFLAGS) -fuzz=FuzzPlainJSONString ./router/
	go test $(FUZZFLAGS) -fuzz=FuzzPatternMatch ./router/
	go test $(FUZZFLAGS) -fuzz=FuzzRead ./listfile/

# The short fuzz run of make test: 10 s per target.
fuzz-smoke:
	$(MAKE) --no-print-directory fuzz FUZZTIME=10s

# A local Synapse + presence-router + adapter on loopback, state in ./run.
# SYNAPSE_PORT=, ROUTER_PORT= (metrics on the next port) and ENCRYPTION=1
# (an encrypted control room) are kept in run/devstack.json for the next run.
DEVSTACK_FLAGS = $(if $(SYNAPSE_PORT),-synapse-port $(SYNAPSE_PORT)) $(if $(ROUTER_PORT),-router-port $(ROUTER_PORT)) $(if $(ENCRYPTION),-encryption $(ENCRYPTION))

run: build venv
	go run ./e2e/cmd/devstack -dir run -python $(VENV_PY) -binary $(BIN) $(DEVSTACK_FLAGS)

# The same with Synapse's workers: main, a presence writer and a sync worker
# on PostgreSQL and Redis (presence-router on PostgreSQL too), state in
# ./run-workers.
run-workers: build venv services
	go run ./e2e/cmd/devstack -workers -dir run-workers -python $(VENV_PY) -binary $(BIN) $(DEVSTACK_FLAGS)

# The container image, FROM scratch (see Containerfile and docs/deploy.md):
# a statically linked binary (cgo for go-sqlite3 linked against glibc's
# static libraries; netgo and osusergo keep glibc's NSS, which a static
# binary cannot load, out; sqlite_omit_load_extension drops dlopen), the
# build machine's CA bundle, and the user presence-router (UID 1337).
# Built with buildah, or docker when there is no buildah; make installs
# buildah from Debian's packages when neither is there (as root).
IMAGE ?= presence-router
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
IMAGE_CONTEXT := bin/image
STATIC_TAGS := goolm netgo osusergo sqlite_omit_load_extension
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
container-tools:
	@if ! command -v buildah >/dev/null && ! command -v docker >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing buildah, podman and runc from Debian's packages"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman runc >/dev/null; \
	  else echo "Missing: buildah (or docker). Install it (Debian: sudo apt-get install buildah) and run make again."; exit 1; fi; \
	fi
image: container-tools
	@test -r $(CA_BUNDLE) || { echo "No CA bundle at $(CA_BUNDLE) (Debian: apt-get install ca-certificates), or set CA_BUNDLE"; exit 1; }
	rm -rf $(IMAGE_CONTEXT) && mkdir -p $(IMAGE_CONTEXT)/data
	go build -tags '$(STATIC_TAGS)' -trimpath -ldflags '-s -w -linkmode external -extldflags "-static" -X main.Version=$(VERSION)' -o $(IMAGE_CONTEXT)/presence-router .
	cp $(CA_BUNDLE) $(IMAGE_CONTEXT)/ca-certificates.crt
	printf 'root:x:0:0:root:/:/sbin/nologin\npresence-router:x:1337:1337:presence-router:/data:/sbin/nologin\n' > $(IMAGE_CONTEXT)/passwd
	printf 'root:x:0:\npresence-router:x:1337:\n' > $(IMAGE_CONTEXT)/group
	if command -v buildah >/dev/null; then \
	  buildah bud -q --build-arg VERSION=$(VERSION) -f Containerfile -t $(IMAGE):$(VERSION) -t $(IMAGE):latest $(IMAGE_CONTEXT) >/dev/null; \
	  size=$$(buildah images --format '{{.Size}}' $(IMAGE):latest); \
	else \
	  docker build -q --build-arg VERSION=$(VERSION) -f Containerfile -t $(IMAGE):$(VERSION) -t $(IMAGE):latest $(IMAGE_CONTEXT) >/dev/null; \
	  size=$$(docker image inspect --format '{{.Size}}' $(IMAGE):latest); \
	fi; \
	echo "Built $(IMAGE):$(VERSION) (also $(IMAGE):latest): $$size"

# The adapter as a wheel, for pip install into Synapse's own environment.
WHEEL_DIR := bin/dist
wheel: venv
	rm -rf $(WHEEL_DIR) adapter/build && $(VENV_PY) -m pip wheel --quiet --no-deps -w $(WHEEL_DIR) ./adapter && rm -rf adapter/build
	@ls $(WHEEL_DIR)/presence_router_adapter-*-py3-none-any.whl

clean:
	rm -rf bin $(VENV)
