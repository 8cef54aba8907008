package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Role is one of the runtime's fleets. Each region runs one StatefulSet per role.
type Role string

const (
	RoleChat     Role = "chat"     // sequencers: consume ingress, append to Cassandra, fan out
	RolePresence Role = "presence" // presence and session registry on Redis
	RoleGateway  Role = "gateway"  // WebSocket and REST edge; drained before it is replaced
)

// Roles lists the roles in rollout order: chat first (consumer-group members with static
// membership, so a restart does not stop every partition), then presence, then gateways.
var Roles = []Role{RoleChat, RolePresence, RoleGateway}

// Condition types on ChatCluster.status.conditions. Each carries observedGeneration.
const (
	// ConditionReady is True when every reconciled region runs the desired revision of every
	// role with all replicas Ready. `kubectl wait --for=condition=Ready chatcluster/NAME`.
	ConditionReady = "Ready"
	// ConditionProgressing is True while the operator is creating, migrating, scaling or
	// rolling something out.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when a region did not become Ready within
	// rollout.progressDeadline, or a migration failed; the rollout stops there.
	ConditionDegraded = "Degraded"
)

// Limits of a region, in ids: at most 8 regions (3 bits of the Snowflake node id) and 128 chat
// pods per region (7 bits), so no two processes ever mint ids with the same node.
const (
	MaxRegions         = 8
	MaxChatReplicas    = 128
	MaxGatewayReplicas = 256
)

