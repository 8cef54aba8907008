package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/bus/kafka"
	"github.com/parleychat/parley/runtime/chat"
	"github.com/parleychat/parley/runtime/chat/ingress"
	"github.com/parleychat/parley/runtime/presence/relay"
	"github.com/parleychat/parley/runtime/push"
	"github.com/parleychat/parley/runtime/store/cassandra"
)

// migrateCmd creates or upgrades what the distributed mode needs before any
// process of a new version starts (the operator runs it as a Job): the
// Cassandra keyspace and tables, and the region's Kafka topics. Both are
// idempotent; a topic that exists with another partition count is an error
// (partitions are never added to a live topic: that would move
// conversations between sequencers).
func migrateCmd() *cobra.Command {
	var (
		hosts, brokers, replication         []string
		keyspace, region                    string
		rf                                  int
		ingressP, deliver, presenceP, pushP int
		kafkaRF                             int
		timeout                             time.Duration
		skipCassandra, skipKafka            bool
	)
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade the Cassandra schema and the region's Kafka topics (idempotent)",
		Args:  cobra.NoArgs,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			return flagsFromEnvAndConfig(cmd)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			if skipCassandra && skipKafka {
				return errors.New("nothing to do: both --skip-cassandra and --skip-kafka")
			}
			if !skipCassandra {
				if len(hosts) == 0 {
					return errors.New("--cassandra-hosts is required (or --skip-cassandra)")
				}
				dcs, err := parseReplication(replication)
				if err != nil {
					return err
				}
				if len(dcs) == 0 && rf <= 0 {
					return errors.New("set --replication dc=rf,... (NetworkTopologyStrategy, production) or --replication-factor N (SimpleStrategy, one datacenter)")
				}
				sess, err := cassandra.Connect(ctx, cassandra.Config{Hosts: hosts, Keyspace: keyspace})
				if err != nil {
					return err
				}
				err = cassandra.Migrate(ctx, sess, cassandra.Options{Keyspace: keyspace, Datacenters: dcs, ReplicationFactor: rf})
				sess.Close()
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "cassandra: keyspace %s at schema version %d\n", keyspace, cassandra.SchemaVersion)
			}
			if !skipKafka {
				if len(brokers) == 0 {
					return errors.New("--kafka-brokers is required (or --skip-kafka)")
				}
				if strings.ContainsAny(region, ". /:") || region == "" {
					return fmt.Errorf("--region %q must be a non-empty name without dots, slashes, colons or spaces", region)
				}
				b, err := kafka.New(ctx, kafka.Config{Brokers: brokers, ClientID: "parley-migrate", ReplicationFactor: int16(kafkaRF), Logger: slog.Default()})
				if err != nil {
					return err
				}
				defer func() { _ = b.Close() }()
				topics := []bus.Topic{
					{Name: ingress.IngressTopic(region), Partitions: int32(ingressP)},
					{Name: ingress.DeliverTopic(region), Partitions: int32(deliver)},
					{Name: relay.Topic(region), Partitions: int32(presenceP)},
					{Name: push.Topic(region), Partitions: int32(pushP)},
					// Multi-region (docs/multi-region.md): deliveries other
					// regions relay here, and requests waiting for their
					// home region; created in every region, used with
					// --peer-region.
					{Name: ingress.RelayTopic(region), Partitions: int32(ingressP)},
					{Name: ingress.OutboxTopic(region), Partitions: int32(ingressP)},
				}
				for _, t := range topics {
					if err := b.CreateTopic(ctx, t); err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "kafka: topic %s with %d partitions\n", t.Name, t.Partitions)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&hosts, "cassandra-hosts", nil, "Cassandra contact points, host[:port]")
	f.StringVar(&keyspace, "cassandra-keyspace", cassandra.DefaultKeyspace, "keyspace to create or upgrade")
	f.StringSliceVar(&replication, "replication", nil, "NetworkTopologyStrategy replication, one datacenter per region: dc=rf,... e.g. eu-west=3,us-east=3")
	f.IntVar(&rf, "replication-factor", 0, "SimpleStrategy replication factor (one-datacenter development clusters)")
	f.StringSliceVar(&brokers, "kafka-brokers", nil, "Kafka seed brokers, host:port")
	f.IntVar(&kafkaRF, "kafka-replication-factor", 1, "replication factor of new topics (3 in production)")
	f.StringVar(&region, "region", ingress.DefaultRegion, "region whose topics to create: parley.<region>.{ingress,deliver,presence,push,relay,outbox}")
	f.IntVar(&ingressP, "ingress-partitions", chat.DefaultIngressPartitions, "ingress partitions (the unit of chat-role parallelism; never changed on a live topic)")
	f.IntVar(&deliver, "deliver-partitions", 64, "deliver partitions = the most gateways the region can run (gateway -N reads partition N)")
	f.IntVar(&presenceP, "presence-partitions", relay.DefaultPartitions, "presence partitions (the unit of presence-role parallelism)")
	f.IntVar(&pushP, "push-partitions", push.DefaultPartitions, "push partitions (the unit of push-worker parallelism)")
	f.BoolVar(&skipCassandra, "skip-cassandra", false, "do not touch Cassandra")
	f.BoolVar(&skipKafka, "skip-kafka", false, "do not touch Kafka")
	f.DurationVar(&timeout, "timeout", 5*time.Minute, "give up after this long")
	addConfigFlag(cmd)
	return cmd
}

// parseReplication parses "dc=rf" items.
func parseReplication(items []string) (map[string]int, error) {
	if len(items) == 0 {
		return nil, nil
	}
	out := make(map[string]int, len(items))
	for _, it := range items {
		dc, v, ok := strings.Cut(it, "=")
		n, err := strconv.Atoi(v)
		if !ok || dc == "" || err != nil || n < 1 {
			return nil, fmt.Errorf("--replication %q: want datacenter=factor with factor >= 1", it)
		}
		if _, dup := out[dc]; dup {
			return nil, fmt.Errorf("--replication names datacenter %q twice", dc)
		}
		out[dc] = n
	}
	return out, nil
}
