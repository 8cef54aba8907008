// Package v1alpha1 holds the ChatCluster API (group chat.parley.io, version v1alpha1): the
// custom resource that declares a Parley deployment — its regions, per-role fleets, limits and
// rollout policy — and that parley-operator reconciles.
//
// +kubebuilder:object:generate=true
// +groupName=chat.parley.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the API group and version of ChatCluster.
	GroupVersion = schema.GroupVersion{Group: "chat.parley.io", Version: "v1alpha1"}

	// SchemeBuilder registers this package's types with a runtime.Scheme (apimachinery's
	// builder: an API package depends on k8s.io/apimachinery only, not on controller-runtime).
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds ChatCluster and ChatClusterList to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes registers ChatCluster and ChatClusterList under GroupVersion.
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &ChatCluster{}, &ChatClusterList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
