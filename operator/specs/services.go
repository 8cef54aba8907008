package specs

import (
	"maps"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
)

// HeadlessService gives each pod of a region's role a stable DNS name
// (<pod>.<cluster>-<region>-<role>); it lists pods before they are Ready, since peers of a
// StatefulSet find each other by name, not by readiness.
func HeadlessService(cc *chatv1.ChatCluster, region *chatv1.Region, role chatv1.Role) *corev1.Service {
	labels := Labels(cc, region.Name, role)
	spec := corev1.ServiceSpec{
		ClusterIP:                corev1.ClusterIPNone,
		Selector:                 Selector(cc, region.Name, role),
		PublishNotReadyAddresses: true,
		Ports: []corev1.ServicePort{{
			Name: "http", Port: HTTPPort, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP,
		}},
	}
	return &corev1.Service{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        ObjectName(cc, region.Name, role),
			Namespace:   cc.Namespace,
			Labels:      labels,
			Annotations: stamp(labels, nil, spec),
		},
		Spec: spec,
	}
}

// ClientService is the region's client-facing Service, "<cluster>-<region>". It selects only
// gateway pods labelled parley.io/accepting=true: the operator takes that label off a pod before
// draining it, so reconnecting clients land on pods that stay.
func ClientService(cc *chatv1.ChatCluster, region *chatv1.Region) *corev1.Service {
	labels := Labels(cc, region.Name, chatv1.RoleGateway)
	selector := Selector(cc, region.Name, chatv1.RoleGateway)
	selector[LabelAccepting] = "true"
	svc := region.Gateway.Service
	spec := corev1.ServiceSpec{
		Type:     svc.Type,
		Selector: selector,
		Ports: []corev1.ServicePort{{
			Name: "http", Port: svc.Port, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP,
		}},
	}
	return &corev1.Service{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        ClientServiceName(cc, region.Name),
			Namespace:   cc.Namespace,
			Labels:      labels,
			Annotations: stamp(labels, maps.Clone(svc.Annotations), spec),
		},
		Spec: spec,
	}
}

// DisruptionBudget limits voluntary evictions (node drains) of a region's role to
// rollout.maxUnavailable pods at a time. The operator's own deletions are not evictions: it
// paces them itself.
func DisruptionBudget(cc *chatv1.ChatCluster, region *chatv1.Region, role chatv1.Role) *policyv1.PodDisruptionBudget {
	labels := Labels(cc, region.Name, role)
	maxUnavailable := intstr.FromInt32(cc.Spec.Rollout.MaxUnavailable)
	spec := policyv1.PodDisruptionBudgetSpec{
		Selector:       &metav1.LabelSelector{MatchLabels: Selector(cc, region.Name, role)},
		MaxUnavailable: &maxUnavailable,
	}
	return &policyv1.PodDisruptionBudget{
		TypeMeta: metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        ObjectName(cc, region.Name, role),
			Namespace:   cc.Namespace,
			Labels:      labels,
			Annotations: stamp(labels, nil, spec),
		},
		Spec: spec,
	}
}

// Secret is a cluster-wide Secret the operator generates once (admin token, dev secret) with
// value under key. The value comes from the caller: builders stay free of randomness.
func Secret(cc *chatv1.ChatCluster, name, key string, value []byte) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: cc.Namespace,
			Labels:    ClusterLabels(cc),
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{key: value},
	}
}