// ChatCluster declares one Parley deployment: its regions, the replicas of each role in each
// region, message limits, shared backend settings and how new versions roll out.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=cc;chatc,categories=parley
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.spec.image`,priority=1
// +kubebuilder:printcolumn:name="Regions",type=string,JSONPath=`.status.readyRegions`,description="Regions Ready / regions reconciled"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 30 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS label of at most 30 characters starting with a letter: it prefixes every object name and pod name of the cluster"
type ChatCluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec   ChatClusterSpec   `json:"spec"`
	Status ChatClusterStatus `json:"status,omitempty"`
}

// ChatClusterSpec is the desired state of a ChatCluster.
//
// +kubebuilder:validation:XValidation:rule="!has(self.rollout) || !has(self.rollout.regionOrder) || self.rollout.regionOrder.all(n, self.regions.exists(r, r.name == n))",message="rollout.regionOrder may only name regions listed in spec.regions"
type ChatClusterSpec struct {
	// Image of the parley runtime (all roles and the migrate Job), e.g.
	// "ghcr.io/parleychat/parley:v0.3.0". Changing it runs `parley migrate` and then rolls
	// every region out in rollout.regionOrder.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image"`

	// ImagePullPolicy of every parley container; default IfNotPresent.
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +kubebuilder:default=IfNotPresent
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// ImagePullSecrets for private registries.
	// +kubebuilder:validation:MaxItems=8
	// +optional
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`

	// Regions, at most 8, each with a unique name and a unique, immutable id 0–7. Each region
	// has its own Kafka, Redis, Cassandra datacenter and fleets.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:XValidation:rule="self.all(r, self.exists_one(s, s.name == r.name))",message="region names must be unique"
	// +kubebuilder:validation:XValidation:rule="self.all(r, self.exists_one(s, s.id == r.id))",message="region ids must be unique: each region needs its own id 0-7 (it is part of every message id)"
	// +kubebuilder:validation:XValidation:rule="self.all(r, self.all(s, r.name == s.name || r.redis.address != s.redis.address || (has(r.redis.keyPrefix) && has(s.redis.keyPrefix) && r.redis.keyPrefix != s.redis.keyPrefix)))",message="regions that share one redis.address must each set a different redis.keyPrefix: sessions, presence and budgets are each region's own"
	Regions []Region `json:"regions"`

	// Limits enforced by every region.
	// +kubebuilder:default={}
	// +optional
	Limits Limits `json:"limits,omitempty"`

	// Cassandra settings shared by all regions; each region names its own datacenter.
	// +required
	Cassandra CassandraSpec `json:"cassandra"`

	// Auth configures how gateways verify client tokens. Without jwksURL or jwksSecretRef the
	// gateways run in dev mode with an HMAC secret the operator generates (<name>-dev-secret):
	// for evaluation only.
	// +optional
	Auth AuthSpec `json:"auth,omitempty"`

	// Media configures S3-compatible uploads. Empty: each gateway serves its own store from its
	// data dir, which is not shared between pods — set it in production.
	// +optional
	Media MediaSpec `json:"media,omitempty"`

	// Rollout controls how a new version or a new pod template replaces running pods.
	// +kubebuilder:default={}
	// +optional
	Rollout RolloutSpec `json:"rollout,omitempty"`
}

// Region is one region's fleets and backends.
//
// +kubebuilder:validation:XValidation:rule="self.id == oldSelf.id",message="region id is immutable: it is part of every message id minted in the region; add a new region instead"
type Region struct {
	// Name of the region, a DNS label of at most 15 characters starting with a letter; it is
	// part of object names and Kafka topic names (parley.<name>.ingress).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=15
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// ID of the region, 0–7: the top 3 bits of the Snowflake node id of its chat pods.
	// Immutable.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=7
	ID int32 `json:"id"`

	// Gateway fleet: WebSocket and REST edge.
	// +kubebuilder:default={}
	// +optional
	Gateway GatewaySpec `json:"gateway,omitempty"`

	// Chat fleet: sequencers.
	// +kubebuilder:default={}
	// +optional
	Chat ChatSpec `json:"chat,omitempty"`

	// Presence fleet.
	// +kubebuilder:default={}
	// +optional
	Presence PresenceSpec `json:"presence,omitempty"`

	// NodeSelector places the region's pods, e.g. on a node pool of one cloud region when one
	// Kubernetes cluster spans regions.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations of the region's pods.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// Cassandra datacenter of this region.
	// +required
	Cassandra RegionCassandra `json:"cassandra"`

	// Kafka of this region (ingress and deliver topics).
	// +required
	Kafka RegionKafka `json:"kafka"`

	// Redis of this region (presence and session registry).
	// +required
	Redis RegionRedis `json:"redis"`
}

// GatewaySpec is a region's gateway fleet.
type GatewaySpec struct {
	// Replicas, 1–256. Gateway k consumes partition k of the region's deliver topic.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=256
	// +kubebuilder:default=2
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// Resources of each gateway container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// MaxConnections per gateway pod; 0 means no limit beyond the open-file limit.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MaxConnections int32 `json:"maxConnections,omitempty"`

	// Service is the region's client-facing Service, which selects only gateway pods labelled
	// parley.io/accepting=true.
	// +kubebuilder:default={}
	// +optional
	Service GatewayService `json:"service,omitempty"`
}

// GatewayService shapes the client-facing Service <cluster>-<region>.
type GatewayService struct {
	// Type of the Service; default ClusterIP.
	// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
	// +kubebuilder:default=ClusterIP
	// +optional
	Type corev1.ServiceType `json:"type,omitempty"`

	// Port clients connect to; default 80.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +kubebuilder:default=80
	// +optional
	Port int32 `json:"port,omitempty"`

	// Annotations of the Service (load-balancer settings).
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ChatSpec is a region's chat (sequencer) fleet.
type ChatSpec struct {
	// Replicas, 1–128: the pod ordinal is the low 7 bits of its Snowflake node id.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=128
	// +kubebuilder:default=3
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// Resources of each chat container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
}

// PresenceSpec is a region's presence fleet.
type PresenceSpec struct {
	// Replicas, 1–64.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +kubebuilder:default=2
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// Resources of each presence container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
}

// RegionCassandra is a region's Cassandra datacenter.
type RegionCassandra struct {
	// LocalDatacenter is the Cassandra datacenter of this region (LOCAL_QUORUM writes,
	// LOCAL_SERIAL conditional appends).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	LocalDatacenter string `json:"localDatacenter"`

	// ReplicationFactor of the keyspace in this datacenter; default 3.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=9
	// +kubebuilder:default=3
	// +optional
	ReplicationFactor int32 `json:"replicationFactor,omitempty"`
}

// RegionKafka is a region's Kafka.
type RegionKafka struct {
	// Brokers, host:port.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=253
	Brokers []string `json:"brokers"`
}

// RegionRedis is a region's Redis.
type RegionRedis struct {
	// Address, host:port.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Address string `json:"address"`
	// KeyPrefix starts every key the region's roles keep in Redis (sessions, presence, the
	// users' send and read budgets); unset, the runtime's "parley:". Regions that share one
	// Redis address must each set a different prefix (validated). It is an explicit field,
	// not derived from the sharing, so that adding or removing a region never changes another
	// region's prefix (and rolls it). Changing it rolls the region; what was kept under the
	// old prefix (last-seen times) is not carried over.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9:_.-]+$`
	KeyPrefix string `json:"keyPrefix,omitempty"`
}

