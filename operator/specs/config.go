package specs

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
)

// Environment variable names of the runtime's config. The ConfigMap of a region and role holds
// them; the container reads it with envFrom and its args reference them as $(NAME), which the
// kubelet expands, so `kubectl get configmap` shows exactly what a pod runs with.
const (
	EnvRegion          = "PARLEY_REGION"
	EnvRegionID        = "PARLEY_REGION_ID"
	EnvRole            = "PARLEY_ROLE"
	EnvCassandraHosts  = "PARLEY_CASSANDRA_HOSTS"
	EnvKeyspace        = "PARLEY_CASSANDRA_KEYSPACE"
	EnvLocalDC         = "PARLEY_CASSANDRA_LOCAL_DC"
	EnvKafkaBrokers    = "PARLEY_KAFKA_BROKERS"
	EnvRedisAddr       = "PARLEY_REDIS_ADDR"
	EnvRedisKeyPrefix  = "PARLEY_REDIS_KEY_PREFIX"
	EnvMaxGroupMembers = "PARLEY_MAX_GROUP_MEMBERS"
	EnvMaxMessageBytes = "PARLEY_MAX_MESSAGE_BYTES"
	EnvSendRate        = "PARLEY_SEND_RATE"
	EnvSendBurst       = "PARLEY_SEND_BURST"
	EnvReadRate        = "PARLEY_READ_RATE"
	EnvReadBurst       = "PARLEY_READ_BURST"
	EnvMaxSessions     = "PARLEY_MAX_SESSIONS_PER_USER"
	EnvDrainWindow     = "PARLEY_DRAIN_WINDOW"
	EnvMaxConnections  = "PARLEY_MAX_CONNECTIONS"
	EnvJWKSURL         = "PARLEY_JWKS_URL"
	EnvJWTIssuer       = "PARLEY_JWT_ISSUER"
	EnvJWTAudience     = "PARLEY_JWT_AUDIENCE"
	EnvS3Endpoint      = "PARLEY_S3_ENDPOINT"
	EnvS3Bucket        = "PARLEY_S3_BUCKET"
	EnvS3Region        = "PARLEY_S3_REGION"
	EnvS3PublicURL     = "PARLEY_S3_PUBLIC_URL"
	EnvTypingInterval  = "PARLEY_TYPING_INTERVAL"
	EnvHTTPRead        = "PARLEY_HTTP_READ_TIMEOUT"
	EnvHTTPIdle        = "PARLEY_HTTP_IDLE_TIMEOUT"
	EnvHTTPWrite       = "PARLEY_HTTP_WRITE_TIMEOUT"
	EnvAllowedOrigins  = "PARLEY_ALLOWED_ORIGINS"
	EnvMetricsPrivate  = "PARLEY_METRICS_PRIVATE"
	EnvNodeID          = "PARLEY_NODE_ID"  // chat: Snowflake node id (region id << 7 | ordinal)
	EnvPodName         = "PARLEY_POD_NAME" // gateway: its id; the ordinal suffix is its partition
	EnvCassandraUser   = "PARLEY_CASSANDRA_USERNAME"
	EnvCassandraPass   = "PARLEY_CASSANDRA_PASSWORD"
)

