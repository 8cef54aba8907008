#!/usr/bin/env bash
# bench-compare.sh runs the idle and fanout workloads against Parley
# (`parley serve`, embedded mode, in its own process; `parley bench --url` as
# the load process) and Centrifugo v6 (built from its Go
# module, test/load/centrifugo as the load adapter) on loopback, RUNS times
# each, interleaved (Centrifugo run 1, Parley run 1, Centrifugo run 2, ...;
# a fresh server process, and for Parley a fresh data dir, per run), and
# prints the median of the runs per metric with Parley/Centrifugo ratios
# (issue 5, "Side by side with a peer"; issue 16, "fair and complete").
#
# Both load generators are Go programs on gorilla/websocket (Parley's SDK
# decoding protobuf, test/load/centrifugo decoding Centrifugo's JSON), and
# both report, over the fanout send phase (first send until every send is
# answered), the CPU time of the server process and of the load generator
# itself from /proc/PID/stat (runtime/bench's ProcCPU; `parley bench fanout
# --proc server=PID`, the load generator added as "bench"). The table
# derives from them, the same way for both sides:
#   server CPU per delivery (µs) = cpu_ms_per_1k_sends.server × sends_ok /
#     deliveries (µs of server CPU per message delivered to a member);
#   server / load generator CPU (cores) = cpu_cores.server / .bench;
#   server CPU in the kernel (share) = cpu_sys_share.server (stime over
#     utime + stime), and server CPU per delivery split by it into user
#     space (the server's own code) and kernel (mostly the TCP stack's
#     work per write, the same for any server writing once per delivery).
#
# Output, all kept in OUT:
#   cf-R-idle.json, cf-R-fanout.json            test/load/centrifugo, run R
#   parley-R-idle.json, parley-R-fanout.json    `parley bench --json`, run R
#     (+ parley-R-*.txt: its text report; *.log: servers' and loads' stderr)
#   loadavg.tsv     /proc/loadavg before each workload of each run
#   summary.json    per metric: each side's runs, median, min, max; the
#                   ratio of the medians and the range of the per-run ratios
#                   (run R of Parley / run R of Centrifugo); load averages;
#                   which run each side's plot curve is
#   fanout-latency.png  send→each member and send→last member percentile
#                   curves (p50 … max) of both servers, from each side's
#                   median run by send→last p99 (the lower of the middle
#                   two when RUNS is even); only when a Python with
#                   matplotlib is found: PLOT_PYTHON, else python3, else
#                   .deps/venv/bin/python; otherwise skipped with a note.
#                   Nothing is installed.
# The table printed at the end: metric, Parley median [min–max], Centrifugo
# median [min–max], ratio of the medians P/C, per-run ratio range.
#
# Usage: hack/bench-compare.sh
# Environment: RUNS (runs of each side, 3), N (idle connections, 5000), HOLD
# (idle hold, 10s), MEMBERS (500), RATE (publishes/s, 100), DURATION (fanout
# send phase, 10s), CENTRIFUGO_VERSION (v6.9.1), CFBIN (dir of a prebuilt
# centrifugo binary, reused when present), PORT (Centrifugo port, 18000;
# Parley gets PORT+1), OUT (results dir, default a temp dir, kept and
# printed), PLOT (PNG path, default $OUT/fanout-latency.png), PLOT_PYTHON
# (a python with matplotlib).
set -euo pipefail

RUNS=${RUNS:-3}
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
PLOT=${PLOT:-$OUT/fanout-latency.png}
mkdir -p "$OUT" "$CFBIN"
OUT=$(cd "$OUT" && pwd)
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "bench-compare: RUNS must be a positive integer" >&2; exit 2; }

# The server process running now (only one at a time), ended on exit.
server=""
cleanup() {
	if [[ -n $server ]]; then
		kill "$server" 2>/dev/null || true
		wait "$server" 2>/dev/null || true
	fi
}
trap cleanup EXIT
log() { echo "bench-compare: $*" >&2; }
stop_server() {
	kill "$server" 2>/dev/null || true
	wait "$server" 2>/dev/null || true
	server=""
}
# wait_ready URL: up to 10 s for URL to answer 2xx.
wait_ready() {
	for _ in $(seq 100); do
		curl -fs "$1" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}
printf 'side\trun\tbefore\tload1\tload5\tload15\n' >"$OUT/loadavg.tsv"
# loadavg SIDE RUN WORKLOAD: records /proc/loadavg's 1, 5 and 15 min averages.
loadavg() {
	local l1 l5 l15 _rest
	read -r l1 l5 l15 _rest </proc/loadavg
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$l1" "$l5" "$l15" >>"$OUT/loadavg.tsv"
	log "$1 run $2, $3 (load average $l1 $l5 $l15)"
}
# fail FILE...: names the logs to read and exits.
fail() {
	log "failed; see $*"
	for f in "$@"; do [[ -f $f ]] && tail -n 5 "$f" >&2; done
	exit 1
}

