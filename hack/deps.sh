#!/usr/bin/env bash
# hack/deps.sh — real backend servers for the conformance tests, on 127.0.0.1 only
# (another address with PARLEY_DEPS_HOST, e.g. inside a network namespace: hack/regions.sh).
#
#   hack/deps.sh up     [redis] [kafka] [cassandra]   install what is missing, start, wait until ready
#   hack/deps.sh status [redis] [kafka] [cassandra]   print each server's state (exit 1 if one is not ready)
#   hack/deps.sh down   [redis] [kafka] [cassandra]   stop what this script started (pidfiles)
#   hack/deps.sh clean  [redis] [kafka] [cassandra]   down, then delete the servers' data (not the jar/pip caches)
#   hack/deps.sh drop-region REGION [KEYSPACE]        delete one Parley region's topics, keyspace and Redis keys
#
# No names given = all three. See hack/README.md for the details and the environment knobs.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$HACK_DIR/.." && pwd)
STATE=${PARLEY_DEPS_DIR:-$REPO_DIR/.deps}
# Where the resolved jar classpaths and the cqlsh venv live (the jars themselves stay in ~/.m2);
# several state dirs can share one (hack/regions.sh points its regions at the default state dir).
CACHE=${PARLEY_DEPS_CACHE_DIR:-$STATE}

REDIS_PORT=${PARLEY_REDIS_PORT:-6379}

KAFKA_VERSION=${PARLEY_KAFKA_VERSION:-4.3.1}
LOG4J_VERSION=${PARLEY_LOG4J_VERSION:-2.25.4} # the log4j2 that Kafka 4.3.1 declares; pinned with its slf4j binding
KAFKA_PORT=${PARLEY_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${PARLEY_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}
KAFKA_HEAP=${PARLEY_KAFKA_HEAP:-512m}
KAFKA_AUTO_CREATE=${PARLEY_KAFKA_AUTO_CREATE_TOPICS:-false}

CASSANDRA_VERSION=${PARLEY_CASSANDRA_VERSION:-5.0.9}
CASSANDRA_PORT=${PARLEY_CASSANDRA_PORT:-9042}
CASSANDRA_STORAGE_PORT=${PARLEY_CASSANDRA_STORAGE_PORT:-7000}
CASSANDRA_JMX_PORT=${PARLEY_CASSANDRA_JMX_PORT:-7199}
CASSANDRA_HEAP=${PARLEY_CASSANDRA_HEAP:-1G}
# Multi-node / multi-datacenter clusters (hack/regions.sh); unset = one node with SimpleSnitch.
CASSANDRA_DC=${PARLEY_CASSANDRA_DC:-}
CASSANDRA_RACK=${PARLEY_CASSANDRA_RACK:-rack1}
# Hinted handoff: off for the one-node test server (nothing to hand off to), on when the node is
# one datacenter of several (hack/regions.sh): a write made while the other datacenter was cut
# off reaches it after the heal, as in production (docs/multi-region.md).
CASSANDRA_HINTS=${PARLEY_CASSANDRA_HINTS:-$([[ -n ${PARLEY_CASSANDRA_DC:-} ]] && echo true || echo false)}
CASSANDRA_SNITCH=${PARLEY_CASSANDRA_SNITCH:-$([[ -n $CASSANDRA_DC ]] && echo GossipingPropertyFileSnitch || echo SimpleSnitch)}
CASSANDRA_AUTO_BOOTSTRAP=${PARLEY_CASSANDRA_AUTO_BOOTSTRAP:-}
CQLSH_VERSION=${PARLEY_CQLSH_VERSION:-6.2.2}

# Timer slack (prctl(2) PR_SET_TIMERSLACK, in ns) of the Kafka and Cassandra JVMs; the kernel's
# default is 50 us. Cassandra's shared worker pool parks idle workers for 10 us at a time
# (SEPWorker) for up to ~10 ms after each task, and on a small shared machine those wake-ups
# were a third of its CPU: with 200 us it used 30 % less CPU per send at 100 DM sends/s and 15 %
# less at 2,000/s, for about +0.25 ms per request (docs/benchmarks.md, issue 11, eighth session).
# 0 keeps the kernel's default.
JVM_TIMER_SLACK_NS=${PARLEY_JVM_TIMER_SLACK_NS:-200000}

REDIS_TIMEOUT=${PARLEY_REDIS_TIMEOUT:-30}
KAFKA_TIMEOUT=${PARLEY_KAFKA_TIMEOUT:-180}
CASSANDRA_TIMEOUT=${PARLEY_CASSANDRA_TIMEOUT:-300}

MVN_DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
HOST=${PARLEY_DEPS_HOST:-127.0.0.1}
CASSANDRA_SEEDS=${PARLEY_CASSANDRA_SEEDS:-$HOST:$CASSANDRA_STORAGE_PORT}
ALL=(redis kafka cassandra)

log() { printf '[deps] %s\n' "$*" >&2; }
die() { printf '[deps] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- generic helpers

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# jvm_timer_slack sets the calling (sub)shell's timer slack to JVM_TIMER_SLACK_NS before it
# execs a JVM: the value is kept across execve and inherited by every thread the JVM starts.
# Best effort: a kernel without /proc/PID/timerslack_ns (before 4.6) keeps its default.
jvm_timer_slack() {
  [[ $JVM_TIMER_SLACK_NS == 0 ]] && return 0
  echo "$JVM_TIMER_SLACK_NS" >"/proc/$BASHPID/timerslack_ns" 2>/dev/null ||
    log "timer slack: could not set /proc/$BASHPID/timerslack_ns; the JVM keeps the kernel's default"
}

# pid_of NAME: the pid in NAME's pidfile if that process is alive and is ours (marker check).
pid_of() {
  local name=$1 pidfile="$STATE/$1/$1.pid" pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  case $name in
    redis) [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */redis-server* || $(readlink "/proc/$pid/exe" 2>/dev/null) == */redis-check-rdb* ]] || return 1 ;;
    *) local cmdline
       cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
       [[ $cmdline == *"-Dparley.deps=$name "* ]] || return 1 ;;
  esac
  printf '%s\n' "$pid"
}

