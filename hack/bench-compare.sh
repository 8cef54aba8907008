#!/usr/bin/env bash
# bench-compare.sh runs the idle and fanout workloads against Parley
# (`parley serve`, embedded mode, in its own process; `parley bench --url` as
# the load process) and Centrifugo v6 (built from its Go
# module, test/load/centrifugo as the load adapter) in one run, on loopback,
# and prints Parley/Centrifugo ratios (issue 5, "Side by side with a peer").
#
# Usage: hack/bench-compare.sh
# Environment: N (idle connections, 5000), HOLD (idle hold, 10s),
# MEMBERS (500), RATE (publishes/s, 100), DURATION (fanout send phase, 10s),
# CENTRIFUGO_VERSION (v6.9.1), CFBIN (dir of a prebuilt centrifugo binary,
# reused when present), PORT (Centrifugo port, 18000; Parley gets PORT+1), OUT (results dir,
# default a temp dir, kept and printed).
set -euo pipefail

N=${N:-5000}
HOLD=${HOLD:-10s}
MEMBERS=${MEMBERS:-500}
RATE=${RATE:-100}
DURATION=${DURATION:-10s}
CENTRIFUGO_VERSION=${CENTRIFUGO_VERSION:-v6.9.1}
PORT=${PORT:-18000}
root=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d /tmp/bench-compare.XXXXXX)}
CFBIN=${CFBIN:-$OUT/bin}
mkdir -p "$OUT" "$CFBIN"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
log() { echo "bench-compare: $*" >&2; }

if [[ ! -x $CFBIN/centrifugo ]]; then
	log "building centrifugo $CENTRIFUGO_VERSION into $CFBIN (several minutes the first time)"
	GOBIN=$CFBIN go install "github.com/centrifugal/centrifugo/v6@$CENTRIFUGO_VERSION"
fi
cfver=$(go version -m "$CFBIN/centrifugo" | awk '$1=="mod"{print $3}')
log "centrifugo $cfver; building parley and the adapter"
(cd "$root" && go build -o "$OUT/parley" ./runtime/cmd/parley && go build -o "$OUT/cfload" ./test/load/centrifugo)

secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
apikey=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$OUT/centrifugo.json" <<JSON
{
  "log": {"level": "error"},
  "http_server": {"address": "127.0.0.1", "port": $PORT},
  "client": {"token": {"hmac_secret_key": "$secret"}, "insecure": false},
  "http_api": {"key": "$apikey"},
  "channel": {"namespaces": [{"name": "bench", "allow_subscribe_for_client": true}]}
}
JSON

"$CFBIN/centrifugo" -c "$OUT/centrifugo.json" >"$OUT/centrifugo.log" 2>&1 &
cfpid=$!
pids+=("$cfpid")
for _ in $(seq 100); do
	curl -fs "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
	sleep 0.1
done
cf() { "$OUT/cfload" -url "ws://127.0.0.1:$PORT/connection/websocket" -api "http://127.0.0.1:$PORT/api" \
	-api-key "$apikey" -secret "$secret" -server-pid "$cfpid" "$@"; }

log "idle: centrifugo, N=$N"
cf -n "$N" -duration "$HOLD" idle >"$OUT/cf-idle.json"
log "fanout: centrifugo, $MEMBERS members, $RATE/s for $DURATION"
cf -members "$MEMBERS" -rate "$RATE" -duration "$DURATION" fanout >"$OUT/cf-fanout.json"
kill "$cfpid" && wait "$cfpid" 2>/dev/null || true

# Parley as Centrifugo runs: a server process (embedded mode, fresh data dir)
# and the load generator in another process.
ppport=$((PORT + 1))
rm -rf "$OUT/parley-data"
"$OUT/parley" serve --addr "127.0.0.1:$ppport" --data-dir "$OUT/parley-data" >"$OUT/parley-serve.log" 2>&1 &
ppid=$!
pids+=("$ppid")
for _ in $(seq 100); do
	curl -fs "http://127.0.0.1:$ppport/readyz" >/dev/null 2>&1 && break
	sleep 0.1
