// Package v1alpha1 holds the ChatCluster API (group chat.parley.io, version v1alpha1): the
// custom resource that declares a Parley deployment — its regions, per-role fleets, limits and
// rollout policy — and that parley-operator reconciles.
//
// +kubebuilder:object:generate=true
// +groupName=chat.parley.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of ChatCluster.
	GroupVersion = schema.GroupVersion{Group: "chat.parley.io", Version: "v1alpha1"}

	// SchemeBuilder registers this package's types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds ChatCluster and ChatClusterList to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
