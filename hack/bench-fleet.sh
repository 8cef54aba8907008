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
# (60s), OUT (results dir, default a temp dir, kept and printed). The
# backends are left running (hack/deps.sh down stops them).
set -euo pipefail

N=${N:-100000}
GATEWAYS=${GATEWAYS:-7}
HOLD=${HOLD:-60s}
root=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d /tmp/bench-fleet.XXXXXX)}
mkdir -p "$OUT"
log() { echo "bench-fleet: $*" >&2; }
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

"$root/hack/deps.sh" up redis kafka cassandra
log "building parley"
(cd "$root" && go build -o "$OUT/parley" ./runtime/cmd/parley)

# A fresh region (keyspace, topics, Redis key prefix) per run.
region=bf$(date +%s)
common=(--region "$region" --cassandra-hosts 127.0.0.1:9042 --cassandra-keyspace "$region"
	--kafka-brokers 127.0.0.1:9092 --redis-addr 127.0.0.1:6379 --redis-key-prefix "$region:")
log "migrating region $region"
"$OUT/parley" migrate --region "$region" --cassandra-hosts 127.0.0.1:9042 --cassandra-keyspace "$region" \
	--replication-factor 1 --kafka-brokers 127.0.0.1:9092 --deliver-partitions "$GATEWAYS" \
	--ingress-partitions 8 --presence-partitions 4 --push-partitions 2 >"$OUT/migrate.log" 2>&1

# Every gateway verifies the same dev secret (bench mints the tokens).
mkdir -p "$OUT/secret"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$OUT/secret/dev-secret"
echo >>"$OUT/secret/dev-secret"
chmod 600 "$OUT/secret/dev-secret"

start() { # name, args...
	local name=$1
	shift
	"$OUT/parley" serve "${common[@]}" "$@" >"$OUT/$name.log" 2>&1 &
	pids+=("$!")
}
start chat-0 --role chat --member chat-0 --data-dir "$OUT/chat-0" --addr 127.0.0.1:0
start presence-0 --role presence --member presence-0 --data-dir "$OUT/presence-0" --addr 127.0.0.1:0
urls=()
gwpids=()
for i in $(seq 0 $((GATEWAYS - 1))); do
	port=$((19100 + i))
	mkdir -p "$OUT/gw-$i"
	cp "$OUT/secret/dev-secret" "$OUT/gw-$i/dev-secret"
	start "gw-$i" --role gateway --gateway-id "gw-$i" --data-dir "$OUT/gw-$i" --addr "127.0.0.1:$port"
	gwpids+=("${pids[-1]}")
	urls+=("ws://127.0.0.1:$port")
done
for i in $(seq 0 $((GATEWAYS - 1))); do
	for _ in $(seq 600); do
		curl -fs "http://127.0.0.1:$((19100 + i))/readyz" >/dev/null 2>&1 && break
		sleep 0.1
	done
	curl -fs "http://127.0.0.1:$((19100 + i))/readyz" >/dev/null || { log "gateway gw-$i not ready; see $OUT/gw-$i.log"; exit 1; }
done
log "$GATEWAYS gateways ready; idle: $N connections for $HOLD"
url_list=$(IFS=,; echo "${urls[*]}")
pid_list=$(IFS=,; echo "${gwpids[*]}")
per=$(((N + GATEWAYS - 1) / GATEWAYS))
"$OUT/parley" bench idle --url "$url_list" --secret-dir "$OUT/secret" --server-pid "$pid_list" \
	--n "$N" --per-process "$per" --duration "$HOLD" --json "$OUT/idle.json" | tee "$OUT/idle.txt"
log "results in $OUT"
