package specs

import (
	"fmt"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
)

// Grace periods: a gateway gets drainTimeout plus this, so its preStop drain always finishes
// before the kubelet kills it; chat gets enough to leave its consumer group and flush receipts.
const (
	GatewayGraceExtraSeconds = 30
	ChatGraceSeconds         = 60
	PresenceGraceSeconds     = 30
	RunAsUser                = 65532 // distroless "nonroot"
)

// StatefulSet is a region's fleet of one role, "<cluster>-<region>-<role>", with `replicas`
// pods. Every role uses the OnDelete strategy: the operator decides which pod is replaced when
// (region by region, chat → presence → gateway, gateways drained first), so no controller it
// does not run can roll pods on its own. The pod template carries its own hash as the
// parley.io/revision label (and the StatefulSet as an annotation), which is how the operator
// tells revisions apart.
func StatefulSet(cc *chatv1.ChatCluster, region *chatv1.Region, role chatv1.Role, replicas int32) *appsv1.StatefulSet {
	return statefulSet(cc, region, role, OrdinalStart(region, role), replicas)
}

// GatewayStatefulSet is the region's gateway StatefulSet with its pods at ordinals
// [start, start+replicas): a gateway rollout slides that window (the operator's planner), so a
// drained client reconnects to a gateway that stays. Every ordinal stays below
// DeliverPartitions.
func GatewayStatefulSet(cc *chatv1.ChatCluster, region *chatv1.Region, start, replicas int32) *appsv1.StatefulSet {
	return statefulSet(cc, region, chatv1.RoleGateway, start, replicas)
}

func statefulSet(cc *chatv1.ChatCluster, region *chatv1.Region, role chatv1.Role, start, replicas int32) *appsv1.StatefulSet {
	name := ObjectName(cc, region.Name, role)
	labels := Labels(cc, region.Name, role)
	tmpl := PodTemplate(cc, region, role)
	rev := tmpl.Labels[LabelRevision]

	sts := &appsv1.StatefulSet{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: cc.Namespace,
			Labels:    labels,
		},
		Spec: appsv1.StatefulSetSpec{
			Replicas:             ptr.To(replicas),
			Selector:             &metav1.LabelSelector{MatchLabels: Selector(cc, region.Name, role)},
			ServiceName:          name,
			PodManagementPolicy:  appsv1.ParallelPodManagement,
			UpdateStrategy:       appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType},
			RevisionHistoryLimit: ptr.To[int32](5),
			Template:             tmpl,
		},
	}
	if start > 0 {
		sts.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: start}
	}
	sts.Annotations = stamp(labels, map[string]string{LabelRevision: rev}, sts.Spec)
	return sts
}

// Revision returns the pod-template hash a StatefulSet built by StatefulSet carries.
func Revision(sts *appsv1.StatefulSet) string { return sts.Annotations[LabelRevision] }

// PodTemplate is the pod of one region and role. Its parley.io/revision label is the hash of
// everything else in it, including the ConfigMap's content (parley.io/config-hash).
func PodTemplate(cc *chatv1.ChatCluster, region *chatv1.Region, role chatv1.Role) corev1.PodTemplateSpec {
	config := RuntimeConfig(cc, region, role)
	labels := Labels(cc, region.Name, role)
	if role == chatv1.RoleGateway {
		labels[LabelAccepting] = "true"
	}
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{
			Labels:      labels,
			Annotations: map[string]string{AnnotationConfigHash: Hash(config)},
		},
		Spec: podSpec(cc, region, role, config),
	}
	tmpl.Labels[LabelRevision] = Hash(tmpl)
	return tmpl
}

