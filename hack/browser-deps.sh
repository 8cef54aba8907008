#!/usr/bin/env bash
# Installs what the browser tests need: Debian's Chromium (Playwright cannot
# download its own browser here) and test/browser's npm packages (pinned by
# package-lock.json). Idempotent; needs root for apt-get when Chromium is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 && [ -z "${CHROMIUM:-}" ]; then
  echo "installing chromium (Debian package)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
command -v node >/dev/null || { echo "node (>=20) is required for the browser tests" >&2; exit 1; }
if [ ! -d test/browser/node_modules/playwright-core ]; then
  npm --prefix test/browser ci --no-audit --no-fund
fi
