package controller

import (
	"context"
	"fmt"
	"sort"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/specs"
)

// removeRegions deletes the fleets of regions that left the spec: it drains every gateway of
// such a region first (clients reconnect elsewhere), then waits until the region's outbox is
// empty (sends it accepted while their home region was unreachable are forwarded by its chat
// pods, which keep running meanwhile), and only then deletes the region's StatefulSets,
// Services, PodDisruptionBudgets, ConfigMaps and Jobs. An outbox that cannot be read keeps the
// region waiting: deleting it would strand accepted sends (issue 10: nothing accepted is lost);
// the Progressing condition says why.
func (r *Reconciler) removeRegions(ctx context.Context, p *pass) error {
	gone, err := r.orphanRegions(ctx, p)
	if err != nil {
		return err
	}
	for _, region := range gone {
		gateways := p.pods[roleKey(region, chatv1.RoleGateway)]
		undrained := 0
		for _, pod := range gateways {
			if _, draining := pod.Annotations[specs.AnnotationDrainStarted]; !draining {
				if err := r.startDrain(ctx, p, pod); err != nil {
					return err
				}
				undrained++
			} else if !p.drained[pod.Name] {
				undrained++
			}
		}
		if undrained > 0 {
			p.removing = append(p.removing, region)
			p.removingWhy = append(p.removingWhy, fmt.Sprintf("%s: draining %d gateways", region, undrained))
			p.requeueAfter(r.drainPoll())
			continue
		}
		if wait := r.outboxWait(ctx, p, region); wait != "" {
			p.removing = append(p.removing, region)
			p.removingWhy = append(p.removingWhy, region+": "+wait)
			p.requeueAfter(r.drainPoll())
			continue
		}
		for _, pod := range gateways {
			if err := r.deletePod(ctx, p, pod); err != nil {
				return err
			}
		}
		if err := r.deleteRegionObjects(ctx, p, region); err != nil {
			return err
		}
		log.FromContext(ctx).Info("region removed", "region", region)
		r.event(p.orig, corev1.EventTypeNormal, EventRegionRemoved, "Delete",
			"region %s removed: its gateways were drained and its fleets deleted", region)
	}
	return nil
}

// outboxWait asks the removed region's chat pods for its outbox and says what removal waits
// for: "" once a pod reports it empty, or when the region has no chat pod (nothing can have
// been accepted into its outbox, and nothing could forward it).
func (r *Reconciler) outboxWait(ctx context.Context, p *pass, region string) string {
	chats := p.pods[roleKey(region, chatv1.RoleChat)]
	if len(chats) == 0 {
		return ""
	}
	var last error
	for _, pod := range chats {
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := r.admin().Outbox(callCtx, pod, p.token)
		cancel()
		if err != nil {
			last = err
			continue
		}
		if st.Pending > 0 {
			return fmt.Sprintf("waiting for %d accepted sends in its outbox to reach their home regions", st.Pending)
		}
		return ""
	}
	log.FromContext(ctx).Info("outbox of a removed region unknown; waiting", "region", region, "error", last.Error())
	return fmt.Sprintf("waiting to read its outbox (%v)", last)
}

// orphanRegions lists regions that have objects but are not in the spec (in --region mode,
// only the operator's own region counts).
func (r *Reconciler) orphanRegions(ctx context.Context, p *pass) ([]string, error) {
	want := map[string]bool{}
	for _, region := range p.cc.Spec.Regions {
		want[region.Name] = true
	}
	found := map[string]bool{}
	lists := []client.ObjectList{&appsv1.StatefulSetList{}, &corev1.ServiceList{}, &corev1.ConfigMapList{}, &policyv1.PodDisruptionBudgetList{}}
	for _, list := range lists {
		if err := r.Client.List(ctx, list, client.InNamespace(p.cc.Namespace), ownedSelector(p.cc)); err != nil {
			return nil, fmt.Errorf("list %T: %w", list, err)
		}
		items, err := metaItems(list)
		if err != nil {
			return nil, err
		}
		for _, labels := range items {
			region := labels[specs.LabelRegion]
			if region == "" || want[region] || (r.Region != "" && region != r.Region) {
				continue
			}
			found[region] = true
		}
	}
	var gone []string
	for region := range found {
		gone = append(gone, region)
	}
	sort.Strings(gone)
	return gone, nil
}

func metaItems(list client.ObjectList) ([]map[string]string, error) {
	var out []map[string]string
	switch l := list.(type) {
	case *appsv1.StatefulSetList:
		for _, o := range l.Items {
			out = append(out, o.Labels)
		}
	case *corev1.ServiceList:
		for _, o := range l.Items {
			out = append(out, o.Labels)
		}
	case *corev1.ConfigMapList:
		for _, o := range l.Items {
			out = append(out, o.Labels)
		}
	case *policyv1.PodDisruptionBudgetList:
		for _, o := range l.Items {
			out = append(out, o.Labels)
		}
	default:
		return nil, fmt.Errorf("unexpected list %T", list)
	}
	return out, nil
}

func (r *Reconciler) deleteRegionObjects(ctx context.Context, p *pass, region string) error {
	sel := ownedSelector(p.cc)
	sel[specs.LabelRegion] = region
	opts := []client.DeleteAllOfOption{client.InNamespace(p.cc.Namespace), sel, client.PropagationPolicy("Background")}
	for _, obj := range []client.Object{&appsv1.StatefulSet{}, &policyv1.PodDisruptionBudget{}, &corev1.ConfigMap{}, &batchv1.Job{}} {
		if err := r.Client.DeleteAllOf(ctx, obj, opts...); err != nil {
			return fmt.Errorf("delete %T of region %s: %w", obj, region, err)
		}
	}
	// Services have no deletecollection verb in every API version; delete them one by one.
	var svcs corev1.ServiceList
	if err := r.Client.List(ctx, &svcs, client.InNamespace(p.cc.Namespace), sel); err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	for i := range svcs.Items {
		if err := r.Client.Delete(ctx, &svcs.Items[i]); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete service %s: %w", svcs.Items[i].Name, err)
		}
	}
	return nil
}