if [[ ! -x $CFBIN/centrifugo ]]; then
	log "building centrifugo $CENTRIFUGO_VERSION into $CFBIN (several minutes the first time)"
	GOBIN=$CFBIN go install "github.com/centrifugal/centrifugo/v6@$CENTRIFUGO_VERSION"
fi
cfver=$(go version -m "$CFBIN/centrifugo" | awk '$1=="mod"{print $3}')
log "centrifugo $cfver; building parley and the adapter; $RUNS runs of each, results in $OUT"
(cd "$root" && go build -o "$OUT/parley" ./runtime/cmd/parley && go build -o "$OUT/cfload" ./test/load/centrifugo)

secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
apikey=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$OUT/centrifugo.json" <<JSON
{
  "log": {"level": "error"},
  "http_server": {"address": "127.0.0.1", "port": $PORT},
  "client": {"token": {"hmac_secret_key": "$secret"}, "insecure": false},
  "http_api": {"key": "$apikey"},
  "health": {"enabled": true},
  "channel": {"namespaces": [{"name": "bench", "allow_subscribe_for_client": true}]}
}
JSON

# run_centrifugo R: a fresh Centrifugo (memory engine), idle then fanout.
run_centrifugo() {
	local r=$1 p=$OUT/cf-$1
	loadavg centrifugo "$r" idle
	"$CFBIN/centrifugo" -c "$OUT/centrifugo.json" >"$p-server.log" 2>&1 &
	server=$!
	wait_ready "http://127.0.0.1:$PORT/health" || fail "$p-server.log"
	cf() { "$OUT/cfload" -url "ws://127.0.0.1:$PORT/connection/websocket" -api "http://127.0.0.1:$PORT/api" \
		-api-key "$apikey" -secret "$secret" -server-pid "$server" "$@"; }
	cf -n "$N" -duration "$HOLD" idle >"$p-idle.json" 2>"$p-idle.log" || fail "$p-idle.log"
	loadavg centrifugo "$r" fanout
	cf -members "$MEMBERS" -rate "$RATE" -duration "$DURATION" fanout >"$p-fanout.json" 2>"$p-fanout.log" ||
		fail "$p-fanout.log"
	stop_server
}

# run_parley R: as Centrifugo runs, a server process (embedded mode, fresh
# data dir) and the load generator in another process.
run_parley() {
	local r=$1 p=$OUT/parley-$1 ppport=$((PORT + 1))
	loadavg parley "$r" idle
	rm -rf "$OUT/parley-data"
	"$OUT/parley" serve --addr "127.0.0.1:$ppport" --data-dir "$OUT/parley-data" >"$p-server.log" 2>&1 &
	server=$!
	wait_ready "http://127.0.0.1:$ppport/readyz" || fail "$p-server.log"
	pb() { "$OUT/parley" bench "$@" --url "ws://127.0.0.1:$ppport" --secret-dir "$OUT/parley-data" --server-pid "$server"; }
	pb idle --n "$N" --duration "$HOLD" --json "$p-idle.json" >"$p-idle.txt" 2>&1 || fail "$p-idle.txt"
	loadavg parley "$r" fanout
	pb fanout --members "$MEMBERS" --rate "$RATE" --duration "$DURATION" --proc "server=$server" \
		--json "$p-fanout.json" >"$p-fanout.txt" 2>&1 || fail "$p-fanout.txt"
	stop_server
}

for r in $(seq "$RUNS"); do
	log "run $r of $RUNS: centrifugo (N=$N idle for $HOLD; fanout $MEMBERS members, $RATE/s for $DURATION)"
	run_centrifugo "$r"
	log "run $r of $RUNS: parley"
	run_parley "$r"
done
rm -rf "$OUT/parley-data"

params=$(printf '{"runs":%s,"n":%s,"hold":"%s","members":%s,"rate_per_sec":%s,"duration":"%s"}' \
	"$RUNS" "$N" "$HOLD" "$MEMBERS" "$RATE" "$DURATION")
python3 - "$OUT" "$cfver" "$RUNS" "$params" <<'PY'
import csv, json, statistics, sys
out, cfver, runs, params = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
ld = lambda n: json.load(open(f"{out}/{n}.json"))
sides = {"parley": "parley", "centrifugo": "cf"}

def kib(r):
    f = r["figures"]
    for k in ("server_rss_per_conn_connected_kib", "server_rss_per_conn_settled_kib"):
        if k in f: return f[k]
    return next((v for k, v in f.items() if k.startswith("server_rss_per_conn")), None)