func podSpec(cc *chatv1.ChatCluster, region *chatv1.Region, role chatv1.Role, config map[string]string) corev1.PodSpec {
	s := &cc.Spec
	args := append([]string{"serve", "--role=" + string(role), fmt.Sprintf("--addr=:%d", HTTPPort), "--data-dir=" + DataDir}, configArgs(config)...)
	env := []corev1.EnvVar{}
	mounts := []corev1.VolumeMount{{Name: "data", MountPath: DataDir}}
	volumes := []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	var envFrom []corev1.EnvFromSource
	envFrom = append(envFrom, corev1.EnvFromSource{ConfigMapRef: &corev1.ConfigMapEnvSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: ObjectName(cc, region.Name, role)},
	}})
	if ref := s.Cassandra.CredentialsSecretRef; ref != nil {
		env = append(env,
			corev1.EnvVar{Name: EnvCassandraUser, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: *ref, Key: "username"}}},
			corev1.EnvVar{Name: EnvCassandraPass, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: *ref, Key: "password"}}},
		)
	}
	grace := int64(PresenceGraceSeconds)
	var lifecycle *corev1.Lifecycle
	if role == chatv1.RoleChat || role == chatv1.RoleGateway {
		// The other regions, from a ConfigMap the runtime re-reads: the
		// template does not change when a region is added or removed.
		args = append(args, "--peer-region-file="+PeersFile)
		mounts = append(mounts, corev1.VolumeMount{Name: "peers", MountPath: PeersDir, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: "peers", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: PeersConfigMapName(cc, region.Name)},
			Optional:             ptr.To(true),
		}}})
	}

	// The admin token: gateways are drained with it, and chat pods answer the operator's
	// GET /v1/admin/outbox with it before their region is removed.
	adminToken := func() {
		args = append(args, "--admin-token-file="+AdminTokenFile)
		mounts = append(mounts, corev1.VolumeMount{Name: "admin-token", MountPath: AdminTokenDir, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: "admin-token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: AdminSecretName(cc), DefaultMode: ptr.To[int32](0o400),
		}}})
	}
	switch role {
	case chatv1.RoleChat:
		// The pod-index label is the ordinal, and chat ordinals start at region id × 128.
		env = append(env, corev1.EnvVar{Name: EnvNodeID, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['" + appsv1.PodIndexLabel + "']"},
		}})
		grace = ChatGraceSeconds
		adminToken()
	case chatv1.RoleGateway:
		env = append(env, corev1.EnvVar{Name: EnvPodName, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"},
		}})
		args = append(args, "--gateway-id=$("+EnvPodName+")")
		adminToken()
		switch {
		case s.Auth.JWKSSecretRef != nil:
			args = append(args, "--jwks-file="+JWKSFile)
			mounts = append(mounts, corev1.VolumeMount{Name: "jwks", MountPath: JWKSDir, ReadOnly: true})
			volumes = append(volumes, corev1.Volume{Name: "jwks", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: s.Auth.JWKSSecretRef.Name,
				Items:      []corev1.KeyToPath{{Key: s.Auth.JWKSSecretRef.Key, Path: "jwks.json"}},
			}}})
		case s.Auth.JWKSURL == "":
			// Dev mode: every gateway must verify what any other issued, so they share the
			// operator-generated secret, mounted where `parley serve` looks for it.
			mounts = append(mounts, corev1.VolumeMount{Name: "dev-secret", MountPath: DataDir + "/" + DevSecretKey, SubPath: DevSecretKey, ReadOnly: true})
			volumes = append(volumes, corev1.Volume{Name: "dev-secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: DevSecretName(cc), DefaultMode: ptr.To[int32](0o400),
			}}})
		}
		if ref := s.Media.CredentialsSecretRef; ref != nil {
			envFrom = append(envFrom, corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: *ref}})
		}
		drainTimeout := s.Rollout.DrainTimeout.Duration
		grace = int64(drainTimeout.Seconds()) + GatewayGraceExtraSeconds
		lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{
			Binary, "admin", "drain",
			fmt.Sprintf("--url=http://127.0.0.1:%d", HTTPPort),
			"--token-file=" + AdminTokenFile,
			"--window=" + DrainWindow(cc),
			"--timeout=" + drainTimeout.String(),
			"--wait",
		}}}}
	}

	return corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To(grace),
		NodeSelector:                  maps.Clone(region.NodeSelector),
		Tolerations:                   region.Tolerations,
		ImagePullSecrets:              s.ImagePullSecrets,
		EnableServiceLinks:            ptr.To(false),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			RunAsUser:      ptr.To[int64](RunAsUser),
			RunAsGroup:     ptr.To[int64](RunAsUser),
			FSGroup:        ptr.To[int64](RunAsUser),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{{
			Name:            "parley",
			Image:           s.Image,
			ImagePullPolicy: s.ImagePullPolicy,
			Command:         []string{Binary},
			Args:            args,
			Env:             env,
			EnvFrom:         envFrom,
			Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: HTTPPort, Protocol: corev1.ProtocolTCP}},
			Resources:       resources(region, role),
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}},
				PeriodSeconds:    5,
				FailureThreshold: 2,
			},
			LivenessProbe: &corev1.Probe{
				ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
				PeriodSeconds:    10,
				FailureThreshold: 3,
			},
			Lifecycle:    lifecycle,
			VolumeMounts: mounts,
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false),
				ReadOnlyRootFilesystem:   ptr.To(true),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
		}},
		Volumes: volumes,
	}
}

func resources(region *chatv1.Region, role chatv1.Role) corev1.ResourceRequirements {
	switch role {
	case chatv1.RoleGateway:
		return region.Gateway.Resources
	case chatv1.RoleChat:
		return region.Chat.Resources
	default:
		return region.Presence.Resources
	}
}

// Replicas is the spec's replica count of one role in a region.
func Replicas(region *chatv1.Region, role chatv1.Role) int32 {
	switch role {
	case chatv1.RoleGateway:
		return region.Gateway.Replicas
	case chatv1.RoleChat:
		return region.Chat.Replicas
	default:
		return region.Presence.Replicas
	}
}
