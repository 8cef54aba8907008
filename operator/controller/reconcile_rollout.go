package controller

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/specs"
)

// observePods lists the ChatCluster's pods and polls the gateways being drained: a draining pod
// is drained when it reports zero connections or drainTimeout has passed since its drain began.
func (r *Reconciler) observePods(ctx context.Context, p *pass) error {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(p.cc.Namespace), ownedSelector(p.cc)); err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !pod.DeletionTimestamp.IsZero() {
			continue // terminating: counts as missing
		}
		key := roleKey(pod.Labels[specs.LabelRegion], chatv1.Role(pod.Labels[specs.LabelRole]))
		p.pods[key] = append(p.pods[key], pod)
		if _, draining := pod.Annotations[specs.AnnotationDrainStarted]; draining && !p.cc.Spec.Rollout.Paused {
			p.drained[pod.Name] = r.pollDrain(ctx, p, pod)
		}
	}
	return nil
}

// pollDrain reports whether a draining gateway is done. It re-sends the drain request when the
// pod says it is not draining (the first request was lost, or the process restarted).
func (r *Reconciler) pollDrain(ctx context.Context, p *pass, pod *corev1.Pod) bool {
	logger := log.FromContext(ctx).WithValues("pod", pod.Name)
	timeout := p.cc.Spec.Rollout.DrainTimeout.Duration
	started, err := time.Parse(time.RFC3339Nano, pod.Annotations[specs.AnnotationDrainStarted])
	if err != nil || p.now.Sub(started) >= timeout {
		r.event(p.orig, corev1.EventTypeWarning, EventDrainTimeout, "Drain",
			"gateway %s still had connections after drainTimeout %s; deleting it", pod.Name, timeout)
		return true
	}
	p.requeueAfter(min(r.drainPoll(), timeout-p.now.Sub(started)+time.Second))
	callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := r.admin().Status(callCtx, pod, p.token)
	if err != nil {
		logger.Info("drain status unknown; waiting until drainTimeout", "error", err.Error())
		return false
	}
	if !st.Draining {
		if st, err = r.admin().Drain(callCtx, pod, p.token, drainWindow(p, pod)); err != nil {
			logger.Info("re-sending drain failed", "error", err.Error())
			return false
		}
	}
	logger.V(1).Info("draining", "connections", st.Connections)
	return st.Draining && st.Connections == 0
}

// drainWindow is how long the gateway spreads its clients' reconnect frames over, chosen so
// that every gateway taking drained clients sees about the same reconnect rate in every batch
// (issue 12: no gateway above 2× the mean reconnect rate): the first batch of a rollout lands
// on the maxSurge new gateways alone and gets 0.9 × drainTimeout; a later batch, taken by more
// new gateways, a proportionally shorter window. Windows depend only on what the pass observed,
// so a re-sent drain asks for the same spread as the first request.
func drainWindow(p *pass, pod *corev1.Pod) time.Duration {
	timeout := p.cc.Spec.Rollout.DrainTimeout.Duration
	region := p.region(pod.Labels[specs.LabelRegion])
	if region == nil {
		return timeout / 2
	}
	rev := specs.PodTemplate(p.cc, region, chatv1.RoleGateway).Labels[specs.LabelRevision]
	taking := 0
	for _, g := range p.pods[roleKey(region.Name, chatv1.RoleGateway)] {
		if g.Labels[specs.LabelRevision] == rev && g.Labels[specs.LabelAccepting] == "true" && podReady(g) {
			taking++
		}
	}
	return drainSpread(timeout, p.cc.Spec.Rollout.Surge(), taking)
}

// drainSpread is drainWindow's rule: 0.9 × timeout × surge/taking, at least timeout/10;
// timeout/2 when no new gateway takes the clients (maxSurge 0: they go to old ones).
func drainSpread(timeout time.Duration, surge int32, taking int) time.Duration {
	if taking == 0 || surge <= 0 {
		return timeout / 2
	}
	w := timeout * 9 / 10 * time.Duration(min(int(surge), taking)) / time.Duration(taking)
	return max(w, timeout/10)
}

// planRollout turns what was observed into the planner's input and keeps its plan.
func (r *Reconciler) planRollout(ctx context.Context, p *pass) error {
	in := RolloutInput{
		MaxUnavailable: p.cc.Spec.Rollout.MaxUnavailable,
		MaxSurge:       p.cc.Spec.Rollout.Surge(),
		Paused:         p.cc.Spec.Rollout.Paused,
	}
	for _, region := range p.regions {
		ri := RegionInput{Name: region.Name, Migrated: p.migration[region.Name].done}
		for _, role := range chatv1.Roles {
			v := RoleView{Role: role, Start: specs.OrdinalStart(region, role), Replicas: specs.Replicas(region, role)}
			if ri.Migrated {
				v.Revision = specs.PodTemplate(p.cc, region, role).Labels[specs.LabelRevision]
			} else {
				sts := &appsv1.StatefulSet{}
				err := r.Client.Get(ctx, client.ObjectKey{Namespace: p.cc.Namespace, Name: specs.ObjectName(p.cc, region.Name, role)}, sts)
				if client.IgnoreNotFound(err) != nil {
					return fmt.Errorf("get statefulset: %w", err)
				}
				if err == nil {
					v.Revision = specs.Revision(sts)
				}
			}
			if role == chatv1.RoleGateway {
				// The window of gateway ordinals as it stands (planGateway slides it), read
				// around the cache: a cached StatefulSet older than the cached pods would move
				// the window back and drain a gateway at the new revision (seen in
				// test/operator TestRollout).
				sts := &appsv1.StatefulSet{}
				err := r.reader().Get(ctx, client.ObjectKey{Namespace: p.cc.Namespace, Name: specs.ObjectName(p.cc, region.Name, role)}, sts)
				if client.IgnoreNotFound(err) != nil {
					return fmt.Errorf("get statefulset: %w", err)
				}
				if err == nil {
					if sts.Spec.Ordinals != nil {
						v.Start = sts.Spec.Ordinals.Start
					}
					v.Window = ptr.Deref(sts.Spec.Replicas, 0)
				}
			}
			v.Pods = p.podViews(region.Name, role)
			ri.Roles = append(ri.Roles, v)
		}
		in.Regions = append(in.Regions, ri)
	}
	p.plan = PlanRollout(in)
	return nil
}