def per_delivery(fo, name):
    # µs of NAME's CPU per delivered message over the send phase:
    # (ms per 1,000 sends = µs per send) × sends / deliveries.
    f = fo["figures"]
    us_per_send, sends, dels = f.get(f"cpu_ms_per_1k_sends.{name}"), f.get("sends_ok"), f.get("deliveries")
    if us_per_send is None or not sends or not dels: return None
    return us_per_send * sends / dels

def split(fo, name, kernel):
    # per_delivery's µs, in the kernel (stime) or in user space (utime).
    us, share = per_delivery(fo, name), fo["figures"].get(f"cpu_sys_share.{name}")
    if us is None or share is None: return None
    return us * (share if kernel else 1 - share)

lat = lambda name, p: lambda i, fo: fo["latency_ms"][name][p]
metrics = [  # key, label, fn(idle, fanout)
    ("idle_connected", "idle: connected", lambda i, fo: i["figures"].get("connected")),
    ("idle_rss_per_conn_kib", "idle: server RSS/conn (KiB)", lambda i, fo: kib(i)),
    ("fanout_last_p50_ms", "fanout: send→last p50 (ms)", lat("send_to_last_member", "p50")),
    ("fanout_last_p99_ms", "fanout: send→last p99 (ms)", lat("send_to_last_member", "p99")),
    ("fanout_each_p50_ms", "fanout: send→each p50 (ms)", lat("send_to_each_member", "p50")),
    ("fanout_each_p99_ms", "fanout: send→each p99 (ms)", lat("send_to_each_member", "p99")),
    ("fanout_deliveries_per_sec", "fanout: deliveries/s", lambda i, fo: fo["figures"].get("deliveries_per_sec")),
    ("fanout_delivered_fraction", "fanout: delivered/expected",
     lambda i, fo: fo["figures"]["deliveries"] / fo["figures"]["deliveries_expected"] if fo["figures"].get("deliveries_expected") else None),
    ("server_cpu_us_per_delivery", "server CPU/delivery (µs)", lambda i, fo: per_delivery(fo, "server")),
    ("server_cpu_cores", "server CPU (cores)", lambda i, fo: fo["figures"].get("cpu_cores.server")),
    ("server_sys_share", "server CPU in the kernel (share)", lambda i, fo: fo["figures"].get("cpu_sys_share.server")),
    ("server_user_us_per_delivery", "server user CPU/delivery (µs)", lambda i, fo: split(fo, "server", False)),
    ("server_sys_us_per_delivery", "server kernel CPU/delivery (µs)", lambda i, fo: split(fo, "server", True)),
    ("loadgen_cpu_us_per_delivery", "load gen CPU/delivery (µs)", lambda i, fo: per_delivery(fo, "bench")),
    ("loadgen_cpu_cores", "load gen CPU (cores)", lambda i, fo: fo["figures"].get("cpu_cores.bench")),
]
files = {s: [{"idle": f"{p}-{r}-idle.json", "fanout": f"{p}-{r}-fanout.json"} for r in range(1, runs + 1)] for s, p in sides.items()}
data = {s: [(ld(f"{p}-{r}-idle"), ld(f"{p}-{r}-fanout")) for r in range(1, runs + 1)] for s, p in sides.items()}

def stats(vs):
    xs = [v for v in vs if v is not None]
    if not xs: return {"runs": vs, "median": None, "min": None, "max": None}
    return {"runs": vs, "median": statistics.median(xs), "min": min(xs), "max": max(xs)}

summary = {"centrifugo": cfver, "params": params, "metrics": {}, "files": files,
           "method": {
               "clients": "both load generators are Go on gorilla/websocket: Parley's SDK (protobuf frames), test/load/centrifugo (Centrifugo JSON protocol v2)",
               "senders": "Parley: members take turns sending over their WebSocket (M-1 recipients per send); Centrifugo: HTTP API publish from the load process (M subscribers)",
               "cpu": "/proc/PID/stat utime+stime (10 ms ticks) of the server and of the load generator, from the first send until every send is answered",
               "cpu_per_delivery": "cpu_ms_per_1k_sends.NAME × sends_ok / deliveries, in µs",
               "cpu_split": "cpu_sys_share.NAME = stime / (utime + stime) over the send phase (/proc/PID/stat); user and kernel µs per delivery = cpu_per_delivery × (1 - share) and × share",
               "median": "statistics.median of the runs per metric (mean of the two middle runs when RUNS is even); ratio = Parley median / Centrifugo median; ratio_runs = run R / run R"}}
for key, label, fn in metrics:
    m = {"label": label}
    for s in sides:
        vs = []
        for i, fo in data[s]:
            try: v = fn(i, fo)
            except (KeyError, TypeError, ZeroDivisionError): v = None
            vs.append(None if v is None else round(float(v), 4))
        m[s] = stats(vs)
    p, c = m["parley"]["median"], m["centrifugo"]["median"]
    m["ratio"] = round(p / c, 4) if p is not None and c else None
    rr = [round(a / b, 4) for a, b in zip(m["parley"]["runs"], m["centrifugo"]["runs"]) if a is not None and b]
    m["ratio_runs"] = rr
    summary["metrics"][key] = m

