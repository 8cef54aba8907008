#!/usr/bin/env bash
# hack/regions.sh — a two-region Parley test bed on this machine (network namespaces), for the
# multi-region tests (test/multiregion, `make test-multiregion`). Needs root.
#
#   hack/regions.sh up                          namespaces, links, Redis/Kafka/Cassandra per region, Parley; wait ready
#   hack/regions.sh env                         shell lines for the tests: eval "$(hack/regions.sh env)"
#   hack/regions.sh status                      links, backends, Parley of each region (exit 1 if one is not ready)
#   hack/regions.sh partition | heal            cut / restore the inter-region link
#   hack/regions.sh restart-parley REGION [--kill9]   SIGTERM (or SIGKILL) that region's Parley, start it again, wait ready
#   hack/regions.sh nodetool REGION ARGS...     Cassandra's nodetool against that region's node (e.g. status)
#   hack/regions.sh cqlsh REGION [ARGS...]      cqlsh against that region's node
#   hack/regions.sh down                        stop Parley and the backends, delete the namespaces (data stays)
#   hack/regions.sh clean                       down, then delete the state dir
#
# See hack/README.md ("regions.sh") for the topology and the environment knobs.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$HACK_DIR/.." && pwd)
STATE=${PARLEY_REGIONS_DIR:-$REPO_DIR/.deps/regions}
# The jar classpaths and the cqlsh venv of hack/deps.sh: shared with the root-namespace servers'.
DEPS_CACHE=${PARLEY_DEPS_CACHE_DIR:-${PARLEY_DEPS_DIR:-$REPO_DIR/.deps}}
DELAY=${PARLEY_REGIONS_DELAY:-40ms}
# How the inter-region link delays: netem (tc qdisc netem on a veth pair), userspace (a TUN device in each
# namespace, joined by a small forwarder process that holds each packet DELAY; for kernels without
# sch_netem), or auto (netem when the kernel has it).
LINK_MODE=${PARLEY_REGIONS_LINK:-auto}
READY_TIMEOUT=${PARLEY_REGIONS_READY_TIMEOUT:-120}
CLUSTER_TIMEOUT=${PARLEY_REGIONS_CLUSTER_TIMEOUT:-180}
SERVE_ARGS=${PARLEY_REGIONS_SERVE_ARGS:-}
CASSANDRA_VERSION=${PARLEY_CASSANDRA_VERSION:-5.0.9}
GO=${GO:-go}

REGIONS=(eu us)
PORT=8080
declare -A NS=([eu]=parley-eu [us]=parley-us)
declare -A LINK_ADDR=([eu]=10.77.0.1 [us]=10.77.0.2) # inter-region veth, delayed; the backends bind here
declare -A GW_ADDR=([eu]=10.77.1.2 [us]=10.77.2.2)   # namespace end of the veth to the root namespace
declare -A ROOT_ADDR=([eu]=10.77.1.1 [us]=10.77.2.1) # root end of it
declare -A REGION_ID=([eu]=1 [us]=2)
declare -A OTHER=([eu]=us [us]=eu)
declare -A PEER_IF=([eu]=to-us [us]=to-eu) # the inter-region veth end inside each namespace
declare -A ROOT_IF=([eu]=parley-eu [us]=parley-us)
NS_ROOT_IF=to-root # the namespace end of the veth to the root namespace
SEED=${LINK_ADDR[eu]}
BIN=$STATE/parley

log() { printf '[regions] %s\n' "$*" >&2; }
die() { printf '[regions] ERROR: %s\n' "$*" >&2; exit 1; }

tail_log() { # tail_log FILE...
  local f
  for f in "$@"; do
    [[ -s $f ]] || continue
    printf -- '----- last lines of %s -----\n' "$f" >&2
    tail -n 40 "$f" >&2
  done
}

check_region() { [[ -n ${NS[${1:-}]:-} ]] || die "unknown region '${1:-}' (want: ${REGIONS[*]})"; }
rdir() { printf '%s/%s\n' "$STATE" "$1"; }

# ---------------------------------------------------------------- network

ns_exists() { [[ -e /run/netns/$1 ]]; }
link_exists() { # link_exists NS|"" IFNAME
  if [[ -n $1 ]]; then ip -n "$1" link show dev "$2" >/dev/null 2>&1; else ip link show dev "$2" >/dev/null 2>&1; fi
}
link_is_up() { ip -n "$1" -o link show dev "$2" 2>/dev/null | grep -q '<[^>]*\bUP\b'; }

