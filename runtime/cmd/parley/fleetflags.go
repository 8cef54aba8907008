package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/parleychat/parley/runtime/chat/ingress"
	"github.com/parleychat/parley/runtime/region"
	"github.com/parleychat/parley/runtime/server"
)

// fleetFlags are serve's flags of the distributed mode (server.FleetConfig).
type fleetFlags struct {
	fc             server.FleetConfig
	role           string
	nodeID         int64
	ingressParts   int
	deliverParts   int
	cassandraHosts []string
	kafkaBrokers   []string
	peers          []string
}

// addFleetFlags adds the distributed mode's flags to serve, and makes every
// flag of cmd settable from the environment: PARLEY_<FLAG> with dashes as
// underscores (e.g. PARLEY_KAFKA_BROKERS, PARLEY_REGION_ID) or from the
// YAML file of --config; a flag given on the command line wins, then the
// environment, then the file.
func addFleetFlags(cmd *cobra.Command, ff *fleetFlags) {
	f := cmd.Flags()
	f.StringVar(&ff.role, "role", string(server.RoleAll), "role of this process: all (every role in one process), gateway, chat, presence or push; "+
		"all without backend flags runs on embedded storage")
	f.StringSliceVar(&ff.cassandraHosts, "cassandra-hosts", nil, "Cassandra contact points, host[:port] (distributed mode)")
	f.StringVar(&ff.fc.Cassandra.Keyspace, "cassandra-keyspace", "parley", "Cassandra keyspace")
	f.StringVar(&ff.fc.Cassandra.LocalDC, "cassandra-local-dc", "", "this region's Cassandra datacenter (LOCAL_QUORUM is counted in it)")
	f.StringSliceVar(&ff.kafkaBrokers, "kafka-brokers", nil, "Kafka seed brokers, host:port (distributed mode)")
	f.DurationVar(&ff.fc.Kafka.SessionTimeout, "kafka-session-timeout", 30*time.Second,
		"consumer-group session timeout: how long a silent chat/presence/push process keeps its partitions (6s..30m)")
	f.DurationVar(&ff.fc.Kafka.PublishTimeout, "kafka-publish-timeout", server.DefaultFleetPublishTimeout,
		"how long a publish may wait for Kafka before the send is answered unavailable")
	f.StringVar(&ff.fc.Redis.Addr, "redis-addr", "", "Redis host:port for presence and the session registry (distributed mode)")
	f.StringVar(&ff.fc.Redis.KeyPrefix, "redis-key-prefix", "parley:", "prefix of every Redis key")
	f.IntVar(&ff.fc.RegionID, "region-id", 0, "region id 0..7 (top bits of Snowflake node ids)")
	f.StringVar(&ff.fc.GatewayID, "gateway-id", "", "gateway id ending in -N, N = its deliver partition (default $POD_NAME, else the host name)")
	f.StringVar(&ff.fc.Member, "member", "", "consumer-group member id, stable across restarts (default $POD_NAME, else the host name)")
	f.Int64Var(&ff.nodeID, "node-id", -1, "chat role's Snowflake node 0..1023 (also $PARLEY_NODE_ID; default region id << 7 | the ordinal of --member)")
	f.IntVar(&ff.ingressParts, "ingress-partitions", 0, "expected partitions of the ingress topic (checked when set; parley migrate creates them)")
	f.IntVar(&ff.deliverParts, "deliver-partitions", 0, "expected partitions of the deliver topic = max gateways (checked when set)")
	f.DurationVar(&ff.fc.RequestTimeout, "request-timeout", ingress.DefaultRequestTimeout, "gateway: deadline of a send or other request to the chat role; later, the send is answered timeout")
	f.DurationVar(&ff.fc.RouteTimeout, "route-timeout", server.DefaultRouteTimeout, "bound of a session-registry lookup when routing a message; slower means route to every gateway")
	f.StringVar(&ff.fc.Push.Webhook, "push-webhook", "", "URL that offline-push notifications are POSTed to (chat role publishes them, push role posts them)")
	f.IntVar(&ff.fc.Push.MaxAttempts, "push-attempts", 6, "POST attempts per push notification")
	f.DurationVar(&ff.fc.Push.BackoffMin, "push-backoff-min", 200*time.Millisecond, "first retry delay of a push (doubles up to --push-backoff-max, jittered)")
	f.DurationVar(&ff.fc.Push.BackoffMax, "push-backoff-max", 10*time.Second, "largest retry delay of a push")
	f.StringArrayVar(&ff.peers, "peer-region", nil, "another region of a multi-region deployment, repeated once per peer: "+
		"name=NAME,id=N,kafka=HOST:PORT[;HOST:PORT] (its region id and Kafka seed brokers; several may be given in one value separated by spaces; docs/multi-region.md)")
	f.StringVar(&ff.fc.PeerFile, "peer-region-file", "", "file listing other regions as --peer-region does (space or newline separated), "+
		"re-read every 10s so regions join and leave the mesh without a restart (the operator mounts it from a ConfigMap)")
	addConfigFlag(cmd)

	prev := cmd.PreRunE
	cmd.PreRunE = func(cmd *cobra.Command, args []string) error {
		if err := flagsFromEnvAndConfig(cmd); err != nil {
			return err
		}
		if prev != nil {
			return prev(cmd, args)
		}
		return nil
	}
}

// flagsFromEnv sets each flag not given on the command line from
// PARLEY_<NAME> (upper case, dashes as underscores) when that is set.
func flagsFromEnv(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(fl *pflag.Flag) {
		if err != nil || fl.Changed {
			return
		}
		name := "PARLEY_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if e := cmd.Flags().Set(fl.Name, v); e != nil {
			err = fmt.Errorf("environment %s: %w", name, e)
		}
	})
	return err
}

// distributed reports whether serve runs the distributed mode: a role
// other than all, or any backend configured.
func (ff *fleetFlags) distributed() bool {
	return (ff.role != "" && ff.role != string(server.RoleAll)) ||
		len(ff.cassandraHosts) > 0 || len(ff.kafkaBrokers) > 0 || ff.fc.Redis.Addr != ""
}

// newServer builds the embedded server, or one process of the distributed
// mode when ff asks for it.
func newServer(ctx context.Context, cfg server.Config, ff *fleetFlags) (*server.Server, error) {
	if !ff.distributed() {
		return server.New(ctx, cfg)
	}
	role, err := server.ParseRole(ff.role)
	if err != nil {
		return nil, err
	}
	fc := ff.fc
	fc.Role = role
	fc.Cassandra.Hosts = ff.cassandraHosts
	fc.Kafka.Brokers = ff.kafkaBrokers
	fc.NodeID = ff.nodeID
	fc.IngressPartitions, fc.DeliverPartitions = int32(ff.ingressParts), int32(ff.deliverParts)
	for _, v := range ff.peers {
		// One value may list several peers separated by spaces, so one
		// environment variable (PARLEY_PEER_REGION) can carry them all.
		ps, err := region.ParsePeers(v)
		if err != nil {
			return nil, fmt.Errorf("--peer-region: %w", err)
		}
		fc.Peers = append(fc.Peers, ps...)
	}
	return server.NewFleet(ctx, cfg, fc)
}