// Limits are enforced by the runtime in every region.
type Limits struct {
	// MaxGroupMembers is the largest group, 1–500; default 500.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=500
	// +kubebuilder:default=500
	// +optional
	MaxGroupMembers int32 `json:"maxGroupMembers,omitempty"`

	// MaxMessageBytes is the largest message text in bytes, 1–65536; default 4096.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65536
	// +kubebuilder:default=4096
	// +optional
	MaxMessageBytes int32 `json:"maxMessageBytes,omitempty"`

	// SendRatePerSecond is each user's sustained send rate, 1–1000; default 20.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +kubebuilder:default=20
	// +optional
	SendRatePerSecond int32 `json:"sendRatePerSecond,omitempty"`

	// SendBurst is each user's burst of sends, 1–10000; default 40.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +kubebuilder:default=40
	// +optional
	SendBurst int32 `json:"sendBurst,omitempty"`

	// ReadRatePerSecond is each user's sustained rate of sync, history, inbox and receipts
	// requests, 1–1000; default 20 (the runtime's --read-rate).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +kubebuilder:default=20
	// +optional
	ReadRatePerSecond int32 `json:"readRatePerSecond,omitempty"`

	// ReadBurst is each user's burst of such reads, 1–10000; default 100 (--read-burst).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +kubebuilder:default=100
	// +optional
	ReadBurst int32 `json:"readBurst,omitempty"`

	// MaxSessionsPerUser is the most live WebSocket sessions of one user in a region,
	// 1–1000; default 16. Past it the newest connection is refused with
	// too_many_sessions (--max-sessions-per-user).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +kubebuilder:default=16
	// +optional
	MaxSessionsPerUser int32 `json:"maxSessionsPerUser,omitempty"`

	// TypingInterval is the least time between two typing notices of one user in one
	// conversation that a gateway fans out (the ones in between are dropped); 100ms–1m; unset,
	// the runtime's 1s (--typing-interval).
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('100ms') && duration(self) <= duration('1m')",message="typingInterval must be between 100ms and 1m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +optional
	TypingInterval *metav1.Duration `json:"typingInterval,omitempty"`

	// HTTPReadTimeout bounds reading one HTTP request, body included, on every role's
	// server (WebSocket connections are exempt once upgraded); 1s–1h; unset, the runtime's
	// 2m (--http-read-timeout). Unset fields add nothing to the pods' config, so an operator
	// upgrade that brings them rolls nobody.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="httpReadTimeout must be between 1s and 1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +optional
	HTTPReadTimeout *metav1.Duration `json:"httpReadTimeout,omitempty"`

	// HTTPWriteTimeout bounds writing one HTTP response, from its request's start, on every
	// role's server (WebSocket connections are exempt); 1s–1h; unset, the runtime's 2m
	// (--http-write-timeout).
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="httpWriteTimeout must be between 1s and 1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +optional
	HTTPWriteTimeout *metav1.Duration `json:"httpWriteTimeout,omitempty"`

	// HTTPIdleTimeout closes a keep-alive HTTP connection idle this long between requests;
	// 1s–1h; unset, the runtime's 90s (--http-idle-timeout).
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('1h')",message="httpIdleTimeout must be between 1s and 1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +optional
	HTTPIdleTimeout *metav1.Duration `json:"httpIdleTimeout,omitempty"`
}