stop_pid() { # stop_pid NAME PID GRACE_SECONDS
  local name=$1 pid=$2 grace=$3 i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  log "$name (pid $pid) still alive after ${grace}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.5
}

# launched NAME: after a background launch, wait until the subshell has exec'd into the server.
launched() {
  local name=$1 i
  for ((i = 0; i < 50; i++)); do
    pid_of "$name" >/dev/null && return 0
    kill -0 "$(<"$STATE/$name/$name.pid")" 2>/dev/null || break
    sleep 0.1
  done
  tail_log "$STATE/$name/$name.out"
  die "$name: failed to launch"
}

tail_log() { # tail_log FILE...
  local f
  for f in "$@"; do
    [[ -s $f ]] || continue
    printf -- '----- last lines of %s -----\n' "$f" >&2
    tail -n 40 "$f" >&2
  done
}

apt_install() { # apt_install PKG...
  export DEBIAN_FRONTEND=noninteractive
  local created_policy=""
  # Never let the package's init script start a system-wide server on our port.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && created_policy=1
  fi
  local rc=0
  if ! apt-get install -y -q "$@" >"$STATE/apt.log" 2>&1; then
    log "apt-get install $* failed; running apt-get update once and retrying"
    { apt-get update -q && apt-get install -y -q "$@"; } >>"$STATE/apt.log" 2>&1 || rc=$?
  fi
  [[ -n $created_policy ]] && rm -f /usr/sbin/policy-rc.d
  if ((rc != 0)); then tail_log "$STATE/apt.log"; die "apt-get install $* failed (log: $STATE/apt.log)"; fi
}

