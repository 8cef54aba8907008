package v1alpha1

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults the CRD schema applies; SetDefaults applies the same in Go so code that builds a
// ChatCluster without an API server (unit tests, the reconciler on an object written before a
// default existed) sees the same values.
const (
	DefaultGatewayReplicas   = 2
	DefaultChatReplicas      = 3
	DefaultPresenceReplicas  = 2
	DefaultServicePort       = 80
	DefaultReplicationFactor = 3
	DefaultMaxGroupMembers   = 500
	DefaultMaxMessageBytes   = 4096
	DefaultSendRate          = 20
	DefaultSendBurst         = 40
	DefaultReadRate          = 20
	DefaultReadBurst         = 100
	DefaultMaxSessions       = 16
	DefaultKeyspace          = "parley"
	DefaultDrainTimeout      = 60 * time.Second
	DefaultProgressDeadline  = 10 * time.Minute
	DefaultMaxUnavailable    = 1
	DefaultMaxSurge          = 1
)

// SetDefaults fills every unset field that has a schema default.
func SetDefaults(cc *ChatCluster) {
	s := &cc.Spec
	if s.ImagePullPolicy == "" {
		s.ImagePullPolicy = corev1.PullIfNotPresent
	}
	for i := range s.Regions {
		r := &s.Regions[i]
		setInt(&r.Gateway.Replicas, DefaultGatewayReplicas)
		setInt(&r.Chat.Replicas, DefaultChatReplicas)
		setInt(&r.Presence.Replicas, DefaultPresenceReplicas)
		setInt(&r.Gateway.Service.Port, DefaultServicePort)
		if r.Gateway.Service.Type == "" {
			r.Gateway.Service.Type = corev1.ServiceTypeClusterIP
		}
		setInt(&r.Cassandra.ReplicationFactor, DefaultReplicationFactor)
	}
	setInt(&s.Limits.MaxGroupMembers, DefaultMaxGroupMembers)
	setInt(&s.Limits.MaxMessageBytes, DefaultMaxMessageBytes)
	setInt(&s.Limits.SendRatePerSecond, DefaultSendRate)
	setInt(&s.Limits.SendBurst, DefaultSendBurst)
	setInt(&s.Limits.ReadRatePerSecond, DefaultReadRate)
	setInt(&s.Limits.ReadBurst, DefaultReadBurst)
	setInt(&s.Limits.MaxSessionsPerUser, DefaultMaxSessions)
	if s.Cassandra.Keyspace == "" {
		s.Cassandra.Keyspace = DefaultKeyspace
	}
	if s.Rollout.DrainTimeout == nil {
		s.Rollout.DrainTimeout = &metav1.Duration{Duration: DefaultDrainTimeout}
	}
	if s.Rollout.ProgressDeadline == nil {
		s.Rollout.ProgressDeadline = &metav1.Duration{Duration: DefaultProgressDeadline}
	}
	setInt(&s.Rollout.MaxUnavailable, DefaultMaxUnavailable)
	if s.Rollout.MaxSurge == nil {
		v := int32(DefaultMaxSurge)
		s.Rollout.MaxSurge = &v
	}
}

func setInt(p *int32, v int32) {
	if *p == 0 {
		*p = v
	}
}

// Surge is rollout.maxSurge with its default.
func (r RolloutSpec) Surge() int32 {
	if r.MaxSurge == nil {
		return DefaultMaxSurge
	}
	return *r.MaxSurge
}

// OrderedRegions returns the regions in rollout order: those named by rollout.regionOrder
// first, in that order, then the rest in spec order.
func (s *ChatClusterSpec) OrderedRegions() []*Region {
	out := make([]*Region, 0, len(s.Regions))
	seen := make(map[string]bool, len(s.Regions))
	for _, name := range s.Rollout.RegionOrder {
		for i := range s.Regions {
			if r := &s.Regions[i]; r.Name == name && !seen[name] {
				out = append(out, r)
				seen[name] = true
			}
		}
	}
	for i := range s.Regions {
		if r := &s.Regions[i]; !seen[r.Name] {
			out = append(out, r)
			seen[r.Name] = true
		}
	}
	return out
}
