// Package specs builds the Kubernetes objects of a ChatCluster as pure functions of its spec:
// no API calls, no clocks, no randomness. The reconciler compares what they return with what
// the API server has (through the parley.io/spec-hash annotation) and writes only differences.
package specs

import (
	"fmt"
	"strconv"
	"strings"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
)

// Labels and annotations the operator sets and reads.
const (
	LabelName      = "app.kubernetes.io/name"       // always "parley"
	LabelInstance  = "app.kubernetes.io/instance"   // the ChatCluster's name
	LabelComponent = "app.kubernetes.io/component"  // role, or "migrate"
	LabelManagedBy = "app.kubernetes.io/managed-by" // always ManagedBy
	LabelRegion    = "parley.io/region"             // region name
	LabelRole      = "parley.io/role"               // chat | presence | gateway

	// LabelRevision is the hash of the pod template a pod was created from. The operator tells
	// old pods from new ones by it, not by StatefulSet status.
	LabelRevision = "parley.io/revision"
	// LabelAccepting is "true" on gateway pods the client-facing Service may route to; the
	// operator sets it to "false" before it drains a pod.
	LabelAccepting = "parley.io/accepting"

	// AnnotationSpecHash is the hash of an object as the operator built it; equal hash, no write.
	AnnotationSpecHash = "parley.io/spec-hash"
	// AnnotationConfigHash on a pod template is the hash of the ConfigMap it reads, so a config
	// change is a new revision and rolls out like an image change.
	AnnotationConfigHash = "parley.io/config-hash"
	// AnnotationDrainStarted is set (RFC 3339) on a gateway pod when its drain starts.
	AnnotationDrainStarted = "parley.io/drain-started"
	// AnnotationMigration on a migrate Job is the hash of its pod spec: the migration key.
	AnnotationMigration = "parley.io/migration"

	ManagedBy        = "parley-operator"
	AppName          = "parley"
	ComponentMigrate = "migrate"
)

// Paths and ports inside parley containers.
const (
	Binary        = "/usr/local/bin/parley" // where the runtime image installs parley
	HTTPPort      = 8080
	DataDir       = "/var/lib/parley"
	AdminTokenDir = "/etc/parley/admin"
	// PeersDir holds the region's PeersConfigMap; the runtime reads
	// PeersFile (--peer-region-file) and follows its changes.
	PeersDir       = "/etc/parley/peers"
	PeersKey       = "peer-regions"
	PeersFile      = PeersDir + "/" + PeersKey
	AdminTokenFile = AdminTokenDir + "/token"
	AdminTokenKey  = "token"
	DevSecretKey   = "dev-secret"
	JWKSDir        = "/etc/parley/jwks"
	JWKSFile       = JWKSDir + "/jwks.json"
)

// ObjectName is the name of a region's per-role objects: StatefulSet, headless Service,
// PodDisruptionBudget and ConfigMap, "<cluster>-<region>-<role>". With the CRD's length limits
// (cluster ≤ 30, region ≤ 15) it stays within 55 characters, so pod names fit 63.
func ObjectName(cc *chatv1.ChatCluster, region string, role chatv1.Role) string {
	return cc.Name + "-" + region + "-" + string(role)
}

// PeersConfigMapName is the region's PeersConfigMap, "<cluster>-<region>-peers".
func PeersConfigMapName(cc *chatv1.ChatCluster, region string) string {
	return cc.Name + "-" + region + "-peers"
}

// ClientServiceName is the region's client-facing gateway Service, "<cluster>-<region>".
func ClientServiceName(cc *chatv1.ChatCluster, region string) string {
	return cc.Name + "-" + region
}

// AdminSecretName holds the gateways' admin bearer token (key "token").
func AdminSecretName(cc *chatv1.ChatCluster) string { return cc.Name + "-admin-token" }

// DevSecretName holds the shared dev-mode HMAC secret (key "dev-secret").
func DevSecretName(cc *chatv1.ChatCluster) string { return cc.Name + "-dev-secret" }

// MigrateJobName is "<cluster>-migrate-<region>-<key8>": one Job per region and migration key.
func MigrateJobName(cc *chatv1.ChatCluster, region, key string) string {
	if len(key) > 8 {
		key = key[:8]
	}
	return cc.Name + "-migrate-" + region + "-" + key
}

// PodOrdinal parses the ordinal of a StatefulSet pod from its name ("...-<ordinal>").
func PodOrdinal(podName string) (int32, error) {
	i := strings.LastIndexByte(podName, '-')
	if i < 0 {
		return 0, fmt.Errorf("pod %q has no ordinal suffix", podName)
	}
	n, err := strconv.ParseInt(podName[i+1:], 10, 32)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("pod %q has no ordinal suffix", podName)
	}
	return int32(n), nil
}

// OrdinalStart is the first pod ordinal of a role's StatefulSet. Chat pods start at
// regionID*128, so a chat pod's ordinal is its Snowflake node id (3 bits region, 7 bits pod)
// and the pod reads it from the apps.kubernetes.io/pod-index label. Other roles start at 0; a
// gateway's ordinal is its partition of the deliver topic.
func OrdinalStart(region *chatv1.Region, role chatv1.Role) int32 {
	if role == chatv1.RoleChat {
		return region.ID * chatv1.MaxChatReplicas
	}
	return 0
}

// Selector is the label set that selects one region's pods of one role.
func Selector(cc *chatv1.ChatCluster, region string, role chatv1.Role) map[string]string {
	return map[string]string{
		LabelName:     AppName,
		LabelInstance: cc.Name,
		LabelRegion:   region,
		LabelRole:     string(role),
	}
}

// Labels are the labels of every object of one region and role.
func Labels(cc *chatv1.ChatCluster, region string, role chatv1.Role) map[string]string {
	l := Selector(cc, region, role)
	l[LabelComponent] = string(role)
	l[LabelManagedBy] = ManagedBy
	return l
}

// ClusterLabels are the labels of the cluster-wide objects (Secrets).
func ClusterLabels(cc *chatv1.ChatCluster) map[string]string {
	return map[string]string{LabelName: AppName, LabelInstance: cc.Name, LabelManagedBy: ManagedBy}
}
