package controller

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/specs"
)

// updateStatus writes status: each region's roles and revisions, and the conditions Ready,
// Progressing and Degraded with the generation they describe. It writes only when something
// changed, so a pass over a settled cluster makes no write at all.
func (r *Reconciler) updateStatus(ctx context.Context, p *pass, stepErr error) error {
	status := buildStatus(p, stepErr)
	if equality.Semantic.DeepEqual(p.orig.Status, status) {
		return nil
	}
	updated := p.orig.DeepCopy()
	updated.Status = status
	if err := r.Client.Status().Patch(ctx, updated, client.MergeFrom(p.orig)); err != nil {
		return err
	}
	wasDegraded := meta.IsStatusConditionTrue(p.orig.Status.Conditions, chatv1.ConditionDegraded)
	if c := meta.FindStatusCondition(status.Conditions, chatv1.ConditionDegraded); c != nil && c.Status == metav1.ConditionTrue && !wasDegraded {
		r.event(p.orig, corev1.EventTypeWarning, EventDegraded, "Rollout", "%s", c.Message)
	}
	return nil
}

// regionTally is what a pass saw across its regions, for the conditions.
type regionTally struct {
	ready, migrating, rolling, draining int
	degraded, failed                    []string
	firstWait                           string // the first region's wait, in rollout order
}