done
pb() { "$OUT/parley" bench "$@" --url "ws://127.0.0.1:$ppport" --secret-dir "$OUT/parley-data" --server-pid "$ppid"; }

log "idle: parley, N=$N"
pb idle --n "$N" --duration "$HOLD" --json "$OUT/parley-idle.json" >"$OUT/parley-idle.txt" 2>&1
log "fanout: parley, $MEMBERS members, $RATE/s for $DURATION"
pb fanout --members "$MEMBERS" --rate "$RATE" --duration "$DURATION" \
	--json "$OUT/parley-fanout.json" >"$OUT/parley-fanout.txt" 2>&1
kill "$ppid" && wait "$ppid" 2>/dev/null || true

python3 - "$OUT" "$cfver" <<'PY'
import json, sys
out, cfver = sys.argv[1], sys.argv[2]
ld = lambda n: json.load(open(f"{out}/{n}.json"))
pi, ci, pf, cfo = ld("parley-idle"), ld("cf-idle"), ld("parley-fanout"), ld("cf-fanout")
def kib(r):
    f = r["figures"]
    for k in ("server_rss_per_conn_connected_kib", "server_rss_per_conn_settled_kib"):
        if k in f: return f[k]
    return next(v for k, v in f.items() if k.startswith("server_rss_per_conn"))
rows = [("idle connected", pi["figures"]["connected"], ci["figures"]["connected"]),
        ("idle RSS/conn KiB", kib(pi), kib(ci))]
for name in ("send_to_last_member", "send_to_each_member"):
    for p in ("p50", "p99"):
        rows.append((f"fanout {name} {p} ms", pf["latency_ms"][name][p], cfo["latency_ms"][name][p]))
rows.append(("fanout deliveries/s", pf["figures"]["deliveries_per_sec"], cfo["figures"]["deliveries_per_sec"]))
print(f"centrifugo {cfver}; results in {out}")
print(f"{'metric':34} {'parley':>12} {'centrifugo':>12} {'ratio P/C':>10}")
for m, p, c in rows:
    print(f"{m:34} {p:12.3f} {c:12.3f} {(p / c if c else float('nan')):10.3f}")
json.dump({"centrifugo": cfver, "rows": rows}, open(f"{out}/ratios.json", "w"), indent=1)
PY

# Plot of fanout latency percentiles (PNG) when matplotlib is importable;
# PLOT=path overrides the file (default $OUT/fanout-latency.png).
PLOT=${PLOT:-$OUT/fanout-latency.png}
if python3 -c 'import matplotlib' 2>/dev/null; then
	python3 - "$OUT" "$PLOT" "$cfver" <<'PY'
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out, png, cfver = sys.argv[1:4]
pf, cf = (json.load(open(f"{out}/{n}.json")) for n in ("parley-fanout", "cf-fanout"))
ps = ["p50", "p90", "p99", "p99_9", "max"]
fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
for ax, name in zip(axes, ("send_to_each_member", "send_to_last_member")):
    x = range(len(ps))
    w = 0.38
    ax.bar([i - w / 2 for i in x], [pf["latency_ms"][name][p] for p in ps], w, label="Parley (embedded mode, durable)")
    ax.bar([i + w / 2 for i in x], [cf["latency_ms"][name][p] for p in ps], w, label=f"Centrifugo {cfver} (memory)")
    ax.set_xticks(list(x), ps)
    ax.set_yscale("log")
    ax.set_title(name.replace("_", " "))
    ax.grid(axis="y", alpha=0.3)
axes[0].set_ylabel("ms (log)")
axes[0].legend(fontsize=8)
m, r, d = pf["params"]["members"], pf["params"]["rate_per_sec"], pf["params"]["duration"]
fig.suptitle(f"fanout: one group/channel of {m}, {r:g} sends/s for {d}, 2 shared cores, loopback")
fig.tight_layout()
fig.savefig(png, dpi=110)
print(f"plot: {png}")
PY
else
	log "matplotlib not importable: no plot"
fi
