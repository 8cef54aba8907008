#!/usr/bin/env bash
# idle-mem.sh measures server memory per idle WebSocket connection
# (DESIGN.md, Performance budget: at most 10 KiB) for `parley serve` and, as
# the reference, a bare gorilla/websocket server (test/load/bareserver):
# "bare" reads on the HTTP handler's goroutine as gorilla's examples do,
# "bare-detach" reads on a goroutine of its own and returns from the
# handler, as Parley's gateway does.
#
# For each target it builds the binaries, starts the server on a loopback
# port with a fresh temp data dir, reads its RSS (/proc/PID/status VmRSS) and
# Go memory figures (/metrics) before, opens N idle authenticated
# connections with test/load/idleconns, waits until the server's connection
# gauge reads N, reads the figures again SETTLE seconds later ("settled") and
# once more a few seconds after the server's next GC cycle ("after_gc"; the Go
# runtime forces one at least every 2 minutes), then stops everything and
# prints one JSON object per target: deltas divided by N, in KiB per
# connection. "settled" still holds the handshakes' garbage; "after_gc"
# heap_inuse is close to the live heap. RSS does not drop at a GC (the
# runtime returns freed pages to the OS slowly), so both RSS figures include
# some garbage: with GOGC=100 a Go process's RSS may grow towards twice its
# live heap between cycles.
#
# Usage: test/load/idle-mem.sh [parley|bare|bare-detach|both|all]
# (default both = parley and bare)
# Environment: N (10000), SOURCES (4), CONCURRENCY (32), SETTLE (10),
# GCWAIT (150, longest wait for the next GC cycle), HEARTBEAT (30s; the
# server's idle timeout is 2.5x that, longer than the 20s between client
# pings), KEEP=1 keeps the work dir.
# Loopback only; every process it starts stops by itself or at exit.
set -euo pipefail

N=${N:-10000}
SOURCES=${SOURCES:-4}
CONCURRENCY=${CONCURRENCY:-32}
SETTLE=${SETTLE:-10}
GCWAIT=${GCWAIT:-150}
HEARTBEAT=${HEARTBEAT:-30s}
TARGETS=${1:-both}

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/idle-mem.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	if [[ -z ${KEEP:-} ]]; then rm -rf "$work"; else echo "work dir kept: $work" >&2; fi
}
trap cleanup EXIT

log() { echo "idle-mem: $*" >&2; }

log "building into $work"
(cd "$root" && go build -o "$work/parley" ./runtime/cmd/parley &&
	go build -o "$work/idleconns" ./test/load/idleconns &&
	go build -o "$work/bareserver" ./test/load/bareserver)

# metric ADDR NAME: the value of an unlabelled metric, as an integer.
metric() {
	curl -fsS "http://$1/metrics" | awk -v n="$2" '$1 == n { printf "%.0f\n", $2; found=1 } END { if (!found) print 0 }'
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# sample PID ADDR CONNMETRIC: one JSON object of the server's figures now.
sample() {
	local pid=$1 addr=$2 m=$3 page
	page=$(curl -fsS "http://$addr/metrics")
	get() { awk -v n="$1" '$1 == n { printf "%.0f\n", $2; found=1 } END { if (!found) print 0 }' <<<"$page"; }
	jq -n --argjson rss "$(rss_kib "$pid")" --argjson conns "$(get "$m")" \
		--argjson heap_inuse "$(get go_memstats_heap_inuse_bytes)" \
		--argjson heap_alloc "$(get go_memstats_heap_alloc_bytes)" \
		--argjson stack_inuse "$(get go_memstats_stack_inuse_bytes)" \
		--argjson sys "$(get go_memstats_sys_bytes)" \
		--argjson goroutines "$(get go_goroutines)" \
		--argjson gcs "$(get go_gc_duration_seconds_count)" \
		'{rss_kib: $rss, connections: $conns, heap_inuse_bytes: $heap_inuse, heap_alloc_bytes: $heap_alloc,
		  stack_inuse_bytes: $stack_inuse, sys_bytes: $sys, goroutines: $goroutines, gc_cycles: $gcs}'
}

# wait_addr LOG PATTERN: the listen address printed by a server (sed regex
# with one group).
wait_addr() {
	local addr=""
	for _ in $(seq 300); do
		addr=$(sed -nE "s#$2#\\1#p" "$1" | head -1)
		[[ -n $addr ]] && break
		sleep 0.1
	done
	[[ -n $addr ]] || { log "server did not start; log:"; cat "$1" >&2; return 1; }
	echo "$addr"
}