// flagEnv maps a runtime flag to the config key it reads, in the order args list them.
var flagEnv = []struct{ flag, env string }{
	{"--region", EnvRegion},
	{"--region-id", EnvRegionID},
	{"--cassandra-hosts", EnvCassandraHosts},
	{"--cassandra-keyspace", EnvKeyspace},
	{"--cassandra-local-dc", EnvLocalDC},
	{"--kafka-brokers", EnvKafkaBrokers},
	{"--redis-addr", EnvRedisAddr},
	{"--redis-key-prefix", EnvRedisKeyPrefix},
	{"--max-group-members", EnvMaxGroupMembers},
	{"--max-message-bytes", EnvMaxMessageBytes},
	{"--send-rate", EnvSendRate},
	{"--send-burst", EnvSendBurst},
	{"--read-rate", EnvReadRate},
	{"--read-burst", EnvReadBurst},
	{"--max-sessions-per-user", EnvMaxSessions},
	{"--drain-window", EnvDrainWindow},
	{"--max-connections", EnvMaxConnections},
	{"--jwks-url", EnvJWKSURL},
	{"--jwt-issuer", EnvJWTIssuer},
	{"--jwt-audience", EnvJWTAudience},
	{"--s3-endpoint", EnvS3Endpoint},
	{"--s3-bucket", EnvS3Bucket},
	{"--s3-region", EnvS3Region},
	{"--s3-public-url", EnvS3PublicURL},
	{"--typing-interval", EnvTypingInterval},
	{"--http-read-timeout", EnvHTTPRead},
	{"--http-idle-timeout", EnvHTTPIdle},
	{"--http-write-timeout", EnvHTTPWrite},
	{"--allowed-origins", EnvAllowedOrigins},
	{"--metrics-private", EnvMetricsPrivate},
}

// DrainWindow is how long a draining gateway spreads its clients' reconnects: half of
// drainTimeout, so the last reconnects land well before the operator gives up waiting.
func DrainWindow(cc *chatv1.ChatCluster) string {
	return (cc.Spec.Rollout.DrainTimeout.Duration / 2).String()
}

// RuntimeConfig is the runtime's config for one region and role, as environment variables.
func RuntimeConfig(cc *chatv1.ChatCluster, region *chatv1.Region, role chatv1.Role) map[string]string {
	s := &cc.Spec
	c := map[string]string{
		EnvRole:            string(role),
		EnvRegion:          region.Name,
		EnvRegionID:        strconv.Itoa(int(region.ID)),
		EnvCassandraHosts:  strings.Join(s.Cassandra.ContactPoints, ","),
		EnvKeyspace:        s.Cassandra.Keyspace,
		EnvLocalDC:         region.Cassandra.LocalDatacenter,
		EnvKafkaBrokers:    strings.Join(region.Kafka.Brokers, ","),
		EnvRedisAddr:       region.Redis.Address,
		EnvMaxGroupMembers: strconv.Itoa(int(s.Limits.MaxGroupMembers)),
		EnvMaxMessageBytes: strconv.Itoa(int(s.Limits.MaxMessageBytes)),
	}
	if p := region.Redis.KeyPrefix; p != "" {
		c[EnvRedisKeyPrefix] = p
	}
	// Unset: the runtime's defaults, and nothing added to the config (no rollout).
	if d := s.Limits.HTTPReadTimeout; d != nil {
		c[EnvHTTPRead] = d.Duration.String()
	}
	if d := s.Limits.HTTPIdleTimeout; d != nil {
		c[EnvHTTPIdle] = d.Duration.String()
	}
	if d := s.Limits.HTTPWriteTimeout; d != nil {
		c[EnvHTTPWrite] = d.Duration.String()
	}
	if role == chatv1.RoleGateway {
		c[EnvSendRate] = strconv.Itoa(int(s.Limits.SendRatePerSecond))
		c[EnvSendBurst] = strconv.Itoa(int(s.Limits.SendBurst))
		// Zero (an object stored before these fields existed, never defaulted)
		// leaves the runtime's own default.
		setInt := func(k string, v int32) {
			if v > 0 {
				c[k] = strconv.Itoa(int(v))
			}
		}
		setInt(EnvReadRate, s.Limits.ReadRatePerSecond)
		setInt(EnvReadBurst, s.Limits.ReadBurst)
		setInt(EnvMaxSessions, s.Limits.MaxSessionsPerUser)
		c[EnvDrainWindow] = DrainWindow(cc)
		if region.Gateway.MaxConnections > 0 {
			c[EnvMaxConnections] = strconv.Itoa(int(region.Gateway.MaxConnections))
		}
		set := func(k, v string) {
			if v != "" {
				c[k] = v
			}
		}
		set(EnvJWKSURL, s.Auth.JWKSURL)
		set(EnvJWTIssuer, s.Auth.Issuer)
		set(EnvJWTAudience, s.Auth.Audience)
		set(EnvS3Endpoint, s.Media.Endpoint)
		set(EnvS3Bucket, s.Media.Bucket)
		set(EnvS3Region, s.Media.Region)
		set(EnvS3PublicURL, s.Media.PublicURL)
		set(EnvAllowedOrigins, strings.Join(s.Auth.AllowedOrigins, ","))
		if d := s.Limits.TypingInterval; d != nil {
			c[EnvTypingInterval] = d.Duration.String()
		}
		if s.Auth.MetricsPrivate {
			c[EnvMetricsPrivate] = "true"
		}
	}
	return c
}

