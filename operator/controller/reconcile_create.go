package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"reflect"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/specs"
)

// ensure makes the API server hold desired: create it if absent; if present and its
// parley.io/spec-hash differs (or our controller reference is missing), copy the fields the
// operator owns with update and write it back. Equal hash, no write: a second pass over an
// unchanged ChatCluster writes nothing.
func ensure[T client.Object](ctx context.Context, r *Reconciler, owner *chatv1.ChatCluster, desired T, update func(existing, desired T)) (T, error) {
	if err := controllerutil.SetControllerReference(owner, desired, r.Scheme); err != nil {
		return desired, err
	}
	existing := reflect.New(reflect.TypeOf(desired).Elem()).Interface().(T)
	err := r.Client.Get(ctx, client.ObjectKeyFromObject(desired), existing)
	if apierrors.IsNotFound(err) {
		if err := r.Client.Create(ctx, desired); err != nil {
			return desired, fmt.Errorf("create %T %s: %w", desired, desired.GetName(), err)
		}
		log.FromContext(ctx).Info("created", "kind", fmt.Sprintf("%T", desired), "name", desired.GetName())
		return desired, nil
	}
	if err != nil {
		return desired, fmt.Errorf("get %T %s: %w", desired, desired.GetName(), err)
	}
	want := desired.GetAnnotations()[specs.AnnotationSpecHash]
	if want != "" && existing.GetAnnotations()[specs.AnnotationSpecHash] == want && metav1.IsControlledBy(existing, owner) {
		return existing, nil
	}
	update(existing, desired)
	labels := existing.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, desired.GetLabels())
	existing.SetLabels(labels)
	annotations := existing.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	maps.Copy(annotations, desired.GetAnnotations())
	existing.SetAnnotations(annotations)
	if err := controllerutil.SetControllerReference(owner, existing, r.Scheme); err != nil {
		return existing, err
	}
	if err := r.Client.Update(ctx, existing); err != nil {
		return existing, fmt.Errorf("update %T %s: %w", existing, existing.GetName(), err)
	}
	log.FromContext(ctx).Info("updated", "kind", fmt.Sprintf("%T", existing), "name", existing.GetName())
	return existing, nil
}

// ensureSecrets creates the gateways' admin token (and, in dev auth mode, the shared dev
// signing secret) once, with random values; existing Secrets are used as they are, so an
// administrator may provide their own (labelled app.kubernetes.io/managed-by=parley-operator).
func (r *Reconciler) ensureSecrets(ctx context.Context, p *pass) error {
	token, err := r.randomSecret(ctx, p, specs.AdminSecretName(p.cc), specs.AdminTokenKey)
	if err != nil {
		return err
	}
	p.token = string(token)
	if p.cc.Spec.Auth.JWKSURL == "" && p.cc.Spec.Auth.JWKSSecretRef == nil {
		if _, err := r.randomSecret(ctx, p, specs.DevSecretName(p.cc), specs.DevSecretKey); err != nil {
			return err
		}
	}
	return nil
}

func (r *Reconciler) randomSecret(ctx context.Context, p *pass, name, key string) ([]byte, error) {
	s := &corev1.Secret{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: p.cc.Namespace, Name: name}, s)
	if err == nil {
		if len(s.Data[key]) == 0 {
			return nil, fmt.Errorf("secret %s has no key %q", name, key)
		}
		return s.Data[key], nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get secret %s: %w", name, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	value := []byte(hex.EncodeToString(raw))
	s = specs.Secret(p.cc, name, key, value)
	if err := controllerutil.SetControllerReference(p.orig, s, r.Scheme); err != nil {
		return nil, err
	}
	if err := r.Client.Create(ctx, s); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// The operator's cache holds only Secrets it labels; one provided by hand must say so.
			return nil, fmt.Errorf("secret %s exists but the operator does not see it: label it %s=%s", name, specs.LabelManagedBy, specs.ManagedBy)
		}
		return nil, fmt.Errorf("create secret %s: %w", name, err)
	}
	return value, nil
}