// CassandraSpec holds the Cassandra settings shared by all regions.
type CassandraSpec struct {
	// ContactPoints, host or host:port, of the Cassandra cluster.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=253
	ContactPoints []string `json:"contactPoints"`

	// Keyspace; default "parley". Created by `parley migrate` with NetworkTopologyStrategy and
	// each region's replicationFactor in its datacenter.
	// +kubebuilder:validation:Pattern=`^[a-z_][a-z0-9_]{0,47}$`
	// +kubebuilder:default=parley
	// +optional
	Keyspace string `json:"keyspace,omitempty"`

	// CredentialsSecretRef names a Secret with keys "username" and "password"; optional.
	// +optional
	CredentialsSecretRef *corev1.LocalObjectReference `json:"credentialsSecretRef,omitempty"`
}

// AuthSpec configures token verification on the gateways.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.jwksURL) && has(self.jwksSecretRef))",message="set at most one of auth.jwksURL and auth.jwksSecretRef"
type AuthSpec struct {
	// JWKSURL is fetched and refreshed by the gateways (RS256/ES256/EdDSA).
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:Pattern=`^https?://`
	// +optional
	JWKSURL string `json:"jwksURL,omitempty"`

	// JWKSSecretRef is a Secret key holding a JWKS document, mounted as a file.
	// +optional
	JWKSSecretRef *corev1.SecretKeySelector `json:"jwksSecretRef,omitempty"`

	// Issuer tokens must carry (iss); with a JWKS only.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Issuer string `json:"issuer,omitempty"`

	// Audience tokens must carry (aud); with a JWKS only.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Audience string `json:"audience,omitempty"`

	// AllowedOrigins, when set, are the only browser origins (besides the gateway's own) that
	// may open a WebSocket, e.g. https://chat.example.com (--allowed-origins; default: any).
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=2048
	// +kubebuilder:validation:items:Pattern=`^https?://`
	// +optional
	AllowedOrigins []string `json:"allowedOrigins,omitempty"`

	// MetricsPrivate serves the gateways' /metrics only with the admin token (Authorization:
	// Bearer, from the <name>-admin-token Secret), since gateways are the role reachable from
	// outside (--metrics-private). The other roles' /metrics stay open inside the cluster.
	// +optional
	MetricsPrivate bool `json:"metricsPrivate,omitempty"`
}

// MediaSpec configures S3-compatible uploads.
type MediaSpec struct {
	// Endpoint of an S3-compatible API (path style), e.g. http://minio:9000; empty with a
	// bucket set means AWS S3.
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// Bucket holding uploads; it must exist.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Bucket string `json:"bucket,omitempty"`

	// Region used to sign S3 requests; default us-east-1 (the runtime's default).
	// +kubebuilder:validation:MaxLength=64
	// +optional
	Region string `json:"region,omitempty"`

	// PublicURL clients read objects from (a CDN or public bucket URL).
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	PublicURL string `json:"publicURL,omitempty"`

	// CredentialsSecretRef names a Secret with keys AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY, passed to the gateways as environment.
	// +optional
	CredentialsSecretRef *corev1.LocalObjectReference `json:"credentialsSecretRef,omitempty"`
}