need_cmds() {
  ((EUID == 0)) || die "needs root (network namespaces)"
  local c missing=()
  for c in ip tc curl flock setsid; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
  ((${#missing[@]} == 0)) || die "missing commands: ${missing[*]}"
  command -v ping >/dev/null 2>&1 || {
    log "ping not found; installing Debian's iputils-ping"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q iputils-ping >"$STATE/apt.log" 2>&1 \
      || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q iputils-ping; } >>"$STATE/apt.log" 2>&1 \
      || { tail_log "$STATE/apt.log"; die "apt-get install iputils-ping failed (log: $STATE/apt.log)"; }
  }
}

# resolve_link_mode: LINK_MODE becomes netem or userspace (auto: can this kernel run a netem qdisc?).
resolve_link_mode() {
  case $LINK_MODE in
    netem | userspace) ;;
    auto)
      if tc -n "${NS[eu]}" qdisc add dev lo root netem delay 1ms 2>/dev/null; then
        tc -n "${NS[eu]}" qdisc del dev lo root 2>/dev/null || true
        LINK_MODE=netem
      else
        LINK_MODE=userspace
        [[ -z ${QUIET_PROBE:-} ]] || return 0
        log "net: this kernel has no netem qdisc (sch_netem); the inter-region link is a TUN pair with a userspace delay"
      fi
      ;;
    *) die "PARLEY_REGIONS_LINK=$LINK_MODE: want auto, netem or userspace" ;;
  esac
}

delay_ms() { # DELAY (40ms, 0.5s, 500us) in milliseconds
  [[ $DELAY =~ ^([0-9]+(\.[0-9]+)?)(us|ms|s)?$ ]] || die "PARLEY_REGIONS_DELAY=$DELAY: want e.g. 40ms"
  awk -v n="${BASH_REMATCH[1]}" -v u="${BASH_REMATCH[3]:-ms}" 'BEGIN {printf "%g\n", n * (u == "s" ? 1000 : u == "us" ? 0.001 : 1)}'
}

# ---- userspace link: TUN devices to-us (eu) and to-eu (us), joined by $STATE/linkdelay.py
FWD_PY=$STATE/linkdelay.py
FWD_PID=$STATE/linkdelay.pid
FWD_LOG=$STATE/linkdelay.log