measure() {
	local target=$1 dir="$work/run-$1" pid addr m client_args=() cpid
	mkdir -p "$dir"
	case $target in
	parley)
		"$work/parley" serve --addr 127.0.0.1:0 --data-dir "$dir/data" --heartbeat "$HEARTBEAT" \
			--drain-window 1s >"$dir/server.log" 2>&1 &
		pid=$!
		pids+=("$pid")
		addr=$(wait_addr "$dir/server.log" '^Parley is running on http://([^ ]+) .*')
		m=parley_gateway_connections
		client_args=(--secret-dir "$dir/data")
		;;
	bare | bare-detach)
		local detach=()
		[[ $target == bare-detach ]] && detach=(--detach)
		"$work/bareserver" --addr 127.0.0.1:0 "${detach[@]}" >"$dir/server.log" 2>&1 &
		pid=$!
		pids+=("$pid")
		addr=$(wait_addr "$dir/server.log" '^listening on (.+)$')
		m=bare_connections
		;;
	*)
		log "unknown target $target"
		return 1
		;;
	esac
	for _ in $(seq 100); do curl -fsS "http://$addr/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
	sleep 3 # let start-up garbage be collected or at least settle
	local before settled late
	before=$(sample "$pid" "$addr" "$m")
	log "$target on $addr: before $(jq -c . <<<"$before")"

	local t0=$SECONDS
	"$work/idleconns" --url "ws://$addr/v1/ws" --n "$N" --sources "$SOURCES" --concurrency "$CONCURRENCY" \
		--hold 30m "${client_args[@]}" >"$dir/client.json" 2>"$dir/client.log" &
	cpid=$!
	pids+=("$cpid")
	local conns=0
	for _ in $(seq 3000); do
		conns=$(metric "$addr" "$m")
		((conns >= N)) && break
		kill -0 "$cpid" 2>/dev/null || break
		sleep 0.1
	done
	if ((conns < N)); then
		log "$target: only $conns of $N connections; client log:"
		cat "$dir/client.log" >&2
		return 1
	fi
	log "$target: $conns connections after $((SECONDS - t0))s; settling ${SETTLE}s"
	sleep "$SETTLE"
	settled=$(sample "$pid" "$addr" "$m")
	log "$target settled: $(jq -c . <<<"$settled"); waiting up to ${GCWAIT}s for a GC cycle"
	local gc0 gc t1=$SECONDS
	gc0=$(jq .gc_cycles <<<"$settled")
	gc=$gc0
	while ((gc <= gc0 && SECONDS - t1 < GCWAIT)); do
		sleep 1
		gc=$(metric "$addr" go_gc_duration_seconds_count)
	done
	((gc > gc0)) || log "$target: no GC cycle within ${GCWAIT}s; sampling anyway"
	sleep 3 # let the sweep finish
	late=$(sample "$pid" "$addr" "$m")
	log "$target after_gc: $(jq -c . <<<"$late")"

	kill -TERM "$cpid"
	wait "$cpid" || true
	kill -TERM "$pid"
	wait "$pid" || true

	jq -n --arg target "$target" --argjson n "$N" --argjson before "$before" --argjson settled "$settled" \
		--argjson late "$late" --slurpfile client "$dir/client.json" '
		def per(a; b; f): (((b[f] - a[f]) / $n) * 100 | round) / 100;
		def kib(a; b; f): (((b[f] - a[f]) / 1024 / $n) * 100 | round) / 100;
		def figures(s): {
			rss_kib_per_conn: per($before; s; "rss_kib"),
			heap_inuse_kib_per_conn: kib($before; s; "heap_inuse_bytes"),
			heap_alloc_kib_per_conn: kib($before; s; "heap_alloc_bytes"),
			stack_inuse_kib_per_conn: kib($before; s; "stack_inuse_bytes"),
			sys_kib_per_conn: kib($before; s; "sys_bytes"),
			goroutines_per_conn: per($before; s; "goroutines"),
			connections: s.connections };
		{target: $target, n: $n, settled: figures($settled), after_gc: figures($late),
		 raw: {before: $before, settled: $settled, after_gc: $late},
		 client: $client[0]}' | tee "$dir/result.json"
	jq -r '"idle-mem: \(.target): RSS per connection \(.settled.rss_kib_per_conn) KiB settled, \(.after_gc.rss_kib_per_conn) KiB after GC (live heap \(.after_gc.heap_alloc_kib_per_conn) KiB + stack \(.after_gc.stack_inuse_kib_per_conn) KiB)"' "$dir/result.json" >&2
}

case $TARGETS in
all) targets=(parley bare bare-detach) ;;
both) targets=(parley bare) ;;
parley | bare | bare-detach) targets=("$TARGETS") ;;
*)
	echo "usage: $0 [parley|bare|bare-detach|both|all]" >&2
	exit 2
	;;
esac
for t in "${targets[@]}"; do
	measure "$t"
done