// ensureConfig writes each region's and role's ConfigMap (the runtime's config), and each
// region's peers ConfigMap (the other regions, re-read by the runtime).
func (r *Reconciler) ensureConfig(ctx context.Context, p *pass) error {
	update := func(e, d *corev1.ConfigMap) {
		e.Data = d.Data
		e.BinaryData = nil
	}
	for _, region := range p.regions {
		for _, role := range chatv1.Roles {
			if _, err := ensure(ctx, r, p.orig, specs.ConfigMap(p.cc, region, role), update); err != nil {
				return err
			}
		}
		if _, err := ensure(ctx, r, p.orig, specs.PeersConfigMap(p.cc, region), update); err != nil {
			return err
		}
	}
	return nil
}

// ensureServices writes each role's headless Service and the region's client-facing one.
func (r *Reconciler) ensureServices(ctx context.Context, p *pass) error {
	update := func(e, d *corev1.Service) {
		// clusterIP, clusterIPs and allocated node ports stay as the API server set them.
		ports := d.Spec.Ports
		for i := range ports {
			for _, old := range e.Spec.Ports {
				if old.Name == ports[i].Name && ports[i].NodePort == 0 && d.Spec.Type != corev1.ServiceTypeClusterIP {
					ports[i].NodePort = old.NodePort
				}
			}
		}
		e.Spec.Ports = ports
		e.Spec.Selector = d.Spec.Selector
		e.Spec.Type = d.Spec.Type
		e.Spec.PublishNotReadyAddresses = d.Spec.PublishNotReadyAddresses
	}
	for _, region := range p.regions {
		for _, role := range chatv1.Roles {
			if _, err := ensure(ctx, r, p.orig, specs.HeadlessService(p.cc, region, role), update); err != nil {
				return err
			}
		}
		if _, err := ensure(ctx, r, p.orig, specs.ClientService(p.cc, region), update); err != nil {
			return err
		}
	}
	return nil
}

// ensureDisruptionBudgets writes each role's PodDisruptionBudget.
func (r *Reconciler) ensureDisruptionBudgets(ctx context.Context, p *pass) error {
	for _, region := range p.regions {
		for _, role := range chatv1.Roles {
			if _, err := ensure(ctx, r, p.orig, specs.DisruptionBudget(p.cc, region, role), func(e, d *policyv1.PodDisruptionBudget) {
				e.Spec = d.Spec
			}); err != nil {
				return err
			}
		}
	}
	return nil
}

// ensureStatefulSets writes the StatefulSets of every migrated region; a region whose
// migration has not succeeded keeps its pods' template, so no pod of a new version starts
// before its schema and topics exist. Gateway replicas come from the rollout plan (surge, and
// pods still to be drained).
func (r *Reconciler) ensureStatefulSets(ctx context.Context, p *pass) error {
	for _, region := range p.regions {
		if !p.migration[region.Name].done {
			continue
		}
		for _, role := range chatv1.Roles {
			want := specs.StatefulSet(p.cc, region, role, specs.Replicas(region, role))
			if role == chatv1.RoleGateway {
				if n, ok := p.plan.GatewayReplicas[region.Name]; ok {
					want = specs.GatewayStatefulSet(p.cc, region, p.plan.GatewayStart[region.Name], n)
				}
			}
			sts, err := ensure(ctx, r, p.orig, want, func(e, d *appsv1.StatefulSet) {
				// Selector, serviceName and podManagementPolicy never change for a given
				// region and role, so only the mutable fields are copied (gateway ordinals
				// slide during a rollout).
				e.Spec.Replicas = d.Spec.Replicas
				e.Spec.Template = d.Spec.Template
				e.Spec.UpdateStrategy = d.Spec.UpdateStrategy
				e.Spec.RevisionHistoryLimit = d.Spec.RevisionHistoryLimit
				e.Spec.Ordinals = d.Spec.Ordinals
			})
			if err != nil {
				return err
			}
			p.sts[roleKey(region.Name, role)] = sts
		}
	}
	return nil
}
