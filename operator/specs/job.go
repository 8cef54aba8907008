package specs

import (
	"fmt"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
)

// MinDeliverPartitions is the smallest deliver topic. Gateway k consumes partition k, so the
// topic needs one partition per gateway ordinal a rollout can use (below 2 × replicas + maxSurge:
// the planner slides the ordinal window up by replicas and back); partitions can only grow,
// so migrate creates a power of two with headroom and a scale-up rarely needs a new migration.
const MinDeliverPartitions = 64

// DeliverPartitions is the deliver topic size for a region: the next power of two ≥ the
// gateway ordinals a rollout can use (2 × replicas + maxSurge), at least MinDeliverPartitions.
func DeliverPartitions(cc *chatv1.ChatCluster, region *chatv1.Region) int32 {
	need := 2*region.Gateway.Replicas + cc.Spec.Rollout.Surge()
	n := int32(MinDeliverPartitions)
	for n < need {
		n *= 2
	}
	return n
}

// MigrateArgs are the arguments of `parley migrate` for a region: Cassandra schema (keyspace with
// every region's replication) and the region's Kafka topics.
func MigrateArgs(cc *chatv1.ChatCluster, region *chatv1.Region) []string {
	s := &cc.Spec
	return []string{
		"migrate",
		"--region=" + region.Name,
		"--cassandra-hosts=" + strings.Join(s.Cassandra.ContactPoints, ","),
		"--cassandra-keyspace=" + s.Cassandra.Keyspace,
		"--replication=" + CassandraReplication(cc),
		"--kafka-brokers=" + strings.Join(region.Kafka.Brokers, ","),
		fmt.Sprintf("--deliver-partitions=%d", DeliverPartitions(cc, region)),
	}
}

// MigrationKey identifies a migration: the image and the arguments it runs with. A region's pods
// of a new key wait until its Job has succeeded.
func MigrationKey(cc *chatv1.ChatCluster, region *chatv1.Region) string {
	return Hash(struct {
		Image string   `json:"image"`
		Args  []string `json:"args"`
	}{cc.Spec.Image, MigrateArgs(cc, region)})
}

// MigrateJob runs `parley migrate` for one region before any pod of a new version starts there.
// Migrations are versioned and idempotent, so a retried or repeated Job is harmless.
func MigrateJob(cc *chatv1.ChatCluster, region *chatv1.Region) *batchv1.Job {
	s := &cc.Spec
	key := MigrationKey(cc, region)
	labels := map[string]string{
		LabelName:      AppName,
		LabelInstance:  cc.Name,
		LabelComponent: ComponentMigrate,
		LabelManagedBy: ManagedBy,
		LabelRegion:    region.Name,
	}
	var env []corev1.EnvVar
	if ref := s.Cassandra.CredentialsSecretRef; ref != nil {
		env = append(env,
			corev1.EnvVar{Name: EnvCassandraUser, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: *ref, Key: "username"}}},
			corev1.EnvVar{Name: EnvCassandraPass, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: *ref, Key: "password"}}},
		)
	}
	return &batchv1.Job{
		TypeMeta: metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        MigrateJobName(cc, region.Name, key),
			Namespace:   cc.Namespace,
			Labels:      labels,
			Annotations: map[string]string{AnnotationMigration: key, "parley.io/image": s.Image},
		},
		Spec: batchv1.JobSpec{
			BackoffLimit:          ptr.To[int32](4),
			ActiveDeadlineSeconds: ptr.To[int64](1800),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					RestartPolicy:      corev1.RestartPolicyNever,
					NodeSelector:       region.NodeSelector,
					Tolerations:        region.Tolerations,
					ImagePullSecrets:   s.ImagePullSecrets,
					EnableServiceLinks: ptr.To(false),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To[int64](RunAsUser),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers: []corev1.Container{{
						Name:            "migrate",
						Image:           s.Image,
						ImagePullPolicy: s.ImagePullPolicy,
						Command:         []string{Binary},
						Args:            MigrateArgs(cc, region),
						Env:             env,
						SecurityContext: &corev1.SecurityContext{
							AllowPrivilegeEscalation: ptr.To(false),
							ReadOnlyRootFilesystem:   ptr.To(true),
							Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						},
					}},
				},
			},
		},
	}
}
