# Parley — developer targets. `make test` is the whole suite and what CI runs
# (.ci/run): it installs and starts what the tests need, then runs them.
GO ?= go
FUZZTIME ?= 10s

.PHONY: build test deps test-go test-unit fuzz test-browser generate vet fmt bench

build:
	$(GO) build -o bin/parley ./runtime/cmd/parley

# Everything: real Redis, Kafka and Cassandra (hack/deps.sh; left running,
# stop them with `hack/deps.sh down`), Chromium for the browser tests, then
# every Go test, a short fuzz run of the frame decoder, and the browser tests.
test: deps test-go fuzz test-browser

deps:
	hack/deps.sh up redis kafka cassandra
	hack/browser-deps.sh

test-go: vet
	$(GO) test -count=1 -timeout 30m ./...

# Go tests only, with nothing installed: backend suites skip when their
# server is absent (they never skip under CI=true).
test-unit:
	$(GO) test ./...

fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzDecodeClient -fuzztime=$(FUZZTIME) ./runtime/wire

test-browser:
	npm --prefix test/browser test

vet:
	$(GO) vet ./...

fmt:
	gofmt -l -w $$(git ls-files '*.go' | grep -v '\.pb\.go$$')

bench:
	$(GO) test -run='^$$' -bench=. -benchmem ./runtime/...

# Regenerate the wire protocol's Go code (needs protoc: apt-get install protobuf-compiler;
# protoc-gen-go is pinned by go.mod and built on the fly).
generate:
	$(GO) build -o bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	cd runtime/proto && protoc -I . --plugin=protoc-gen-go=../../bin/protoc-gen-go \
		--go_out=. --go_opt=paths=source_relative parley/v1/*.proto