// PeerRegions is what the runtime's --peer-region-file holds for region:
// every other region of the cluster as "name=N,id=I,kafka=B1;B2", separated
// by spaces, in spec order ("" for a cluster of one region).
func PeerRegions(cc *chatv1.ChatCluster, region *chatv1.Region) string {
	var peers []string
	for i := range cc.Spec.Regions {
		r := &cc.Spec.Regions[i]
		if r.Name == region.Name {
			continue
		}
		peers = append(peers, fmt.Sprintf("name=%s,id=%d,kafka=%s", r.Name, r.ID, strings.Join(r.Kafka.Brokers, ";")))
	}
	return strings.Join(peers, " ")
}

// PeersConfigMap holds region's peer regions (PeerRegions) under PeersKey,
// "<cluster>-<region>-peers". The gateway and chat pods mount it and the
// runtime re-reads it, so a region added to or removed from the spec joins
// or leaves every other region's mesh without rolling their fleets: the
// file is not part of the pod template or its config hash
// (docs/multi-region.md).
func PeersConfigMap(cc *chatv1.ChatCluster, region *chatv1.Region) *corev1.ConfigMap {
	labels := ClusterLabels(cc)
	labels[LabelRegion] = region.Name
	data := map[string]string{PeersKey: PeerRegions(cc, region)}
	return &corev1.ConfigMap{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        PeersConfigMapName(cc, region.Name),
			Namespace:   cc.Namespace,
			Labels:      labels,
			Annotations: stamp(labels, nil, data),
		},
		Data: data,
	}
}

// ConfigMap holds RuntimeConfig for one region and role, "<cluster>-<region>-<role>".
func ConfigMap(cc *chatv1.ChatCluster, region *chatv1.Region, role chatv1.Role) *corev1.ConfigMap {
	labels := Labels(cc, region.Name, role)
	data := RuntimeConfig(cc, region, role)
	return &corev1.ConfigMap{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        ObjectName(cc, region.Name, role),
			Namespace:   cc.Namespace,
			Labels:      labels,
			Annotations: stamp(labels, nil, data),
		},
		Data: data,
	}
}

// configArgs turns the keys present in a config into flags that reference them.
func configArgs(config map[string]string) []string {
	var args []string
	for _, fe := range flagEnv {
		if _, ok := config[fe.env]; ok {
			args = append(args, fmt.Sprintf("%s=$(%s)", fe.flag, fe.env))
		}
	}
	return args
}

// CassandraReplication is the keyspace replication `parley migrate` applies, "dc=rf,…" (its --replication flag),
// sorted by datacenter so it does not change with region order.
func CassandraReplication(cc *chatv1.ChatCluster) string {
	rf := map[string]int32{}
	for _, r := range cc.Spec.Regions {
		rf[r.Cassandra.LocalDatacenter] = r.Cassandra.ReplicationFactor
	}
	dcs := make([]string, 0, len(rf))
	for dc := range rf {
		dcs = append(dcs, dc)
	}
	sort.Strings(dcs)
	parts := make([]string, len(dcs))
	for i, dc := range dcs {
		parts[i] = fmt.Sprintf("%s=%d", dc, rf[dc])
	}
	return strings.Join(parts, ",")
}