fwd_alive() { # the forwarder is alive and ours: its pid in FWD_RUNNING, its arguments in FWD_ARGS
  local pid argv=()
  FWD_RUNNING="" FWD_ARGS=""
  [[ -f $FWD_PID ]] || return 1
  pid=$(<"$FWD_PID")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  mapfile -d '' -t argv <"/proc/$pid/cmdline" 2>/dev/null || return 1
  ((${#argv[@]} > 2)) && [[ ${argv[1]} == "$FWD_PY" ]] || return 1
  FWD_RUNNING=$pid FWD_ARGS="${argv[*]:2}"
}

fwd_stop() {
  local pid
  fwd_alive || { rm -f "$FWD_PID"; return 0; }
  pid=$FWD_RUNNING
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$FWD_PID"
  log "net: stopped the link forwarder (pid $pid)"
}

fwd_write() {
  mkdir -p "$STATE"
  cat >"$FWD_PY.tmp" <<'EOF'
# generated by hack/regions.sh: the inter-region link of a kernel without netem. It joins two TUN
# devices (in two network namespaces) and holds every packet DELAY_MS before passing it on, like a
# long wire; a packet that cannot be written (its link is down: a partition) is dropped.
# usage: python3 linkdelay.py DELAY_MS NS_A IF_A NS_B IF_B
import ctypes, fcntl, heapq, os, select, signal, struct, sys, time

CLONE_NEWNET, TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x40000000, 0x400454CA, 0x0001, 0x1000
libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, "setns: " + os.strerror(e))


def open_tun(ns, name):
    nsfd = os.open("/run/netns/" + ns, os.O_RDONLY)
    try:
        setns(nsfd)
    finally:
        os.close(nsfd)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main():
    delay = float(sys.argv[1]) / 1000.0
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    a, b = open_tun(sys.argv[2], sys.argv[3]), open_tun(sys.argv[4], sys.argv[5])
    setns(home)  # the TUN fds stay bound to their devices; the process lives in the root namespace
    os.close(home)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    peer, queue, seq = {a: b, b: a}, [], 0
    print("linkdelay: %s/%s <-> %s/%s, %g ms each way" % (*sys.argv[2:6], delay * 1000), flush=True)
    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else None
        ready, _, _ = select.select([a, b], [], [], timeout)
        now = time.monotonic()
        for fd in ready:
            for _ in range(512):
                try:
                    pkt = os.read(fd, 65536)
                except OSError:  # EAGAIN: drained
                    break
                heapq.heappush(queue, (now + delay, seq, peer[fd], pkt))
                seq += 1
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, pkt = heapq.heappop(queue)
            try:
                os.write(out, pkt)
            except OSError:
                pass


main()
EOF
  mv "$FWD_PY.tmp" "$FWD_PY"
}

# fwd_ensure: the forwarder runs with the configured delay (restarted when the delay changed).
fwd_ensure() {
  local ms want i
  ms=$(delay_ms)
  want=("$ms" "${NS[eu]}" "${PEER_IF[eu]}" "${NS[us]}" "${PEER_IF[us]}")
  fwd_write
  if fwd_alive; then
    [[ $FWD_ARGS == "${want[*]}" ]] && return 0
    log "net: the link forwarder runs with '$FWD_ARGS', want '${want[*]}'; restarting it"
    fwd_stop
  fi
  command -v python3 >/dev/null 2>&1 || die "python3 is needed for the userspace link"
  : >"$FWD_LOG"
  (exec setsid python3 "$FWD_PY" "${want[@]}" </dev/null >>"$FWD_LOG" 2>&1 7>&-) &
  echo $! >"$FWD_PID"
  for ((i = 0; i < 50; i++)); do # it prints its "linkdelay:" line once both TUN devices are open
    fwd_alive && grep -q '^linkdelay: ' "$FWD_LOG" && break
    kill -0 "$(<"$FWD_PID")" 2>/dev/null || break
    sleep 0.1
  done
  if ! fwd_alive || ! grep -q '^linkdelay: ' "$FWD_LOG"; then
    tail_log "$FWD_LOG"
    die "net: the link forwarder failed to start (log: $FWD_LOG)"
  fi
  log "net: link forwarder started (pid $FWD_RUNNING, ${ms} ms each way; log: $FWD_LOG)"
}

# apply_delay: the inter-region delay is in place (netem qdiscs, or the forwarder).
apply_delay() {
  local r
  resolve_link_mode
  if [[ $LINK_MODE == netem ]]; then
    for r in "${REGIONS[@]}"; do tc -n "${NS[$r]}" qdisc replace dev "${PEER_IF[$r]}" root netem delay "$DELAY"; done
  else
    fwd_ensure
  fi
}

link_kind() { # link_kind NS IF: veth, tun or nothing
  ip -n "$1" -d -o link show dev "$2" 2>/dev/null | grep -oE '\b(veth|tun type tun)\b' | head -n1 | cut -d' ' -f1
}

net_up() {
  local r ns
  if [[ $(cat /proc/sys/net/ipv4/ip_forward) != 0 ]]; then
    log "warning: net.ipv4.ip_forward=1 in the root namespace (the regions still have no route through it)"
  fi
  for r in "${REGIONS[@]}"; do
    ns=${NS[$r]}
    ns_exists "$ns" || { ip netns add "$ns"; log "net: created namespace $ns"; }
    ip -n "$ns" link set lo up
  done
  # Inter-region link: one veth with its ends in the two namespaces (netem), or a TUN device in each.
  local kind=veth
  resolve_link_mode
  [[ $LINK_MODE == netem ]] || kind=tun
  if [[ $(link_kind "${NS[eu]}" "${PEER_IF[eu]}") != "$kind" || $(link_kind "${NS[us]}" "${PEER_IF[us]}") != "$kind" ]]; then
    [[ $kind == tun ]] || fwd_stop
    ip -n "${NS[eu]}" link del "${PEER_IF[eu]}" 2>/dev/null || true
    ip -n "${NS[us]}" link del "${PEER_IF[us]}" 2>/dev/null || true
    if [[ $kind == veth ]]; then
      ip link add "${PEER_IF[eu]}" netns "${NS[eu]}" type veth peer name "${PEER_IF[us]}" netns "${NS[us]}"
    else
      fwd_stop # its TUN fds belonged to the devices just deleted
      ip -n "${NS[eu]}" tuntap add dev "${PEER_IF[eu]}" mode tun
      ip -n "${NS[us]}" tuntap add dev "${PEER_IF[us]}" mode tun
    fi
    log "net: created the inter-region link ${NS[eu]}/${PEER_IF[eu]} <-> ${NS[us]}/${PEER_IF[us]} ($kind)"
  elif ! link_is_up "${NS[eu]}" "${PEER_IF[eu]}" || ! link_is_up "${NS[us]}" "${PEER_IF[us]}"; then
    log "net: the inter-region link was partitioned (down); up heals it"
  fi
  for r in "${REGIONS[@]}"; do
    ns=${NS[$r]}
    ip -n "$ns" addr replace "${LINK_ADDR[$r]}/24" dev "${PEER_IF[$r]}"
    ip -n "$ns" link set "${PEER_IF[$r]}" up
    # Link to the root namespace (no delay), for the test clients.
    if ! link_exists "" "${ROOT_IF[$r]}" || ! link_exists "$ns" "$NS_ROOT_IF"; then
      ip link del "${ROOT_IF[$r]}" 2>/dev/null || true
      ip -n "$ns" link del "$NS_ROOT_IF" 2>/dev/null || true
      ip link add "${ROOT_IF[$r]}" type veth peer name "$NS_ROOT_IF" netns "$ns"
      log "net: created the link root/${ROOT_IF[$r]} <-> $ns/$NS_ROOT_IF"
    fi
    ip addr replace "${ROOT_ADDR[$r]}/24" dev "${ROOT_IF[$r]}"
    ip link set "${ROOT_IF[$r]}" up
    ip -n "$ns" addr replace "${GW_ADDR[$r]}/24" dev "$NS_ROOT_IF"
    ip -n "$ns" link set "$NS_ROOT_IF" up
  done
  apply_delay
  # Both ends are up: check what the tests rely on (a route appears once a veth's two ends are up).
  local deadline=$((SECONDS + 10))
  until ip netns exec "${NS[eu]}" ping -c1 -W1 -q "${LINK_ADDR[us]}" >/dev/null 2>&1 \
    && ping -c1 -W1 -q "${GW_ADDR[eu]}" >/dev/null 2>&1 && ping -c1 -W1 -q "${GW_ADDR[us]}" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "net: the links do not answer ping after 10s (ip -n ${NS[eu]} addr; ip addr show ${ROOT_IF[eu]})"
    sleep 0.2
  done
  if ip netns exec "${NS[eu]}" ping -c1 -W1 -q "${GW_ADDR[us]}" >/dev/null 2>&1; then
    die "net: ${NS[eu]} reaches ${GW_ADDR[us]} without the delayed link (a route through the root namespace?)"
  fi
  log "net: eu ${LINK_ADDR[eu]} <-> us ${LINK_ADDR[us]} ($LINK_MODE delay $DELAY each way); root reaches eu at ${GW_ADDR[eu]}, us at ${GW_ADDR[us]}"
}

net_down() {
  local r
  fwd_stop
  for r in "${REGIONS[@]}"; do
    if ns_exists "${NS[$r]}"; then ip netns del "${NS[$r]}"; log "net: deleted namespace ${NS[$r]}"; fi
    # Deleting the namespace destroys its veth ends, and with them their peers; this is for a half-left one.
    ip link del "${ROOT_IF[$r]}" 2>/dev/null || true
  done
}

# ---------------------------------------------------------------- backends (hack/deps.sh in each namespace)

# deps_in REGION ARGS...: hack/deps.sh ARGS in that region's namespace, with its state dir and addresses.
deps_in() {
  local r=$1
  shift
  local envs=(
    PARLEY_DEPS_DIR="$(rdir "$r")"
    PARLEY_DEPS_CACHE_DIR="$DEPS_CACHE"
    PARLEY_DEPS_HOST="${LINK_ADDR[$r]}"
    PARLEY_CASSANDRA_DC="$r"
    PARLEY_CASSANDRA_SEEDS="$SEED:${PARLEY_CASSANDRA_STORAGE_PORT:-7000}"
  )
  # The cluster is empty when the non-seed node first joins: nothing to stream.
  [[ ${LINK_ADDR[$r]} == "$SEED" ]] || envs+=(PARLEY_CASSANDRA_AUTO_BOOTSTRAP=false)
  local pre=()
  ns_exists "${NS[$r]}" && pre=(ip netns exec "${NS[$r]}")
  # fd 7 (our lock) must not reach the servers deps.sh launches.
  "${pre[@]}" env "${envs[@]}" "$HACK_DIR/deps.sh" "$@" 7>&-
}

JAVA=""
find_java() {
  [[ -n $JAVA ]] && return 0
  local c
  for c in ${PARLEY_JAVA_HOME:+"$PARLEY_JAVA_HOME/bin/java"} ${JAVA_HOME:+"$JAVA_HOME/bin/java"} /usr/lib/jvm/*17*/bin/java; do
    [[ -x $c ]] && { JAVA=$c; return 0; }
  done
  JAVA=$(command -v java) || die "no java (hack/deps.sh installs a JDK 17)"
}

# nodetool REGION ARGS...: Cassandra's NodeTool class over the node's loopback-only JMX, in its namespace.
nodetool() {
  local r=$1 cp
  shift
  cp="$DEPS_CACHE/cassandra/classpath-cassandra-$CASSANDRA_VERSION.txt"
  [[ -s $cp ]] || die "no $cp (hack/regions.sh up resolves it)"
  find_java
  # --add-exports/--add-opens: those of Cassandra 5.0's conf/jvm17-clients.options.
  ip netns exec "${NS[$r]}" "$JAVA" -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Djdk.attach.allowAttachSelf=true \
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED --add-exports java.base/jdk.internal.ref=ALL-UNNAMED \
    --add-exports java.base/sun.nio.ch=ALL-UNNAMED --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED \
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED \
    --add-exports java.sql/java.sql=ALL-UNNAMED --add-opens java.base/java.lang.module=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED --add-opens java.base/jdk.internal.ref=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED --add-opens java.base/jdk.internal.math=ALL-UNNAMED \
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED \
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED \
    -Dlogback.configurationFile="file://$(rdir "$r")/cassandra/logback-nodetool.xml" \
    -cp "$(<"$cp")" org.apache.cassandra.tools.NodeTool -h 127.0.0.1 -p "${PARLEY_CASSANDRA_JMX_PORT:-7199}" "$@" 7>&-
}
nodetool_logback() { # quiet logging for the NodeTool JVM (warnings to stderr)
  local f
  f="$(rdir "$1")/cassandra/logback-nodetool.xml"
  [[ -f $f ]] && return 0
  mkdir -p "$(dirname "$f")"
  cat >"$f" <<'EOF'
<!-- generated by hack/regions.sh: nodetool logs warnings to stderr only -->
<configuration>
  <appender name="STDERR" class="ch.qos.logback.core.ConsoleAppender">
    <target>System.err</target>
    <encoder><pattern>%-5level %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDERR" /></root>
</configuration>
EOF
}

# cluster_wait: both Cassandra nodes see both datacenters Up/Normal (migrate's NetworkTopologyStrategy needs both).
cluster_wait() {
  local deadline=$((SECONDS + CLUSTER_TIMEOUT)) r out ok
  for r in "${REGIONS[@]}"; do nodetool_logback "$r"; done
  while :; do
    ok=1
    for r in "${REGIONS[@]}"; do
      out=$(nodetool "$r" status 2>"$STATE/nodetool.err") || { ok=0; break; }
      # "Datacenter: eu" ... "UN  10.77.0.1 ..." once per node
      if [[ $(grep -c '^UN ' <<<"$out") != 2 ]] || ! grep -q '^Datacenter: eu$' <<<"$out" \
        || ! grep -q '^Datacenter: us$' <<<"$out"; then
        ok=0
        break
      fi
    done
    ((ok)) && break
    if ((SECONDS > deadline)); then
      printf '%s\n' "${out:-}" >&2
      tail_log "$STATE/nodetool.err" "$(rdir eu)/cassandra/logs/system.log" "$(rdir us)/cassandra/logs/system.log"
      die "cassandra: the two nodes do not both show UN in datacenters eu and us after ${CLUSTER_TIMEOUT}s"
    fi
    sleep 2
  done
  log "cassandra: one cluster, datacenters eu (${LINK_ADDR[eu]}) and us (${LINK_ADDR[us]}), both nodes UN"
}

# ---------------------------------------------------------------- parley

pidfile() { printf '%s/parley.pid\n' "$(rdir "$1")"; }
datadir() { printf '%s/data\n' "$(rdir "$1")"; }
logfile() { printf '%s/parley.log\n' "$(rdir "$1")"; }

# parley_pid REGION: the pid in the region's pidfile if it is alive and is our `parley serve --region REGION`.
parley_pid() {
  local r=$1 f pid i
  f=$(pidfile "$r")
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  local argv=()
  mapfile -d '' -t argv <"/proc/$pid/cmdline" 2>/dev/null || return 1
  ((${#argv[@]} > 2)) && [[ ${argv[0]} == "$BIN" && ${argv[1]} == serve ]] || return 1
  for ((i = 2; i < ${#argv[@]} - 1; i++)); do
    [[ ${argv[i]} == --region && ${argv[i + 1]} == "$r" ]] && { printf '%s\n' "$pid"; return 0; }
  done
  return 1
}

parley_ready() { curl -fsS --max-time 2 -o /dev/null "http://${GW_ADDR[$1]}:$PORT/readyz" 2>/dev/null; }

BIN_CHANGED=0
build_parley() {
  local t0=$SECONDS
  mkdir -p "$STATE"
  log "parley: building ./runtime/cmd/parley"
  if ! (cd "$REPO_DIR" && "$GO" build -o "$BIN.new" ./runtime/cmd/parley) >"$STATE/build.log" 2>&1; then
    tail_log "$STATE/build.log"
    die "parley: go build failed (log: $STATE/build.log)"
  fi
  if [[ -f $BIN ]] && cmp -s "$BIN" "$BIN.new"; then
    rm -f "$BIN.new"
  else
    mv -f "$BIN.new" "$BIN" # a rename: a running parley keeps its old binary
    BIN_CHANGED=1 # cmd_up restarts running regions on it
  fi
  log "parley: $BIN ($((SECONDS - t0))s)"
}

# One dev secret for both regions, so a token minted with either data dir works in both.
dev_secret() {
  local s="$STATE/dev-secret" r d
  if [[ ! -s $s ]]; then
    (umask 077 && { head -c 32 /dev/urandom | od -An -v -tx1 | tr -d ' \n'; echo; } >"$s.tmp") && mv "$s.tmp" "$s"
    log "parley: wrote a dev secret ($s)"
  fi
  for r in "${REGIONS[@]}"; do
    d=$(datadir "$r")
    mkdir -p "$d" && chmod 700 "$d"
    cmp -s "$s" "$d/dev-secret" && continue
    install -m 600 "$s" "$d/dev-secret"
    if parley_pid "$r" >/dev/null; then
      log "parley: region $r runs with another dev secret; restart it (hack/regions.sh restart-parley $r)"
    fi
  done
}

migrate() {
  local t0=$SECONDS r
  : >"$STATE/migrate.log"
  for r in "${REGIONS[@]}"; do
    local skip=()
    [[ $r == "${REGIONS[0]}" ]] || skip=(--skip-cassandra) # one keyspace for the cluster; topics per region
    if ! ip netns exec "${NS[eu]}" "$BIN" migrate --cassandra-hosts "$SEED:9042" --cassandra-keyspace parley \
      --replication eu=1,us=1 --kafka-brokers "${LINK_ADDR[$r]}:9092" --region "$r" "${skip[@]}" \
      >>"$STATE/migrate.log" 2>&1 7>&-; then
      tail_log "$STATE/migrate.log"
      die "parley: migrate --region $r failed (log: $STATE/migrate.log)"
    fi
  done
  log "parley: migrated keyspace parley (eu=1,us=1) and the topics of eu and us in their own Kafka ($((SECONDS - t0))s; log: $STATE/migrate.log)"
}

# serve_args REGION: the flags of `parley serve` for that region, one per line.
serve_args() {
  local r=$1 o=${OTHER[$1]} extra=()
  printf '%s\n' serve --role all --region "$r" --region-id "${REGION_ID[$r]}" --member "parley-$r-0" \
    --cassandra-hosts "${LINK_ADDR[$r]}:9042" --cassandra-keyspace parley --cassandra-local-dc "$r" \
    --kafka-brokers "${LINK_ADDR[$r]}:9092" --redis-addr "${LINK_ADDR[$r]}:6379" \
    --addr "0.0.0.0:$PORT" --data-dir "$(datadir "$r")"
  # The other region's Kafka: --peer-region name=,id=,kafka= (today's flag) or --peer-regions name=host:port.
  local help
  help=$("$BIN" serve --help 2>/dev/null || true)
  if grep -qE -- '--peer-region[[:space:]]' <<<"$help"; then
    printf '%s\n' --peer-region "name=$o,id=${REGION_ID[$o]},kafka=${LINK_ADDR[$o]}:9092"
  elif grep -qE -- '--peer-regions[[:space:]]' <<<"$help"; then
    printf '%s\n' --peer-regions "$o=${LINK_ADDR[$o]}:9092"
  fi
  read -r -a extra <<<"$SERVE_ARGS"
  ((${#extra[@]} == 0)) || printf '%s\n' "${extra[@]}"
}

# start_parley REGION: launch with the flags saved in parley.args (written by `up`).
start_parley() {
  local r=$1 args=() pid i f log
  f="$(rdir "$r")/parley.args"
  log=$(logfile "$r")
  mapfile -t args <"$f"
  printf '===== %s start: parley %s\n' "$(date -Is)" "${args[*]}" >>"$log"
  (
    cd "$(rdir "$r")"
    # ip netns exec and setsid exec (no fork): $! is parley's pid, in the namespace for good.
    exec ip netns exec "${NS[$r]}" setsid "$BIN" "${args[@]}" </dev/null >>"$log" 2>&1 7>&-
  ) &
  pid=$!
  echo "$pid" >"$(pidfile "$r")"
  for ((i = 0; i < 50; i++)); do
    parley_pid "$r" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  parley_pid "$r" >/dev/null || { tail_log "$log"; die "parley $r: failed to launch (log: $log)"; }
  log "parley $r: started (pid $pid) in ${NS[$r]}$(grep -qE -- '^--peer-regions?$' "$f" && echo ", peer $(grep -A1 -E -- '^--peer-regions?$' "$f" | tail -n1)")"
}

wait_parley() {
  local r=$1 deadline=$((SECONDS + READY_TIMEOUT)) t0=$SECONDS
  until parley_ready "$r"; do
    parley_pid "$r" >/dev/null || { tail_log "$(logfile "$r")"; die "parley $r: exited during startup (log: $(logfile "$r"))"; }
    if ((SECONDS > deadline)); then
      tail_log "$(logfile "$r")"
      die "parley $r: http://${GW_ADDR[$r]}:$PORT/readyz not ready after ${READY_TIMEOUT}s (log: $(logfile "$r"))"
    fi
    sleep 0.2
  done
  log "parley $r: ready at http://${GW_ADDR[$r]}:$PORT/readyz (pid $(parley_pid "$r"), $((SECONDS - t0))s)"
}

stop_parley() { # stop_parley REGION [KILL]
  local r=$1 sig=${2:-TERM} pid i
  if ! pid=$(parley_pid "$r"); then
    log "parley $r: not running (no live pidfile)"
    rm -f "$(pidfile "$r")"
    return 0
  fi
  log "parley $r: sending SIG$sig to pid $pid"
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do # 30 s: a TERM drains the gateway (--drain-window, 5 s by default)
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "parley $r: pid $pid still alive after 30s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$(pidfile "$r")"
  log "parley $r: stopped"
}

# ---------------------------------------------------------------- commands

lock() {
  mkdir -p "$STATE"
  [[ -e $STATE/.gitignore ]] || printf '# generated by hack/regions.sh: the whole state dir stays out of git\n*\n' >"$STATE/.gitignore"
  exec 7>"$STATE/.lock"
  flock -w 900 7 || die "another hack/regions.sh holds $STATE/.lock"
}

need_up() { if ! ns_exists "${NS[eu]}" || ! ns_exists "${NS[us]}"; then die "the regions are not up (hack/regions.sh up)"; fi; }

summary() {
  local r pid
  for r in "${REGIONS[@]}"; do
    pid=$(parley_pid "$r" || echo -)
    printf 'region %s  ws=ws://%s:%s/v1/ws  http=http://%s:%s  data-dir=%s  pid=%s\n' \
      "$r" "${GW_ADDR[$r]}" "$PORT" "${GW_ADDR[$r]}" "$PORT" "$(datadir "$r")" "$pid"
  done
}

cmd_up() {
  local t0=$SECONDS r
  lock
  need_cmds
  net_up
  for r in "${REGIONS[@]}"; do # eu first: its Cassandra node is the seed
    log "backends $r: hack/deps.sh up in ${NS[$r]} on ${LINK_ADDR[$r]} (state: $(rdir "$r"))"
    deps_in "$r" up cassandra kafka redis
  done
  cluster_wait
  build_parley
  dev_secret
  migrate
  for r in "${REGIONS[@]}"; do
    if parley_pid "$r" >/dev/null && ((BIN_CHANGED)); then
      log "parley $r: binary changed; restarting it"
      stop_parley "$r" TERM
      serve_args "$r" >"$(rdir "$r")/parley.args"
      start_parley "$r"
    elif parley_pid "$r" >/dev/null; then
      log "parley $r: already running (pid $(parley_pid "$r"))"
    else
      serve_args "$r" >"$(rdir "$r")/parley.args"
      start_parley "$r"
    fi
  done
  for r in "${REGIONS[@]}"; do wait_parley "$r"; done
  if ! grep -qE -- '^--peer-regions?$' "$(rdir eu)/parley.args"; then
    log "note: this parley has neither --peer-region nor --peer-regions (parley serve --help); started without peers"
  fi
  log "up: two regions ready in $((SECONDS - t0))s (state dir: $STATE)"
  summary
}

cmd_env() {
  local r R
  printf 'export PARLEY_MR_REGIONS=%s\n' "$(IFS=,; echo "${REGIONS[*]}")"
  printf 'export PARLEY_MR_SCRIPT=%q\n' "$HACK_DIR/regions.sh"
  for r in "${REGIONS[@]}"; do
    R=${r^^}
    printf 'export PARLEY_MR_%s_HTTP=%q\n' "$R" "http://${GW_ADDR[$r]}:$PORT"
    printf 'export PARLEY_MR_%s_WS=%q\n' "$R" "ws://${GW_ADDR[$r]}:$PORT/v1/ws"
    printf 'export PARLEY_MR_%s_DATA=%q\n' "$R" "$(datadir "$r")"
    printf 'export PARLEY_MR_%s_PIDFILE=%q\n' "$R" "$(pidfile "$r")"
  done
}

cmd_partition() {
  lock
  need_up
  local r
  for r in "${REGIONS[@]}"; do ip -n "${NS[$r]}" link set "${PEER_IF[$r]}" down; done
  log "partition: inter-region link down (${NS[eu]}/${PEER_IF[eu]}, ${NS[us]}/${PEER_IF[us]}); eu and us cannot reach each other"
}

cmd_heal() {
  QUIET_PROBE=1
  lock
  need_up
  local r deadline=$((SECONDS + 10))
  for r in "${REGIONS[@]}"; do ip -n "${NS[$r]}" link set "${PEER_IF[$r]}" up; done
  apply_delay
  until ip netns exec "${NS[eu]}" ping -c1 -W1 -q "${LINK_ADDR[us]}" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "heal: ${LINK_ADDR[us]} still unreachable from ${NS[eu]} after 10s"
    sleep 0.2
  done
  log "heal: inter-region link up again ($LINK_MODE delay $DELAY each way)"
}

cmd_status() {
  local rc=0 r pid out
  for r in "${REGIONS[@]}"; do
    ns_exists "${NS[$r]}" || { echo "namespace ${NS[$r]}: missing (hack/regions.sh up)"; rc=1; }
  done
  ((rc == 0)) || return 1
  if link_is_up "${NS[eu]}" "${PEER_IF[eu]}" && link_is_up "${NS[us]}" "${PEER_IF[us]}"; then
    out=$(ip netns exec "${NS[eu]}" ping -c3 -i0.2 -W2 -q "${LINK_ADDR[us]}" 2>&1 | awk -F/ '/^rtt/ {print $5 " ms avg RTT"}') || true
    local how
    if [[ $(link_kind "${NS[eu]}" "${PEER_IF[eu]}") == tun ]]; then
      if fwd_alive; then how="userspace delay ${FWD_ARGS%% *} ms each way (forwarder pid $FWD_RUNNING)"; else how="userspace delay, forwarder NOT running"; rc=1; fi
    else
      how="netem $(tc -n "${NS[eu]}" qdisc show dev "${PEER_IF[eu]}" | grep -o 'delay [^ ]*' || echo 'no delay') each way"
    fi
    echo "link eu<->us: up, $how, ${out:-no ping answer}"
  else
    echo "link eu<->us: PARTITIONED (down; hack/regions.sh heal)"
  fi
  nodetool_logback eu
  if out=$(nodetool eu status 2>/dev/null); then
    echo "cassandra cluster (nodetool status on eu): $(awk '/^Datacenter:/ {dc=$2} /^[UD][NLJM] / {printf "%s%s %s %s", sep, dc, $2, $1; sep=", "}' <<<"$out")"
  else
    echo "cassandra cluster: nodetool status on eu failed"; rc=1
  fi
  for r in "${REGIONS[@]}"; do
    echo "-- region $r (${NS[$r]}, ${LINK_ADDR[$r]}, state $(rdir "$r"))"
    deps_in "$r" status | sed 's/^/  /' || rc=1
    if pid=$(parley_pid "$r"); then
      if parley_ready "$r"; then echo "  parley     running (pid $pid), ready at http://${GW_ADDR[$r]}:$PORT    log: $(logfile "$r")"
      else echo "  parley     running (pid $pid), NOT ready at http://${GW_ADDR[$r]}:$PORT/readyz    log: $(logfile "$r")"; rc=1; fi
    else
      echo "  parley     stopped"; rc=1
    fi
  done
  return $rc
}

cmd_restart_parley() {
  local r=${1:-} sig=TERM
  check_region "$r"
  case ${2:-} in "") ;; --kill9) sig=KILL ;; *) die "restart-parley $r: unknown option '$2' (want --kill9)" ;; esac
  lock
  need_up
  [[ -s "$(rdir "$r")/parley.args" ]] || die "parley $r: never started (hack/regions.sh up)"
  stop_parley "$r" "$sig"
  start_parley "$r"
  wait_parley "$r"
}

cmd_down() {
  local r pids
  for r in "${REGIONS[@]}"; do stop_parley "$r"; done
  for r in "${REGIONS[@]}"; do
    [[ -d $(rdir "$r") ]] || continue
    log "backends $r: hack/deps.sh down"
    deps_in "$r" down
  done
  for r in "${REGIONS[@]}"; do
    ns_exists "${NS[$r]}" || continue
    pids=$(ip netns pids "${NS[$r]}" | tr '\n' ' ')
    if [[ -n ${pids// /} ]]; then
      # Only processes started in our namespace can be there.
      log "net: processes still in ${NS[$r]}: $pids- sending SIGTERM"
      # shellcheck disable=SC2086 # a list of pids
      kill -TERM $pids 2>/dev/null || true
      sleep 2
      pids=$(ip netns pids "${NS[$r]}" | tr '\n' ' ')
      # shellcheck disable=SC2086
      [[ -z ${pids// /} ]] || kill -KILL $pids 2>/dev/null || true
    fi
  done
  net_down
}

main() {
  local cmd=${1:-}
  [[ -n $cmd ]] || { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
  shift
  case $cmd in
    up) cmd_up ;;
    env) cmd_env ;;
    status) cmd_status ;;
    partition) cmd_partition ;;
    heal) cmd_heal ;;
    restart-parley) cmd_restart_parley "$@" ;;
    nodetool) check_region "${1:-}"; need_up; nodetool_logback "$1"; nodetool "$@" ;;
    cqlsh)
      check_region "${1:-}"; need_up
      local r=$1
      shift
      [[ -x $DEPS_CACHE/venv/bin/cqlsh ]] || die "no $DEPS_CACHE/venv/bin/cqlsh (hack/regions.sh up installs it)"
      ip netns exec "${NS[$r]}" "$DEPS_CACHE/venv/bin/cqlsh" "${LINK_ADDR[$r]}" 9042 "$@"
      ;;
    down) lock; cmd_down; log "down: Parley and the backends stopped, namespaces deleted (data kept in $STATE)" ;;
    clean) lock; cmd_down; rm -rf "$STATE"; log "clean: $STATE deleted" ;;
    *) die "unknown command '$cmd' (want: up, env, status, partition, heal, restart-parley, nodetool, cqlsh, down, clean)" ;;
  esac
}

main "$@"
