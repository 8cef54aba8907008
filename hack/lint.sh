#!/usr/bin/env bash
# lint.sh runs golangci-lint (.golangci.yml) over the root module, then, over the whole
# module, deadcode (golang.org/x/tools): a function that neither the programs nor the tests
# reach fails the run (issue 15: unreachable code is removed or tested, so it cannot rot).
# Both are installed at pinned versions into ~/.cache/parley-tools from their Go modules the
# first time (a few minutes on 2 cores; later runs reuse them). Arguments go to
# `golangci-lint run` (default ./...); with arguments deadcode is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=v2.15.0
DEADCODE_VERSION=v0.44.0
BIN=${PARLEY_TOOLS:-$HOME/.cache/parley-tools}

# install PKG VERSION NAME: go install PKG@VERSION as $BIN/NAME-VERSION, once.
install() {
	local out=$BIN/$3-$2
	if [[ ! -x $out ]]; then
		echo "lint: installing $3 $2 into $BIN" >&2
		mkdir -p "$BIN"
		local tmp
		tmp=$(mktemp -d)
		GOBIN=$tmp go install "$1@$2"
		mv "$tmp/$3" "$out"
		rm -rf "$tmp"
	fi
	echo "$out"
}

lint=$(install github.com/golangci/golangci-lint/v2/cmd/golangci-lint "$VERSION" golangci-lint)
"$lint" run "${@:-./...}"
if (($# == 0)); then
	deadcode=$(install golang.org/x/tools/cmd/deadcode "$DEADCODE_VERSION" deadcode)
	dead=$("$deadcode" -test ./...)
	if [[ -n $dead ]]; then
		echo "$dead"
		echo "deadcode: the functions above are reached by no program and no test: remove them, or test them if they are API" >&2
		exit 1
	fi
fi