JAVA=""
find_java() { # a JDK 17: Kafka 4 needs >= 17, Cassandra 5.0 runs on 11 or 17 only
  [[ -n $JAVA ]] && return 0
  local cand c major
  cand=()
  [[ -n ${PARLEY_JAVA_HOME:-} ]] && cand+=("$PARLEY_JAVA_HOME/bin/java")
  [[ -n ${JAVA_HOME:-} ]] && cand+=("$JAVA_HOME/bin/java")
  command -v java >/dev/null 2>&1 && cand+=("$(command -v java)")
  for c in /usr/lib/jvm/*17*/bin/java; do [[ -x $c ]] && cand+=("$c"); done
  for c in "${cand[@]}"; do
    [[ -x $c ]] || continue
    major=$("$c" -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1") ? v[2] : v[1]; exit}')
    if [[ $major == 17 ]]; then JAVA=$c; return 0; fi
  done
  log "no JDK 17 found; installing openjdk-17-jre-headless"
  apt_install openjdk-17-jre-headless
  for c in /usr/lib/jvm/*17*/bin/java; do [[ -x $c ]] && { JAVA=$c; break; }; done
  [[ -n $JAVA ]] || die "no Java 17 after installing openjdk-17-jre-headless"
}

need_mvn() {
  command -v mvn >/dev/null 2>&1 && return 0
  log "mvn not found; installing Debian's maven"
  apt_install maven
}

# resolve_classpath DIR ID DEPS_XML: writes DIR/classpath-ID.txt (jars stay in ~/.m2) and prints its path.
classpath_ok() { # classpath_ok FILE: it exists and every jar it names is there
  [[ -s $1 ]] || return 1
  local jar
  while IFS= read -r jar; do [[ -f $jar ]] || return 1; done < <(tr ':' '\n' <"$1")
}
resolve_classpath() {
  local id=$2 deps=$3 cp="$1/classpath-$2.txt" pomdir="$1/pom-$2"
  classpath_ok "$cp" && { printf '%s\n' "$cp"; return 0; }
  cache_lock # (in the caller's $(...) subshell: released when it exits)
  classpath_ok "$cp" && { printf '%s\n' "$cp"; return 0; }
  need_mvn
  mkdir -p "$pomdir"
  cat >"$pomdir/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- generated by hack/deps.sh: only used to resolve the server's jars from Maven Central -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>parley.hack</groupId>
  <artifactId>deps-$id</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
$deps
  </dependencies>
</project>
EOF
  log "resolving $id jars with Maven (cached in ~/.m2)"
  if ! (cd "$pomdir" && mvn -B -q -Dstyle.color=never -f pom.xml "$MVN_DEP_PLUGIN:build-classpath" \
    -Dmdep.outputFile="$cp.tmp" -Dmdep.includeScope=runtime) >"$pomdir/mvn.log" 2>&1; then
    sed 's/\x1b\[[0-9;]*m//g' "$pomdir/mvn.log" | grep -m2 -E '^\[ERROR\] (Failed|.*[Cc]ould not)' >&2 \
      || tail -n 40 "$pomdir/mvn.log" >&2
    die "Maven could not resolve $id (full log: $pomdir/mvn.log)"
  fi
  mv "$cp.tmp" "$cp"
  printf '%s\n' "$cp"
}

dep_xml() { # dep_xml GROUP ARTIFACT VERSION
  printf '    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version></dependency>\n' "$1" "$2" "$3"
}

# cache_lock / cache_unlock: around writes to a cache dir shared with other state dirs, hold the lock
# that `up` of the cache dir's own state dir holds (no-op when the cache is this state dir: fd 9 has it).
cache_lock() {
  [[ $CACHE == "$STATE" ]] && return 0
  mkdir -p "$CACHE"
  exec 8>"$CACHE/.lock"
  flock -w 900 8 || die "another hack/deps.sh holds $CACHE/.lock"
}
cache_unlock() { [[ $CACHE == "$STATE" ]] || exec 8>&-; }

# ---------------------------------------------------------------- redis

redis_ready() { [[ $(redis-cli -h "$HOST" -p "$REDIS_PORT" PING 2>/dev/null) == PONG ]]; }

redis_start() {
  local d="$STATE/redis" pid protected=yes
  # Protected mode refuses clients that are not on loopback: on for 127.0.0.1, off on another address
  # (a private network namespace's, whose clients connect from that same address).
  [[ $HOST == 127.* ]] || protected=no
  mkdir -p "$d"
  if pid=$(pid_of redis) && redis_ready; then
    log "redis: already running (pid $pid) and ready on $HOST:$REDIS_PORT"
    return 0
  fi
  if ! pid_of redis >/dev/null && redis_ready; then
    log "redis: a server not started by deps.sh already answers PONG on $HOST:$REDIS_PORT; using it"
    return 0
  fi
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    log "redis: installing Debian's redis-server"
    apt_install redis-server
  fi
  pid_of redis >/dev/null || {
    port_open "$REDIS_PORT" && die "redis: port $HOST:$REDIS_PORT is taken by something that is not a ready Redis"
    : >"$d/redis.log"
    redis-server --bind "$HOST" --port "$REDIS_PORT" --daemonize yes \
      --pidfile "$d/redis.pid" --logfile "$d/redis.log" --dir "$d" \
      --save '' --appendonly no --protected-mode "$protected" 9>&- \
      || { tail_log "$d/redis.log"; die "redis-server failed to start"; }
  }
  REDIS_STARTED=1
}

redis_wait() {
  local d="$STATE/redis" deadline=$((SECONDS + REDIS_TIMEOUT))
  [[ -n ${REDIS_STARTED:-} ]] || return 0
  until redis_ready; do
    if ((SECONDS > deadline)); then tail_log "$d/redis.log"; die "redis: not ready after ${REDIS_TIMEOUT}s"; fi
    sleep 0.2
  done
  log "redis: ready on $HOST:$REDIS_PORT (pid $(pid_of redis || echo '?'); log: $d/redis.log)"
}

redis_status() {
  local pid
  if pid=$(pid_of redis); then
    if redis_ready; then echo "redis      running (pid $pid), ready on $HOST:$REDIS_PORT    log: $STATE/redis/redis.log"; return 0; fi
    echo "redis      running (pid $pid), NOT answering PING on $HOST:$REDIS_PORT    log: $STATE/redis/redis.log"; return 1
  fi
  if redis_ready; then echo "redis      ready on $HOST:$REDIS_PORT (not started by deps.sh)"; return 0; fi
  echo "redis      stopped"; return 1
}

# ---------------------------------------------------------------- kafka

KAFKA_CP=""
kafka_classpath() {
  [[ -n $KAFKA_CP ]] && return 0
  local deps cpfile
  deps=$(
    dep_xml org.apache.kafka kafka_2.13 "$KAFKA_VERSION"
    dep_xml org.apache.kafka kafka-tools "$KAFKA_VERSION"
    dep_xml org.apache.logging.log4j log4j-api "$LOG4J_VERSION"
    dep_xml org.apache.logging.log4j log4j-core "$LOG4J_VERSION"
    dep_xml org.apache.logging.log4j log4j-slf4j-impl "$LOG4J_VERSION"
  )
  cpfile=$(resolve_classpath "$CACHE/kafka" "kafka-$KAFKA_VERSION" "$deps")
  KAFKA_CP=$(<"$cpfile")
}

# kafka_tool MAINCLASS ARGS...: one of Kafka's own CLI classes, small heap, warnings only on stderr.
kafka_tool() {
  local main=$1; shift
  timeout 90 "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="file:$STATE/kafka/tools-log4j2.properties" \
    -cp "$KAFKA_CP" "$main" "$@"
}

kafka_write_config() {
  local d="$STATE/kafka"
  mkdir -p "$d/data" "$d/logs"
  cat >"$d/server.properties" <<EOF
# generated by hack/deps.sh — single-node KRaft (combined broker + controller) on loopback
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$d/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=$KAFKA_AUTO_CREATE
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
log.segment.bytes=67108864
EOF
  cat >"$d/log4j2.properties" <<'EOF'
# generated by hack/deps.sh
status = warn
name = parley-kafka
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
  cat >"$d/tools-log4j2.properties" <<'EOF'
# generated by hack/deps.sh: Kafka CLI classes log warnings to stderr only
status = error
name = parley-kafka-tools
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
}

# The real readiness check: create a topic (if missing), produce one record, consume that record.
kafka_ready() {
  local topic=parley-deps-ready token offset got bs="$HOST:$KAFKA_PORT"
  port_open "$KAFKA_PORT" || return 1
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" --create --if-not-exists \
    --topic "$topic" --partitions 1 --replication-factor 1 >/dev/null 2>"$STATE/kafka/check.err" || return 1
  offset=$(kafka_tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "$bs" --topic "$topic" \
    --partitions 0 --time -1 2>>"$STATE/kafka/check.err" | awk -F: -v t="$topic" '$1 == t && $2 == 0 {print $3}')
  [[ $offset =~ ^[0-9]+$ ]] || return 1
  token="ping-$$-$RANDOM-$(date +%s%N)"
  printf '%s\n' "$token" | kafka_tool org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$bs" \
    --topic "$topic" --producer-property acks=all >/dev/null 2>>"$STATE/kafka/check.err" || return 1
  got=$(kafka_tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$bs" --topic "$topic" \
    --partition 0 --offset "$offset" --max-messages 1 --timeout-ms 30000 2>>"$STATE/kafka/check.err") || return 1
  [[ $got == "$token" ]]
}

kafka_start() {
  local d="$STATE/kafka" pid
  mkdir -p "$d"
  find_java
  if pid=$(pid_of kafka); then
    kafka_classpath
    if kafka_ready; then log "kafka: already running (pid $pid) and ready on $HOST:$KAFKA_PORT"; return 0; fi
    log "kafka: running (pid $pid) but not ready yet; waiting"
    KAFKA_STARTED=1
    return 0
  fi
  if port_open "$KAFKA_PORT"; then
    kafka_classpath
    if kafka_ready; then log "kafka: a broker not started by deps.sh is ready on $HOST:$KAFKA_PORT; using it"; return 0; fi
    die "kafka: port $HOST:$KAFKA_PORT is taken by something that is not a ready Kafka"
  fi
  port_open "$KAFKA_CONTROLLER_PORT" && die "kafka: controller port $HOST:$KAFKA_CONTROLLER_PORT is taken"
  kafka_classpath
  kafka_write_config
  if [[ ! -f $d/data/meta.properties ]]; then
    local cid
    cid=$(kafka_tool kafka.tools.StorageTool random-uuid 2>"$d/format.log" | tail -n1)
    [[ -n $cid ]] || { tail_log "$d/format.log"; die "kafka: StorageTool random-uuid failed"; }
    kafka_tool kafka.tools.StorageTool format --cluster-id "$cid" --config "$d/server.properties" \
      >>"$d/format.log" 2>&1 || { tail_log "$d/format.log"; die "kafka: storage format failed"; }
    log "kafka: formatted KRaft storage (cluster id $cid) in $d/data"
  fi
  : >"$d/kafka.out"
  (
    cd "$d"
    jvm_timer_slack
    exec setsid "$JAVA" -Xms256m -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Djava.awt.headless=true -Dparley.deps=kafka \
      -Dkafka.logs.dir="$d/logs" -Dlog4j2.configurationFile="file:$d/log4j2.properties" \
      -cp "$KAFKA_CP" kafka.Kafka "$d/server.properties" </dev/null >>"$d/kafka.out" 2>&1 9>&-
  ) &
  echo $! >"$d/kafka.pid"
  launched kafka
  log "kafka: started $KAFKA_VERSION (pid $(<"$d/kafka.pid")) on $HOST:$KAFKA_PORT"
  KAFKA_STARTED=1
}

kafka_wait() {
  local d="$STATE/kafka" deadline=$((SECONDS + KAFKA_TIMEOUT))
  [[ -n ${KAFKA_STARTED:-} ]] || return 0
  while :; do
    pid_of kafka >/dev/null || { tail_log "$d/kafka.out" "$d/logs/server.log"; die "kafka: process exited during startup"; }
    if port_open "$KAFKA_PORT" && kafka_ready; then break; fi
    if ((SECONDS > deadline)); then
      tail_log "$d/check.err" "$d/logs/server.log"; die "kafka: not ready after ${KAFKA_TIMEOUT}s"
    fi
    sleep 1
  done
  log "kafka: ready on $HOST:$KAFKA_PORT (topic created, record produced and consumed; log: $d/logs/server.log)"
}

kafka_status() {
  local pid
  if pid=$(pid_of kafka); then
    find_java; kafka_classpath
    if kafka_ready; then echo "kafka      running (pid $pid), ready on $HOST:$KAFKA_PORT    log: $STATE/kafka/logs/server.log"; return 0; fi
    echo "kafka      running (pid $pid), NOT ready on $HOST:$KAFKA_PORT    log: $STATE/kafka/logs/server.log"; return 1
  fi
  if port_open "$KAFKA_PORT"; then echo "kafka      stopped here, but something listens on $HOST:$KAFKA_PORT"; return 1; fi
  echo "kafka      stopped"; return 1
}

# ---------------------------------------------------------------- cassandra

CASSANDRA_CP=""
cassandra_classpath() {
  [[ -n $CASSANDRA_CP ]] && return 0
  local cpfile
  cpfile=$(resolve_classpath "$CACHE/cassandra" "cassandra-$CASSANDRA_VERSION" \
    "$(dep_xml org.apache.cassandra cassandra-all "$CASSANDRA_VERSION")")
  CASSANDRA_CP=$(<"$cpfile")
}

CQLSH=""
need_cqlsh() {
  [[ -n $CQLSH ]] && return 0
  local venv="$CACHE/venv"
  cqlsh_ok() { [[ -x $venv/bin/cqlsh ]] && grep -qs "^$CQLSH_VERSION\$" "$venv/.cqlsh-version"; }
  cqlsh_ok || cache_lock
  if ! cqlsh_ok; then
    log "cassandra: installing cqlsh $CQLSH_VERSION from PyPI into $venv"
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
    python3 -m venv "$venv" >"$STATE/pip.log" 2>&1 || { tail_log "$STATE/pip.log"; die "python3 -m venv failed"; }
    "$venv/bin/pip" install -q --disable-pip-version-check "cqlsh==$CQLSH_VERSION" >>"$STATE/pip.log" 2>&1 \
      || { tail_log "$STATE/pip.log"; die "pip install cqlsh==$CQLSH_VERSION failed"; }
    echo "$CQLSH_VERSION" >"$venv/.cqlsh-version"
  fi
  cache_unlock
  CQLSH="$venv/bin/cqlsh"
}

# The real readiness check: a CQL query answered by the node.
cassandra_query() {
  need_cqlsh
  timeout 60 "$CQLSH" "$HOST" "$CASSANDRA_PORT" --connect-timeout=10 --request-timeout=20 \
    -e "SELECT release_version FROM system.local" 2>"$STATE/cassandra/check.err" \
    | awk 'NF == 1 && $1 ~ /^[0-9]+\.[0-9]+/ {print $1; exit}'
}
cassandra_ready() {
  port_open "$CASSANDRA_PORT" || return 1
  local v
  v=$(cassandra_query) && [[ -n $v ]] && CASSANDRA_SEEN_VERSION=$v
}

cassandra_write_config() {
  local d="$STATE/cassandra"
  mkdir -p "$d/data/data" "$d/data/commitlog" "$d/data/saved_caches" "$d/data/hints" "$d/data/cdc_raw" "$d/logs"
  cat >"$d/cassandra.yaml" <<EOF
# generated by hack/deps.sh — single test node on loopback (Cassandra 5.0 key names)
cluster_name: parley-test
num_tokens: 16
allocate_tokens_for_local_replication_factor: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: $CASSANDRA_SNITCH
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$CASSANDRA_SEEDS"
listen_address: $HOST
rpc_address: $HOST
storage_port: $CASSANDRA_STORAGE_PORT
native_transport_port: $CASSANDRA_PORT
start_native_transport: true
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
role_manager: CassandraRoleManager
network_authorizer: AllowAllNetworkAuthorizer
data_file_directories:
  - $d/data/data
commitlog_directory: $d/data/commitlog
saved_caches_directory: $d/data/saved_caches
hints_directory: $d/data/hints
cdc_raw_directory: $d/data/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 32MiB
disk_failure_policy: stop
commit_failure_policy: stop
hinted_handoff_enabled: $CASSANDRA_HINTS
auto_snapshot: false
snapshot_on_duplicate_row_detection: false
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
concurrent_compactors: 1
memtable_heap_space: 128MiB
memtable_offheap_space: 128MiB
file_cache_size: 64MiB
key_cache_size: 16MiB
counter_cache_size: 8MiB
compaction_throughput: 64MiB/s
read_request_timeout: 10000ms
range_request_timeout: 10000ms
write_request_timeout: 5000ms
counter_write_request_timeout: 5000ms
cas_contention_timeout: 2000ms
# Paxos stays v1 on this single test node (docs/operations.md, "Backend
# settings"): v2 saves round trips between replicas, which one node does not
# have (no CPU or latency gain measured here, issue 11), and v2 counts its
# quorum over the replicas that exist, so test/fleet's Cassandra outage
# (RF raised above the node count) would no longer be one.
paxos_variant: v1
truncate_request_timeout: 60000ms
request_timeout: 10000ms
batch_size_warn_threshold: 64KiB
batch_size_fail_threshold: 640KiB
materialized_views_enabled: false
sasi_indexes_enabled: false
user_defined_functions_enabled: false
EOF
  if [[ -n $CASSANDRA_AUTO_BOOTSTRAP ]]; then
    printf 'auto_bootstrap: %s\n' "$CASSANDRA_AUTO_BOOTSTRAP" >>"$d/cassandra.yaml"
  fi
  if [[ -n $CASSANDRA_DC ]]; then
    printf '# generated by hack/deps.sh (GossipingPropertyFileSnitch)\ndc=%s\nrack=%s\n' \
      "$CASSANDRA_DC" "$CASSANDRA_RACK" >"$d/cassandra-rackdc.properties"
  fi
  cat >"$d/logback.xml" <<'EOF'
<!-- generated by hack/deps.sh -->
<configuration scan="false">
  <appender name="SYSTEMLOG" class="ch.qos.logback.core.FileAppender">
    <file>${cassandra.logdir}/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="SYSTEMLOG" /></root>
  <logger name="org.apache.cassandra" level="INFO" />
  <logger name="com.thinkaurelius.thrift" level="ERROR" />
</configuration>
EOF
}

cassandra_start() {
  local d="$STATE/cassandra" pid
  mkdir -p "$d"
  find_java
  if pid=$(pid_of cassandra); then
    if cassandra_ready; then log "cassandra: already running (pid $pid) and ready on $HOST:$CASSANDRA_PORT"; return 0; fi
    log "cassandra: running (pid $pid) but not ready yet; waiting"
    CASSANDRA_STARTED=1
    return 0
  fi
  if port_open "$CASSANDRA_PORT"; then
    if cassandra_ready; then log "cassandra: a node not started by deps.sh is ready on $HOST:$CASSANDRA_PORT; using it"; return 0; fi
    die "cassandra: port $HOST:$CASSANDRA_PORT is taken by something that is not a ready Cassandra"
  fi
  port_open "$CASSANDRA_STORAGE_PORT" && die "cassandra: storage port $HOST:$CASSANDRA_STORAGE_PORT is taken"
  cassandra_classpath
  need_cqlsh
  cassandra_write_config
  local jamm
  # A loop, not `tr | grep -m1`: under pipefail grep's early exit can fail the pipeline (SIGPIPE).
  local entry entries
  jamm=""
  IFS=: read -ra entries <<<"$CASSANDRA_CP"
  for entry in "${entries[@]}"; do
    if [[ $entry =~ /jamm-[^/]*\.jar$ ]]; then
      jamm=$entry
      break
    fi
  done
  [[ -n $jamm ]] || die "cassandra: no jamm jar in the classpath"
  local jmx=()
  # JMX listens on loopback only (a local port), so its RMI stubs must name loopback whatever HOST is.
  [[ $CASSANDRA_JMX_PORT != 0 ]] && jmx=(-Dcassandra.jmx.local.port="$CASSANDRA_JMX_PORT" -Djava.rmi.server.hostname=127.0.0.1)
  local rackdc=()
  [[ -n $CASSANDRA_DC ]] && rackdc=(-Dcassandra-rackdc.properties="file://$d/cassandra-rackdc.properties")
  # The --add-exports/--add-opens list and GC settings are those of Cassandra 5.0's conf/jvm17-server.options.
  local opts=(
    -Xms"$CASSANDRA_HEAP" -Xmx"$CASSANDRA_HEAP"
    -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1 -XX:G1HeapRegionSize=16m
    -XX:G1RSetUpdatingPauseTimePercent=5 -XX:MaxGCPauseMillis=300 -XX:InitiatingHeapOccupancyPercent=70
    -XX:+HeapDumpOnOutOfMemoryError -XX:HeapDumpPath="$d/logs" -XX:+CrashOnOutOfMemoryError
    -XX:+PerfDisableSharedMem
    -Djdk.attach.allowAttachSelf=true
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED
    --add-exports java.base/java.lang.ref=ALL-UNNAMED
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens java.base/java.lang.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.io=ALL-UNNAMED
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
    --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.util=ALL-UNNAMED
    -Dio.netty.tryReflectionSetAccessible=true
    -Dio.netty.allocator.useCacheForAllThreads=true
    -Dio.netty.allocator.maxOrder=11
    -javaagent:"$jamm"
    -Djava.net.preferIPv4Stack=true
    -Djava.awt.headless=true
    -Dcassandra-foreground=yes
    -Dcassandra.config="file://$d/cassandra.yaml"
    -Dcassandra.storagedir="$d/data"
    -Dcassandra.logdir="$d/logs"
    -Dlogback.configurationFile="file://$d/logback.xml"
    -Dcassandra.skip_wait_for_gossip_to_settle=0
    -Dcassandra.superuser_setup_delay_ms=0
    -Dcassandra.ring_delay_ms=1000
    "${jmx[@]}"
    "${rackdc[@]}"
    -Dparley.deps=cassandra
  )
  : >"$d/cassandra.out"
  (
    cd "$d"
    jvm_timer_slack
    exec setsid "$JAVA" "${opts[@]}" -cp "$CASSANDRA_CP" org.apache.cassandra.service.CassandraDaemon \
      </dev/null >>"$d/cassandra.out" 2>&1 9>&-
  ) &
  echo $! >"$d/cassandra.pid"
  launched cassandra
  log "cassandra: started $CASSANDRA_VERSION (pid $(<"$d/cassandra.pid")) on $HOST:$CASSANDRA_PORT (heap $CASSANDRA_HEAP)"
  CASSANDRA_STARTED=1
}

cassandra_wait() {
  local d="$STATE/cassandra" deadline=$((SECONDS + CASSANDRA_TIMEOUT))
  [[ -n ${CASSANDRA_STARTED:-} ]] || return 0
  while :; do
    pid_of cassandra >/dev/null || { tail_log "$d/cassandra.out" "$d/logs/system.log"; die "cassandra: process exited during startup"; }
    if port_open "$CASSANDRA_PORT" && cassandra_ready; then break; fi
    if ((SECONDS > deadline)); then
      tail_log "$d/check.err" "$d/logs/system.log"; die "cassandra: not ready after ${CASSANDRA_TIMEOUT}s"
    fi
    sleep 2
  done
  log "cassandra: ready on $HOST:$CASSANDRA_PORT (release_version $CASSANDRA_SEEN_VERSION; log: $d/logs/system.log)"
}

cassandra_status() {
  local pid
  if pid=$(pid_of cassandra); then
    if cassandra_ready; then echo "cassandra  running (pid $pid), ready on $HOST:$CASSANDRA_PORT (release_version $CASSANDRA_SEEN_VERSION)    log: $STATE/cassandra/logs/system.log"; return 0; fi
    echo "cassandra  running (pid $pid), NOT ready on $HOST:$CASSANDRA_PORT    log: $STATE/cassandra/logs/system.log"; return 1
  fi
  if port_open "$CASSANDRA_PORT"; then
    if cassandra_ready; then echo "cassandra  ready on $HOST:$CASSANDRA_PORT (not started by deps.sh)"; return 0; fi
    echo "cassandra  stopped here, but something listens on $HOST:$CASSANDRA_PORT"; return 1
  fi
  echo "cassandra  stopped"; return 1
}

# ---------------------------------------------------------------- commands

stop_one() {
  local name=$1 pid grace=30
  [[ $name == cassandra ]] && grace=60
  if pid=$(pid_of "$name"); then
    log "$name: stopping pid $pid"
    stop_pid "$name" "$pid" "$grace"
    log "$name: stopped"
  else
    log "$name: not running (no live pidfile)"
  fi
  rm -f "$STATE/$name/$name.pid"
}

# drop_region REGION [KEYSPACE]: delete what `parley migrate --region REGION
# --cassandra-keyspace KEYSPACE` (default: REGION) and a fleet with
# --redis-key-prefix REGION: made on these servers — the topics
# parley.REGION.*, the keyspace, the Redis keys REGION:* — so benchmark runs,
# which migrate a fresh region each (hack/fleet-lib.sh), do not pile up: a
# day of series had left 119 keyspaces (about 1,650 tables) and 2,634 topic
# partitions (879 MB of Kafka data). Their CPU cost was measured and found
# nil (docs/benchmarks.md, tenth session); what they do cost is disk and a
# schema that grows without bound. Servers that are down are skipped.
drop_region() {
  local region=${1:-} ks=${2:-${1:-}}
  [[ $region =~ ^[a-z0-9_]+$ && $ks =~ ^[a-z0-9_]+$ ]] ||
    die "drop-region: want REGION [KEYSPACE] of lowercase letters, digits and _ (got '${1:-}' '${2:-}')"
  if port_open "$KAFKA_PORT"; then
    find_java
    kafka_classpath
    kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_PORT" --delete --if-exists \
      --topic "parley\\.$region\\..*" >/dev/null || die "drop-region: deleting the topics parley.$region.* failed"
    log "kafka: topics parley.$region.* deleted"
  fi
  if port_open "$CASSANDRA_PORT"; then
    need_cqlsh
    timeout 120 "$CQLSH" "$HOST" "$CASSANDRA_PORT" --connect-timeout=10 --request-timeout=60 \
      -e "DROP KEYSPACE IF EXISTS $ks" || die "drop-region: DROP KEYSPACE $ks failed"
    log "cassandra: keyspace $ks dropped"
  fi
  if redis_ready; then
    local n
    n=$(redis-cli -h "$HOST" -p "$REDIS_PORT" --scan --pattern "$region:*" |
      xargs -r -n 500 redis-cli -h "$HOST" -p "$REDIS_PORT" unlink | awk '{ n += $1 } END { print n + 0 }')
    log "redis: $n keys $region:* deleted"
  fi
}

main() {
  local cmd=${1:-}
  [[ -n $cmd ]] || { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }
  shift
  if [[ $cmd == drop-region ]]; then
    drop_region "$@"
    return
  fi
  local svcs=("$@") s
  ((${#svcs[@]})) || svcs=("${ALL[@]}")
  for s in "${svcs[@]}"; do
    case $s in redis | kafka | cassandra) ;; *) die "unknown server '$s' (want: ${ALL[*]})" ;; esac
  done
  has() { local x; for x in "${svcs[@]}"; do [[ $x == "$1" ]] && return 0; done; return 1; }
  mkdir -p "$STATE"
  [[ -e $STATE/.gitignore ]] || printf '# generated by hack/deps.sh: the whole state dir stays out of git\n*\n' >"$STATE/.gitignore"
  if [[ $cmd == up || $cmd == down || $cmd == clean ]]; then
    # One up/down/clean at a time per state dir (servers are launched with fd 9 closed).
    exec 9>"$STATE/.lock"
    flock -w 900 9 || die "another hack/deps.sh holds $STATE/.lock"
  fi
  case $cmd in
    up)
      local t0=$SECONDS
      # Launch the slow one first so the JVMs boot side by side, then wait for each.
      has cassandra && cassandra_start
      has kafka && kafka_start
      has redis && redis_start
      has redis && redis_wait
      has kafka && kafka_wait
      has cassandra && cassandra_wait
      log "up: ${svcs[*]} ready in $((SECONDS - t0))s (state dir: $STATE)"
      ;;
    down)
      for s in "${svcs[@]}"; do stop_one "$s"; done
      ;;
    status)
      local rc=0
      for s in "${svcs[@]}"; do "${s}_status" || rc=1; done
      return $rc
      ;;
    clean)
      for s in "${svcs[@]}"; do
        stop_one "$s"
        case $s in
          redis) rm -rf "$STATE/redis" ;;
          kafka) rm -rf "$STATE/kafka/data" "$STATE/kafka/logs" ;;
          cassandra) rm -rf "$STATE/cassandra/data" "$STATE/cassandra/logs" ;;
        esac
        log "$s: data removed"
      done
      ;;
    *) die "unknown command '$cmd' (want: up, down, status, clean, drop-region)" ;;
  esac
}

main "$@"
