# Parley — developer targets. `make test` is the whole suite and what CI runs
# (.ci/run): it installs and starts what the tests need, then runs them.
GO ?= go
# A count, not a duration: with a duration, go1.26's fuzz coordinator can
# fail a clean run with "context deadline exceeded" when its deadline fires
# while a starved worker is mid-call (go.dev/issue/75804, fixed in Go 1.27).
# 60,000 executions take ~10 s here.
FUZZTIME ?= 60000x

.PHONY: build operator test deps envtest test-go test-unit check lint fuzz test-browser test-multiregion test-rollout generate manifests vet fmt fmt-check bench

build:
	$(GO) build -o bin/parley ./runtime/cmd/parley

operator:
	$(GO) build -o bin/parley-operator ./operator/cmd/parley-operator

# Everything: real Redis, Kafka and Cassandra (hack/deps.sh; left running,
# stop them with `hack/deps.sh down`), Chromium for the browser tests, a
# kube-apiserver, kube-controller-manager and etcd for the operator suite (hack/envtest.sh builds them
# from Go module source once, ~15-20 min on 2 cores, then caches them), a
# check that generated operator files are current, every Go test under the
# race detector (the project is concurrency-heavy; it costs ~1 minute), short
# fuzz runs of the frame decoder and of the WebSocket frame reader, the
# two-region suite (test-multiregion), a region on Kubernetes' own controllers
# with a virtual-kubelet node (test-rollout), and the browser tests.
test: deps test-go test-multiregion test-rollout fuzz test-browser

deps:
	hack/timed.sh "start Redis, Kafka, Cassandra" hack/deps.sh up redis kafka cassandra
	hack/timed.sh "browser test dependencies" hack/browser-deps.sh
	hack/timed.sh "envtest assets" sh -c 'hack/envtest.sh >/dev/null'

envtest:
	@hack/envtest.sh

test-go: vet fmt-check lint
	hack/timed.sh "generated operator files current" hack/codegen.sh --check
	KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" hack/timed.sh "go test -race" $(GO) test -race -count=1 -timeout 40m $$($(GO) list ./... | grep -v /test/multiregion)

# The fast lane before a commit: formatting, vet, lint and the runtime's and
# the operator's unit tests under the race detector (backend suites skip when
# their server is absent). A few minutes.
check: vet fmt-check lint
	$(GO) test -race ./runtime/... ./operator/... ./api/...

# golangci-lint v2 (.golangci.yml: errcheck, staticcheck, unused, gocyclo, vet,
# ineffassign), installed by hack/lint.sh the first time.
lint:
	hack/timed.sh "golangci-lint" hack/lint.sh

# Every Go file gofmt-formatted (generated protobuf code aside).
fmt-check:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'))" || { gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'); echo "gofmt: the files above need formatting (make fmt)"; exit 1; }

# Go tests only, with nothing installed: backend suites skip when their
# server is absent (they never skip under CI=true).
test-unit:
	$(GO) test ./...

fuzz:
	hack/timed.sh "fuzz frame decoding" $(GO) test -run='^$$' -fuzz=FuzzDecodeClient -fuzztime=$(FUZZTIME) ./runtime/wire
	hack/timed.sh "fuzz WebSocket frame reading" $(GO) test -run='^$$' -fuzz=FuzzReader -fuzztime=$(FUZZTIME) ./runtime/gateway/transport

test-browser:
	hack/timed.sh "browser tests" npm --prefix test/browser test

# Two regions (eu, us) on this machine in network namespaces, 80 ms RTT between
# them, each with its own Redis, Kafka, Cassandra node (one cluster) and Parley
# (hack/regions.sh; left running, stop them with `hack/regions.sh down`), then
# the multi-region tests against them (under the race detector; the servers
# are the regions' own processes). Needs root. test-go leaves this package to it.
test-multiregion:
	hack/timed.sh "start two regions" hack/regions.sh up
	eval "$$(hack/regions.sh env)" && hack/timed.sh "go test multi-region" $(GO) test -race -count=1 -timeout 20m ./test/multiregion/...

# A ChatCluster region on Kubernetes' own controllers (kube-apiserver, etcd, kube-controller-manager,
# kube-scheduler from hack/envtest.sh) with a virtual-kubelet node that runs its pods as local
# parley processes, against the Redis, Kafka and Cassandra of hack/deps.sh (started here if they
# are not running; `deps.sh up` reuses running servers and leaves them running). test/rollout is a
# module of its own (it needs github.com/virtual-kubelet/virtual-kubelet), so it is tested from its
# directory and `go test ./...` at the root does not include it.
test-rollout:
	hack/timed.sh "start Redis, Kafka, Cassandra" hack/deps.sh up redis kafka cassandra
	KUBEBUILDER_ASSETS="$$(hack/envtest.sh)" && cd test/rollout && $(GO) vet ./... && KUBEBUILDER_ASSETS="$$KUBEBUILDER_ASSETS" ../../hack/timed.sh "go test rollout" $(GO) test -count=1 -timeout 30m ./...

vet:
	hack/timed.sh "go vet" $(GO) vet ./...

fmt:
	gofmt -l -w $$(git ls-files '*.go' | grep -v '\.pb\.go$$')

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./runtime/...

# Regenerate the operator's deepcopy, CRD, RBAC and chart templates (controller-gen).
manifests:
	hack/codegen.sh

# Regenerate the wire protocol's Go code (needs protoc: apt-get install protobuf-compiler;
# protoc-gen-go is pinned by go.mod and built on the fly).
generate:
	$(GO) build -o bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	cd runtime/proto && protoc -I . --plugin=protoc-gen-go=../../bin/protoc-gen-go \
		--go_out=. --go_opt=paths=source_relative parley/v1/*.proto
