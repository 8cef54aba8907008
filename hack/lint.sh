#!/usr/bin/env bash
# lint.sh runs golangci-lint (.golangci.yml) over the root module, installing the pinned
# version into ~/.cache/parley-tools from its Go module the first time (about 3 minutes on
# 2 cores; later runs reuse it). Arguments go to `golangci-lint run` (default ./...).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=v2.15.0
BIN=${PARLEY_TOOLS:-$HOME/.cache/parley-tools}
lint=$BIN/golangci-lint-$VERSION
if [[ ! -x $lint ]]; then
	echo "lint: installing golangci-lint $VERSION into $BIN" >&2
	mkdir -p "$BIN"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	GOBIN=$tmp go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$VERSION"
	mv "$tmp/golangci-lint" "$lint"
fi
exec "$lint" run "${@:-./...}"
