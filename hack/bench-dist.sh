#!/usr/bin/env bash
# bench-dist.sh runs the distributed mode's data-path scenarios (issue 11) on
# this machine — Redis, Kafka and Cassandra from hack/deps.sh, one chat, one
# presence and one gateway process — and reports, next to the latency
# percentiles, each process's CPU per 1,000 sends (parley bench --proc).
#
# Usage: hack/bench-dist.sh [SCENARIO...]
#   SCENARIO is NAME:ARGS, e.g. "dm:--pairs 100 --rate 100"; the default
#   runs dm at 100 and 2,000 sends/s and fan-out to one group of 500 at 100
#   sends/s.
# Environment: RUNS (each scenario this many times, 3), DURATION (10s),
# WARMUP (a dm run first whose figures are not kept, so the JVMs' JIT has
# compiled the hot paths: cold Kafka and Cassandra answer 10-20x slower for
# their first minutes; default 30s, 0 skips it), OUT
# (results dir, default a temp dir, kept and printed), INGRESS_PARTITIONS
# (8), PARLEY_BIN (a prebuilt binary instead of building). The backends are left running (hack/deps.sh down stops them); the
# Parley processes stop at exit.
set -euo pipefail

RUNS=${RUNS:-3}
WARMUP=${WARMUP:-30s}
DURATION=${DURATION:-10s}
INGRESS_PARTITIONS=${INGRESS_PARTITIONS:-8}
root=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d /tmp/bench-dist.XXXXXX)}
mkdir -p "$OUT"
NAME=bench-dist
# shellcheck source=hack/fleet-lib.sh
. "$root/hack/fleet-lib.sh"

scenarios=("$@")
if ((${#scenarios[@]} == 0)); then
	scenarios=("dm:--pairs 100 --rate 100" "dm:--pairs 200 --rate 2000" "fanout:--groups 1 --members 500 --rate 100")
fi

fleet_port_free 19200 19201 19202
fleet_build
region=bd$(date +%s)
fleet_migrate "$region" --deliver-partitions 1 --ingress-partitions "$INGRESS_PARTITIONS" \
	--presence-partitions 4 --push-partitions 2
mkdir -p "$OUT/gw-0"
"$OUT/parley" token --data-dir "$OUT/gw-0" --user setup >/dev/null # creates the dev secret
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$OUT/admin-token"
admin=(--admin-token-file "$OUT/admin-token")
fleet_start chat --role chat --member chat-0 --data-dir "$OUT/chat-0" --addr 127.0.0.1:19201 "${admin[@]}"
chat_pid=$FLEET_PID
fleet_start presence --role presence --member presence-0 --data-dir "$OUT/presence-0" --addr 127.0.0.1:19202 "${admin[@]}"
presence_pid=$FLEET_PID
fleet_start gateway --role gateway --gateway-id gw-0 --data-dir "$OUT/gw-0" --addr 127.0.0.1:19200 "${admin[@]}"
gateway_pid=$FLEET_PID
fleet_wait_ready 19200 19201 19202
deps_pid() { cat "$root/.deps/$1/$1.pid"; }
procs="chat=$chat_pid,presence=$presence_pid,gateway=$gateway_pid,kafka=$(deps_pid kafka),cassandra=$(deps_pid cassandra),redis=$(deps_pid redis)"
log "fleet ready (region $region); processes $procs; load: $(cut -d' ' -f1-3 /proc/loadavg)"

if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
	log "warm-up: dm at 500 sends/s for $WARMUP (not kept)"
	"$OUT/parley" bench dm --pairs 100 --rate 500 --url ws://127.0.0.1:19200 --secret-dir "$OUT/gw-0" \
		--duration "$WARMUP" >"$OUT/warmup.txt" 2>&1 || { log "warm-up failed; see $OUT/warmup.txt"; exit 1; }
fi
i=0
for sc in "${scenarios[@]}"; do
	name=${sc%%:*}
	args=${sc#*:}
	for run in $(seq "$RUNS"); do
		i=$((i + 1))
		tag="$i-$name-run$run"
		log "$tag: parley bench $name $args (load: $(cut -d' ' -f1-3 /proc/loadavg))"
		# shellcheck disable=SC2086 # args is a word list by design
		"$OUT/parley" bench "$name" $args --url ws://127.0.0.1:19200 --secret-dir "$OUT/gw-0" \
			--duration "$DURATION" --proc "$procs" --json "$OUT/$tag.json" >"$OUT/$tag.txt" 2>"$OUT/$tag.progress"
		grep -E 'send_to_deliver|send_to_last|sends_per_sec|missing|cpu_ms_per_1k_sends.total' "$OUT/$tag.txt" | sed "s/^/  /" >&2 || true
	done
done
curl -fs -H "Authorization: Bearer $(cat "$OUT/admin-token")" http://127.0.0.1:19201/metrics >"$OUT/chat.metrics" || true
curl -fs -H "Authorization: Bearer $(cat "$OUT/admin-token")" http://127.0.0.1:19200/metrics >"$OUT/gateway.metrics" || true
log "results in $OUT"