// RolloutSpec controls how new pod templates replace running pods.
type RolloutSpec struct {
	// DrainTimeout bounds how long the operator waits for a draining gateway to lose its
	// connections before deleting it, 1s–30m; default 60s. Gateway pods get a termination grace
	// period 30s longer, and their preStop hook drains too.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('30m')",message="drainTimeout must be between 1s and 30m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +kubebuilder:default="60s"
	// +optional
	DrainTimeout *metav1.Duration `json:"drainTimeout,omitempty"`

	// ProgressDeadline is how long a region may wait for its pods to become Ready before the
	// ChatCluster turns Degraded and the rollout stops there, 1s–24h; default 10m.
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('24h')",message="progressDeadline must be between 1s and 24h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Format=duration
	// +kubebuilder:default="10m"
	// +optional
	ProgressDeadline *metav1.Duration `json:"progressDeadline,omitempty"`

	// MaxUnavailable is how many pods of one role and region are replaced at once (a gateway
	// batch is drained together), 1–64; default 1.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	// +kubebuilder:default=1
	// +optional
	MaxUnavailable int32 `json:"maxUnavailable,omitempty"`

	// MaxSurge is how many extra gateways at the new version are started before the first
	// batch drains, so clients reconnect to new pods; 0–16, default 1. They are drained away
	// once every gateway runs the new version.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=16
	// +kubebuilder:default=1
	// +optional
	MaxSurge *int32 `json:"maxSurge,omitempty"`

	// RegionOrder lists region names in the order they are rolled out; regions it does not
	// name follow in spec order.
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=15
	// +listType=set
	// +optional
	RegionOrder []string `json:"regionOrder,omitempty"`

	// Paused holds the rollout: no migration, no StatefulSet change, no pod drained or
	// deleted, until it is false again.
	// +optional
	Paused bool `json:"paused,omitempty"`
}

// ChatClusterStatus is the observed state of a ChatCluster.
type ChatClusterStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions Ready, Progressing and Degraded.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// ReadyRegions is "ready/reconciled", e.g. "2/2", for kubectl get.
	// +optional
	ReadyRegions string `json:"readyRegions,omitempty"`

	// Regions reports each reconciled region.
	// +listType=map
	// +listMapKey=name
	// +optional
	Regions []RegionStatus `json:"regions,omitempty"`
}

// RegionStatus is one region's observed state.
type RegionStatus struct {
	// Name of the region.
	Name string `json:"name"`
	// ID of the region.
	ID int32 `json:"id"`
	// Ready is true when every role runs the desired revision with all replicas Ready.
	Ready bool `json:"ready"`
	// MigratedImage is the last image whose `parley migrate` Job succeeded in this region.
	// +optional
	MigratedImage string `json:"migratedImage,omitempty"`
	// Migration is the key (hash of image and arguments) of that Job. Pods of a new key wait
	// until its Job has succeeded.
	// +optional
	Migration string `json:"migration,omitempty"`
	// WaitingSince is when the region started waiting for its pods to become Ready; it is
	// cleared on progress. Older than rollout.progressDeadline means Degraded.
	// +optional
	WaitingSince *metav1.Time `json:"waitingSince,omitempty"`
	// Roles reports each role of the region.
	// +listType=map
	// +listMapKey=role
	// +optional
	Roles []RoleStatus `json:"roles,omitempty"`
}

// RoleStatus is one role's pods in one region.
type RoleStatus struct {
	// Role is chat, presence or gateway.
	Role Role `json:"role"`
	// Replicas desired.
	Replicas int32 `json:"replicas"`
	// ReadyReplicas counts Ready pods.
	ReadyReplicas int32 `json:"readyReplicas"`
	// UpdatedReplicas counts pods at Revision.
	UpdatedReplicas int32 `json:"updatedReplicas"`
	// Revision is the desired pod-template hash (label parley.io/revision).
	// +optional
	Revision string `json:"revision,omitempty"`
	// Revisions lists every revision running, with its pod count, e.g. "7c9d1f2a04=3".
	// +optional
	Revisions []string `json:"revisions,omitempty"`
}

// ChatClusterList is a list of ChatClusters.
//
// +kubebuilder:object:root=true
type ChatClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ChatCluster `json:"items"`
}