// buildStatus computes the status of a pass; it also schedules the re-check of a region's
// progress deadline.
func buildStatus(p *pass, stepErr error) chatv1.ChatClusterStatus {
	cc := p.cc
	gen := p.orig.Generation
	prev := map[string]chatv1.RegionStatus{}
	for _, rs := range p.orig.Status.Regions {
		prev[rs.Name] = rs
	}
	status := chatv1.ChatClusterStatus{ObservedGeneration: gen, Conditions: cloneConditions(p.orig.Status.Conditions)}
	for _, region := range cc.Spec.Regions {
		if r := p.regionStatus(&region, prev[region.Name], gen); r != nil {
			status.Regions = append(status.Regions, *r)
		}
	}
	t := p.tally(status.Regions)
	status.ReadyRegions = fmt.Sprintf("%d/%d", t.ready, len(p.regions))

	set := func(typ string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	done := t.ready == len(p.regions) && len(p.removing) == 0

	// Degraded
	switch {
	case stepErr != nil:
		set(chatv1.ConditionDegraded, metav1.ConditionTrue, ReasonReconcileError, "reconcile failed: "+stepErr.Error())
	case len(t.failed) > 0:
		set(chatv1.ConditionDegraded, metav1.ConditionTrue, ReasonMigrationFailed, strings.Join(t.failed, "; "))
	case len(t.degraded) > 0:
		set(chatv1.ConditionDegraded, metav1.ConditionTrue, ReasonRegionNotReady, strings.Join(t.degraded, "; "))
	default:
		set(chatv1.ConditionDegraded, metav1.ConditionFalse, ReasonAsExpected, "no region is stuck")
	}

	reason, msg := p.progress(t, done)
	progressing := metav1.ConditionTrue
	if done || cc.Spec.Rollout.Paused || len(t.failed) > 0 || len(t.degraded) > 0 {
		progressing = metav1.ConditionFalse
	}
	set(chatv1.ConditionProgressing, progressing, reason, msg)

	// Ready
	if done && stepErr == nil {
		set(chatv1.ConditionReady, metav1.ConditionTrue, ReasonAllRegionsReady, fmt.Sprintf("%d regions Ready", len(p.regions)))
	} else {
		switch {
		case len(t.degraded) > 0 && !done:
			reason, msg = ReasonRegionNotReady, strings.Join(t.degraded, "; ")
		case stepErr != nil:
			reason, msg = ReasonReconcileError, "reconcile failed: "+stepErr.Error()
		}
		set(chatv1.ConditionReady, metav1.ConditionFalse, reason, msg)
	}
	sort.Slice(status.Conditions, func(i, j int) bool { return status.Conditions[i].Type < status.Conditions[j].Type })
	return status
}

// tally counts the reconciled regions' states from the plan, the migrations and the regions'
// statuses, and flags regions past their progress deadline (scheduling a re-check for the
// others that wait).
func (p *pass) tally(regions []chatv1.RegionStatus) regionTally {
	var t regionTally
	deadline := p.cc.Spec.Rollout.ProgressDeadline.Duration
	for _, region := range p.regions {
		rp := p.plan.Regions[region.Name]
		mig := p.migration[region.Name]
		if rp.Done {
			t.ready++
		}
		if !mig.done {
			t.migrating++
			if mig.failed != "" {
				t.failed = append(t.failed, fmt.Sprintf("region %s: %s; fix it and change the image or delete the Job to retry (kubectl logs job/%s)", region.Name, mig.failed, mig.job))
			}
		}
		if rp.Old > 0 {
			t.rolling++
		}
		if rp.Draining {
			t.draining++
		}
		if !rp.Done && t.firstWait == "" && mig.done {
			t.firstWait = fmt.Sprintf("region %s: %s", region.Name, rp.Waiting)
		}
		rs := findRegion(regions, region.Name)
		if rs == nil || rs.WaitingSince == nil {
			continue
		}
		if waited := p.now.Sub(rs.WaitingSince.Time); waited >= deadline {
			t.degraded = append(t.degraded, fmt.Sprintf("region %s has had %d pods not Ready for %s (progressDeadline %s); the rollout stops there until they are: check `kubectl get pods -l %s=%s,%s=%s`",
				region.Name, rp.Unready, waited.Round(time.Second), deadline, specs.LabelInstance, p.cc.Name, specs.LabelRegion, region.Name))
		} else {
			p.requeueAfter(deadline - waited + time.Second)
		}
	}
	return t
}

// progress is the Progressing condition's reason and message: why the cluster is not done, in
// the order a person would look.
func (p *pass) progress(t regionTally, done bool) (reason, msg string) {
	reason, msg = ReasonRolloutComplete, "every region runs the desired revision"
	switch {
	case done:
	case p.cc.Spec.Rollout.Paused:
		reason, msg = ReasonRolloutPaused, "rollout paused: set spec.rollout.paused to false to continue"
	case len(t.failed) > 0:
		reason, msg = ReasonMigrationFailed, strings.Join(t.failed, "; ")
	case t.migrating > 0:
		reason, msg = ReasonMigrating, fmt.Sprintf("%d regions wait for parley migrate", t.migrating)
	case t.draining > 0:
		reason, msg = ReasonDraining, t.firstWait
	case t.rolling > 0:
		reason, msg = ReasonRollingOut, t.firstWait
	case len(p.removing) > 0:
		reason, msg = ReasonRemovingRegion, "removing regions: "+strings.Join(p.removingWhy, "; ")
	default:
		reason, msg = ReasonWaitingForPods, t.firstWait
	}
	if msg == "" {
		msg = reason
	}
	return reason, msg
}

// regionStatus reports one reconciled region; nil for regions another operator reconciles.
func (p *pass) regionStatus(region *chatv1.Region, prev chatv1.RegionStatus, gen int64) *chatv1.RegionStatus {
	reconciled := false
	for _, r := range p.regions {
		reconciled = reconciled || r.Name == region.Name
	}
	if !reconciled {
		return nil
	}
	rp := p.plan.Regions[region.Name]
	mig := p.migration[region.Name]
	rs := &chatv1.RegionStatus{Name: region.Name, ID: region.ID, Ready: rp.Done,
		MigratedImage: prev.MigratedImage, Migration: prev.Migration}
	if mig.done && mig.key != prev.Migration {
		rs.Migration, rs.MigratedImage = mig.key, p.cc.Spec.Image
	}
	// WaitingSince: when pods of the region that should be Ready first were not.
	if rp.Unready > 0 && p.stsExists(region.Name) {
		rs.WaitingSince = prev.WaitingSince
		if rs.WaitingSince == nil {
			t := metav1.NewTime(p.now.Truncate(time.Second))
			rs.WaitingSince = &t
		}
	}
	for _, role := range chatv1.Roles {
		rs.Roles = append(rs.Roles, p.roleStatus(region, role))
	}
	return rs
}

func (p *pass) stsExists(region string) bool {
	for _, role := range chatv1.Roles {
		if _, ok := p.sts[roleKey(region, role)]; ok {
			return true
		}
	}
	return len(p.pods[roleKey(region, chatv1.RoleGateway)])+len(p.pods[roleKey(region, chatv1.RoleChat)]) > 0
}

func (p *pass) roleStatus(region *chatv1.Region, role chatv1.Role) chatv1.RoleStatus {
	rs := chatv1.RoleStatus{Role: role, Replicas: specs.Replicas(region, role)}
	if p.migration[region.Name].done {
		rs.Revision = specs.PodTemplate(p.cc, region, role).Labels[specs.LabelRevision]
	} else if sts := p.sts[roleKey(region.Name, role)]; sts != nil {
		rs.Revision = specs.Revision(sts)
	}
	counts := map[string]int{}
	for _, pod := range p.pods[roleKey(region.Name, role)] {
		rev := pod.Labels[specs.LabelRevision]
		counts[rev]++
		if podReady(pod) {
			rs.ReadyReplicas++
		}
		if rev == rs.Revision && rs.Revision != "" {
			rs.UpdatedReplicas++
		}
	}
	for rev, n := range counts {
		rs.Revisions = append(rs.Revisions, fmt.Sprintf("%s=%d", rev, n))
	}
	sort.Strings(rs.Revisions)
	return rs
}

func findRegion(regions []chatv1.RegionStatus, name string) *chatv1.RegionStatus {
	for i := range regions {
		if regions[i].Name == name {
			return &regions[i]
		}
	}
	return nil
}

func cloneConditions(in []metav1.Condition) []metav1.Condition {
	if in == nil {
		return nil
	}
	out := make([]metav1.Condition, len(in))
	copy(out, in)
	return out
}
