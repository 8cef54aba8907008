#!/usr/bin/env bash
# bench-fleet.sh runs the distributed mode on this machine — Redis, Kafka and
# Cassandra from hack/deps.sh, one chat and one presence process, GATEWAYS
# gateway processes — and holds N idle connections spread over the gateways
# with `parley bench idle` (issue 5: "100,000 connections over several gateway
# processes of the distributed mode"). Server memory is the gateways' RSS,
# summed.
#
# Usage: hack/bench-fleet.sh
# Environment: N (connections, 100000), GATEWAYS (gateway processes, 7: each
# holds N/GATEWAYS, under the 20,000 open files one process may hold), HOLD
# (60s), OUT (results dir, default a temp dir, kept and printed), KEEP_REGION
# (1 keeps the region's keyspace, topics and Redis keys; by default they are
# dropped at exit). The backends are left running (hack/deps.sh down stops
# them).
set -euo pipefail

N=${N:-100000}
GATEWAYS=${GATEWAYS:-7}
HOLD=${HOLD:-60s}
root=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d /tmp/bench-fleet.XXXXXX)}
mkdir -p "$OUT"
NAME=bench-fleet
# shellcheck source=hack/fleet-lib.sh
. "$root/hack/fleet-lib.sh"

fleet_build
# A fresh region (keyspace, topics, Redis key prefix) per run.
region=bf$(date +%s)
fleet_migrate "$region" --deliver-partitions "$GATEWAYS" --ingress-partitions 8 \
	--presence-partitions 4 --push-partitions 2

# Every gateway verifies the same dev secret (bench mints the tokens).
mkdir -p "$OUT/secret"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$OUT/secret/dev-secret"
echo >>"$OUT/secret/dev-secret"
chmod 600 "$OUT/secret/dev-secret"

fleet_start chat-0 --role chat --member chat-0 --data-dir "$OUT/chat-0" --addr 127.0.0.1:0
fleet_start presence-0 --role presence --member presence-0 --data-dir "$OUT/presence-0" --addr 127.0.0.1:0
urls=()
gwpids=()
ports=()
for i in $(seq 0 $((GATEWAYS - 1))); do
	port=$((19100 + i))
	mkdir -p "$OUT/gw-$i"
	cp "$OUT/secret/dev-secret" "$OUT/gw-$i/dev-secret"
	fleet_start "gw-$i" --role gateway --gateway-id "gw-$i" --data-dir "$OUT/gw-$i" --addr "127.0.0.1:$port"
	gwpids+=("$FLEET_PID")
	urls+=("ws://127.0.0.1:$port")
	ports+=("$port")
done
fleet_wait_ready "${ports[@]}"
log "$GATEWAYS gateways ready; idle: $N connections for $HOLD"
url_list=$(IFS=,; echo "${urls[*]}")
pid_list=$(IFS=,; echo "${gwpids[*]}")
per=$(((N + GATEWAYS - 1) / GATEWAYS))
"$OUT/parley" bench idle --url "$url_list" --secret-dir "$OUT/secret" --server-pid "$pid_list" \
	--n "$N" --per-process "$per" --duration "$HOLD" --json "$OUT/idle.json" | tee "$OUT/idle.txt"
log "results in $OUT"
