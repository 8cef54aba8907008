# Parley — developer targets. `make test` is what CI runs (see .ci/run).
GO ?= go
FUZZTIME ?= 10s

.PHONY: build test unit fuzz generate vet fmt bench

build:
	$(GO) build -o bin/parley ./runtime/cmd/parley

# The whole suite: every package's tests (unit, conformance, end-to-end on
# real processes), then a short fuzz run of the frame decoder.
test: vet
	$(GO) test -count=1 -timeout 20m ./...
	$(GO) test -run='^$$' -fuzz=FuzzDecodeClient -fuzztime=$(FUZZTIME) ./runtime/wire

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