with open(f"{out}/loadavg.tsv") as f:
    summary["loadavg"] = [dict(r, load1=float(r["load1"]), load5=float(r["load5"]), load15=float(r["load15"]), run=int(r["run"]))
                          for r in csv.DictReader(f, delimiter="\t")]

# The run each side's plot curve comes from: the median run by send→last p99
# (the lower of the middle two when RUNS is even).
plot_runs = {}
for s in sides:
    vs = summary["metrics"]["fanout_last_p99_ms"][s]["runs"]
    order = sorted((v if v is not None else float("inf"), r) for r, v in enumerate(vs, 1))
    plot_runs[s] = order[(len(order) - 1) // 2][1]
summary["plot_runs"] = plot_runs
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1, ensure_ascii=False)

def fmt(v, like=None):
    # like: format v as that value would be (min and max as their median).
    if v is None: return "n/a"
    w = abs(v if like is None else like)
    if w >= 1000 or all(x == int(x) for x in (v, w)): return f"{v:,.0f}"
    return f"{v:.3f}" if w < 1 else f"{v:.2f}" if w < 100 else f"{v:.1f}"
def cell(st):
    if st["median"] is None: return "n/a"
    return fmt(st["median"]) + (f" [{fmt(st['min'], st['median'])}–{fmt(st['max'], st['median'])}]" if runs > 1 else "")
print(f"centrifugo {cfver}; {runs} run(s) each, interleaved; median [min–max]; results in {out}")
print(f"{'metric':30} {'parley':>26} {'centrifugo':>26} {'P/C':>7} {'P/C per run':>15}")
for key, m in summary["metrics"].items():
    rr = m["ratio_runs"]
    ratio = lambda v: "n/a" if v is None else f"{v:.2f}"
    rng = f"{ratio(min(rr))}–{ratio(max(rr))}" if rr else "n/a"
    print(f"{m['label']:30} {cell(m['parley']):>26} {cell(m['centrifugo']):>26} {ratio(m['ratio']):>7} {rng:>15}")
print("load average (1 min) before each run: " + ", ".join(
    f"{'C' if l['side'] == 'centrifugo' else 'P'}{l['run']} {l['load1']:g}" for l in summary["loadavg"] if l["before"] == "idle"))
print(f"summary: {out}/summary.json")
PY

# Plot of the fanout latency percentile curves (PNG) with a Python that can
# import matplotlib; nothing is installed when none can.
plotpy=""
for py in ${PLOT_PYTHON:-} python3 "$root/.deps/venv/bin/python"; do
	if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import matplotlib' 2>/dev/null; then
		plotpy=$py
		break
	fi
done
if [[ -n $plotpy ]]; then
	"$plotpy" - "$OUT" "$PLOT" <<'PY'
import json, math, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
out, png = sys.argv[1:3]
s = json.load(open(f"{out}/summary.json"))
runs = s["plot_runs"]
ps = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999), ("max", None)]
# x: "nines", -log10(1 - q); max drawn one step past p99.9.
xs = [-math.log10(1 - q) if q else 4.0 for _, q in ps]
fig, ax = plt.subplots(figsize=(8, 4.5))
for side, label, color in (("parley", "Parley (embedded, durable)", "tab:blue"),
                           ("centrifugo", f"Centrifugo {s['centrifugo']} (memory)", "tab:orange")):
    fo = json.load(open(f"{out}/{s['files'][side][runs[side] - 1]['fanout']}"))
    for name, style, marker, what in (("send_to_each_member", "-", "o", "send→each member"),
                                      ("send_to_last_member", "--", "s", "send→last member")):
        ax.plot(xs, [max(fo["latency_ms"][name][p], 1e-3) for p, _ in ps], style, marker=marker, color=color,
                label=f"{label}: {what} (run {runs[side]})")
ax.set_xticks(xs, ["50%", "90%", "99%", "99.9%", "max"])
ax.set_xlabel("percentile")
ax.set_yscale("log")
ax.set_ylabel("latency, ms (log)")
ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=8)
p = s["params"]
ax.set_title(f"fanout: {p['members']} members, {p['rate_per_sec']:g} sends/s for {p['duration']}; "
             f"each side's median of {p['runs']} run(s) by send→last p99", fontsize=10)
fig.tight_layout()
fig.savefig(png, dpi=110)
print(f"plot: {png}")
PY
else
	log "no Python with matplotlib (PLOT_PYTHON, python3, .deps/venv/bin/python): no plot"
fi
