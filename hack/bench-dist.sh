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
# WARMUP (the length of each warm-up round: dm at WARMUP_RATE sends/s, 1000,
# whose figures are not kept, repeated until the JVMs' JIT compilers are
# quiet; default 30s, 0 skips the warm-up), JIT_QUIET (the compiler
# threads' CPU, in cores, under which a JVM counts as warm: 0.05),
# WARMUP_ROUNDS (at most this many rounds, 12), OUT (results dir, default a
# temp dir, kept and printed), INGRESS_PARTITIONS (8), PARLEY_BIN (a
# prebuilt binary instead of building), KEEP_REGION (1 keeps the region's
# keyspace, topics and Redis keys; by default they are dropped at exit). The
# backends are left running (hack/deps.sh down stops them); the Parley
# processes stop at exit.
set -euo pipefail

RUNS=${RUNS:-3}
WARMUP=${WARMUP:-30s}
WARMUP_RATE=${WARMUP_RATE:-1000}
JIT_QUIET=${JIT_QUIET:-0.05}
WARMUP_ROUNDS=${WARMUP_ROUNDS:-12}
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

# jit_ticks PID: the CPU time (clock ticks) the JIT compiler threads of
# JVM PID have used so far.
jit_ticks() {
	local t stat f sum=0
	for t in /proc/"$1"/task/*; do
		[[ $(<"$t/comm") == C[12]\ Compiler* ]] 2>/dev/null || continue
		stat=$(<"$t/stat") 2>/dev/null || continue
		read -ra f <<<"${stat##*) }" # state is f[0], utime f[11], stime f[12]
		sum=$((sum + f[11] + f[12]))
	done
	echo "$sum"
}
jvms=("kafka=$(deps_pid kafka)" "cassandra=$(deps_pid cassandra)")
tick=$(getconf CLK_TCK)
# jit_mark: remember each JVM's JIT ticks and the time; jit_since: the
# cores each JVM's JIT used since jit_mark, as "kafka=0.012 cassandra=0.150".
jit_mark() {
	local j
	jit_at=()
	for j in "${jvms[@]}"; do jit_at+=("$(jit_ticks "${j#*=}")"); done
	jit_t0=$(date +%s%N)
}
jit_since() {
	local i j el
	el=$(($(date +%s%N) - jit_t0))
	for i in "${!jvms[@]}"; do
		j=${jvms[$i]}
		awk -v n="${j%%=*}" -v d=$(($(jit_ticks "${j#*=}") - jit_at[i])) -v hz="$tick" -v el="$el" \
			'BEGIN { printf "%s=%.3f ", n, d / hz / (el / 1e9) }'
	done
}

# Warm-up: a JVM that has just started spends minutes compiling its hot
# paths, and that compiling competes with everything else for the two
# cores (measured in the tenth session: Cassandra's JIT took 0.46 cores over
# the first 20 s run at 1,000 DM sends/s and 0.07 five runs later, while
# p99 fell from 2.5 s to 0.9 s; a round at 500 sends/s left compiling for
# the first run at 1,000). So rounds of dm at WARMUP_RATE sends/s repeat
# until every JVM's compiler threads used under JIT_QUIET cores over one.
if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
	for round in $(seq "$WARMUP_ROUNDS"); do
		jit_mark
		"$OUT/parley" bench dm --pairs 200 --rate "$WARMUP_RATE" --url ws://127.0.0.1:19200 --secret-dir "$OUT/gw-0" \
			--duration "$WARMUP" >"$OUT/warmup.txt" 2>&1 || { log "warm-up failed; see $OUT/warmup.txt"; exit 1; }
		jit=$(jit_since)
		log "warm-up round $round: dm at $WARMUP_RATE sends/s for $WARMUP (not kept); JIT cores: $jit"
		if awk -v q="$JIT_QUIET" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[2] + 0 >= q) exit 1 } }' <<<"$jit"; then
			break
		fi
		((round < WARMUP_ROUNDS)) || log "warm-up: a JIT still compiles after $WARMUP_ROUNDS rounds; measuring anyway"
	done
fi
i=0
for sc in "${scenarios[@]}"; do
	name=${sc%%:*}
	args=${sc#*:}
	for run in $(seq "$RUNS"); do
		i=$((i + 1))
		tag="$i-$name-run$run"
		log "$tag: parley bench $name $args (load: $(cut -d' ' -f1-3 /proc/loadavg))"
		jit_mark
		# shellcheck disable=SC2086 # args is a word list by design
		"$OUT/parley" bench "$name" $args --url ws://127.0.0.1:19200 --secret-dir "$OUT/gw-0" \
			--duration "$DURATION" --proc "$procs" --json "$OUT/$tag.json" >"$OUT/$tag.txt" 2>"$OUT/$tag.progress"
		jit=$(jit_since)
		echo "jit_cores ${jit% }" >>"$OUT/$tag.txt"
		log "  JIT cores during the run: $jit"
		grep -E 'send_to_deliver|send_to_last|sends_per_sec|missing|cpu_ms_per_1k_sends.total|runq_threads.total' "$OUT/$tag.txt" | sed "s/^/  /" >&2 || true
	done
done
curl -fs -H "Authorization: Bearer $(cat "$OUT/admin-token")" http://127.0.0.1:19201/metrics >"$OUT/chat.metrics" || true
curl -fs -H "Authorization: Bearer $(cat "$OUT/admin-token")" http://127.0.0.1:19200/metrics >"$OUT/gateway.metrics" || true
log "results in $OUT"
