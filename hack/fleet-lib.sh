# hack/fleet-lib.sh — shared by the scripts that run a distributed-mode fleet
# on this machine (bench-fleet.sh, bench-dist.sh); sourced, not run.
#
# The caller sets: root (repo dir), OUT (results dir), NAME (log prefix).
# It gets: log, a cleanup trap that stops every process started with
# fleet_start, fleet_build, fleet_migrate REGION [migrate flags...] (sets the
# `common` serve flags of the region), fleet_start NAME ARGS... (pid in
# FLEET_PID), fleet_wait_ready PORT..., fleet_port_free PORT....

log() { echo "$NAME: $*" >&2; }

fleet_pids=()
fleet_region=""
# fleet_cleanup stops the fleet, then drops the region fleet_migrate made
# (hack/deps.sh drop-region) unless KEEP_REGION=1: a benchmark series
# migrates a region per run, and they piled up in the test backends
# (hack/deps.sh, drop_region).
fleet_cleanup() {
	for p in "${fleet_pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${fleet_pids[@]}"; do wait "$p" 2>/dev/null || true; done
	if [[ -n $fleet_region && ${KEEP_REGION:-} != 1 ]]; then
		"$root/hack/deps.sh" drop-region "$fleet_region" >"$OUT/drop-region.log" 2>&1 ||
			log "dropping region $fleet_region failed; see $OUT/drop-region.log"
	fi
}
trap fleet_cleanup EXIT

# fleet_build: the backends up (hack/deps.sh), parley built into $OUT, or
# the binary $PARLEY_BIN copied there (to compare two builds on one set of
# warm backends).
fleet_build() {
	"$root/hack/deps.sh" up redis kafka cassandra
	if [[ -n ${PARLEY_BIN:-} ]]; then
		log "using $PARLEY_BIN"
		cp "$PARLEY_BIN" "$OUT/parley"
		return
	fi
	log "building parley"
	(cd "$root" && go build -o "$OUT/parley" ./runtime/cmd/parley)
}

# fleet_migrate REGION [flags]: a fresh region (keyspace, topics, Redis key
# prefix of its own) on the local backends, dropped at exit (fleet_cleanup).
fleet_migrate() {
	local region=$1
	shift
	fleet_region=$region
	common=(--region "$region" --cassandra-hosts 127.0.0.1:9042 --cassandra-keyspace "$region"
		--kafka-brokers 127.0.0.1:9092 --redis-addr 127.0.0.1:6379 --redis-key-prefix "$region:")
	log "migrating region $region"
	"$OUT/parley" migrate --region "$region" --cassandra-hosts 127.0.0.1:9042 --cassandra-keyspace "$region" \
		--replication-factor 1 --kafka-brokers 127.0.0.1:9092 "$@" >"$OUT/migrate.log" 2>&1
}

# fleet_start NAME ARGS...: `parley serve` with the region's flags, logging
# to $OUT/NAME.log; its pid in FLEET_PID.
fleet_start() {
	local name=$1
	shift
	"$OUT/parley" serve "${common[@]}" "$@" >"$OUT/$name.log" 2>&1 &
	FLEET_PID=$!
	fleet_pids+=("$FLEET_PID")
}

# fleet_port_free PORT...: fail when something already listens there.
fleet_port_free() {
	local port
	for port in "$@"; do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			log "port 127.0.0.1:$port is taken (another fleet still running?); stop it first"
			exit 1
		fi
	done
}

# fleet_wait_ready PORT...: wait up to 60 s for each /readyz, then check
# that no started process has exited.
fleet_wait_ready() {
	local port p
	for port in "$@"; do
		for _ in $(seq 600); do
			curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
			sleep 0.1
		done
		curl -fs "http://127.0.0.1:$port/readyz" >/dev/null || { log "127.0.0.1:$port not ready; see $OUT/*.log"; exit 1; }
	done
	for p in "${fleet_pids[@]}"; do
		kill -0 "$p" 2>/dev/null || { log "a Parley process exited at start; see $OUT/*.log"; exit 1; }
	done
}