func (p *pass) podViews(region string, role chatv1.Role) []PodView {
	var views []PodView
	for _, pod := range p.pods[roleKey(region, role)] {
		ord, err := specs.PodOrdinal(pod.Name)
		if err != nil {
			continue
		}
		_, draining := pod.Annotations[specs.AnnotationDrainStarted]
		views = append(views, PodView{
			Name:      pod.Name,
			Ordinal:   ord,
			Revision:  pod.Labels[specs.LabelRevision],
			Ready:     podReady(pod),
			Accepting: pod.Labels[specs.LabelAccepting] == "true",
			Draining:  draining,
			Drained:   p.drained[pod.Name],
		})
	}
	return views
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// rollOut carries out the plan: delete the pods whose turn came (drained gateways, old chat and
// presence pods) and start draining the next gateways.
func (r *Reconciler) rollOut(ctx context.Context, p *pass) error {
	byName := map[string]*corev1.Pod{}
	for _, pods := range p.pods {
		for _, pod := range pods {
			byName[pod.Name] = pod
		}
	}
	for _, name := range p.plan.Delete {
		if pod := byName[name]; pod != nil {
			if err := r.deletePod(ctx, p, pod); err != nil {
				return err
			}
		}
	}
	for _, name := range p.plan.Drain {
		if pod := byName[name]; pod != nil {
			if err := r.startDrain(ctx, p, pod); err != nil {
				return err
			}
		}
	}
	for name, accepting := range p.plan.SetAccepting {
		if pod := byName[name]; pod != nil && !slices.Contains(p.plan.Drain, name) {
			if err := r.setAccepting(ctx, pod, accepting); err != nil {
				return err
			}
		}
	}
	for _, rp := range p.plan.Regions {
		if rp.Draining || len(p.plan.Drain) > 0 {
			p.requeueAfter(r.drainPoll())
		}
	}
	return nil
}

func (r *Reconciler) deletePod(ctx context.Context, p *pass, pod *corev1.Pod) error {
	uid := pod.UID
	err := r.Client.Delete(ctx, pod, client.Preconditions{UID: &uid})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %s: %w", pod.Name, err)
	}
	log.FromContext(ctx).Info("deleted pod", "pod", pod.Name, "revision", pod.Labels[specs.LabelRevision])
	r.event(p.orig, corev1.EventTypeNormal, EventPodReplaced, "Delete",
		"deleted %s pod %s of revision %s", pod.Labels[specs.LabelRole], pod.Name, pod.Labels[specs.LabelRevision])
	return nil
}

// setAccepting puts a gateway into the client-facing Service or takes it out
// (parley.io/accepting) without draining it: its connected clients stay.
func (r *Reconciler) setAccepting(ctx context.Context, pod *corev1.Pod, accepting bool) error {
	v := strconv.FormatBool(accepting)
	if pod.Labels[specs.LabelAccepting] == v {
		return nil
	}
	patch := client.MergeFrom(pod.DeepCopy())
	pod.Labels[specs.LabelAccepting] = v
	if err := r.Client.Patch(ctx, pod, patch); err != nil {
		return fmt.Errorf("mark pod %s accepting=%s: %w", pod.Name, v, err)
	}
	log.FromContext(ctx).Info("gateway accepting", "pod", pod.Name, "accepting", v)
	return nil
}

// startDrain takes a gateway out of the client-facing Service (parley.io/accepting=false),
// records when its drain began, and asks the gateway to drain. A failed request is retried by
// pollDrain; drainTimeout bounds the wait either way.
func (r *Reconciler) startDrain(ctx context.Context, p *pass, pod *corev1.Pod) error {
	patch := client.MergeFrom(pod.DeepCopy())
	pod.Labels[specs.LabelAccepting] = "false"
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[specs.AnnotationDrainStarted] = p.now.UTC().Format(time.RFC3339Nano)
	if err := r.Client.Patch(ctx, pod, patch); err != nil {
		return fmt.Errorf("mark pod %s not accepting: %w", pod.Name, err)
	}
	callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := r.admin().Drain(callCtx, pod, p.token, drainWindow(p, pod))
	if err != nil {
		log.FromContext(ctx).Info("drain request failed; will retry", "pod", pod.Name, "error", err.Error())
	}
	r.event(p.orig, corev1.EventTypeNormal, EventDrainStarted, "Drain",
		"draining gateway %s (%d connections, window %s, timeout %s)", pod.Name, st.Connections, drainWindow(p, pod), p.cc.Spec.Rollout.DrainTimeout.Duration)
	return nil
}

// event records an event on the ChatCluster; a nil recorder (unit tests) records nothing.
func (r *Reconciler) event(obj runtime.Object, eventType, reason, action, note string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(obj, nil, eventType, reason, action, note, args...)
	}
}

// reader is APIReader, or Client when it is unset.
func (r *Reconciler) reader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}

// region returns the reconciled region called name, or nil.
func (p *pass) region(name string) *chatv1.Region {
	for _, r := range p.regions {
		if r.Name == name {
			return r
		}
	}
	return nil
}
