package operator

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/specs"
)

// settle creates cc, runs its migrations and waits until it is Ready.
func (h *harness) settle(cc *chatv1.ChatCluster) *chatv1.ChatCluster {
	h.t.Helper()
	h.create(cc)
	h.migrateThrough(len(cc.Spec.Regions))
	return h.waitCondition(cc, chatv1.ConditionReady, metav1.ConditionTrue, "AllRegionsReady", 60*time.Second)
}

// revisions maps each region/role to its pods' revisions.
func (h *harness) revisionsOf(cc *chatv1.ChatCluster, region string, role chatv1.Role) []string {
	var out []string
	for _, p := range h.pods(specs.Selector(cc, region, role)) {
		out = append(out, p.Labels[specs.LabelRevision])
	}
	return out
}

// TestRollout: a new image runs the migrate Job before any pod of it exists, then rolls region
// by region in regionOrder, chat → presence → gateway within a region; gateways surge first,
// then are drained batch by batch (out of the client Service before the drain call, removed
// only after it) while the StatefulSet's ordinal window slides up; a second rollout slides it
// back down.
func TestRollout(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	cc := h.newCluster("chat", "parley:1", testRegion("eu", 0, 2, 2, 1), testRegion("us", 1, 2, 2, 1))
	cc.Spec.Rollout.RegionOrder = []string{"us", "eu"}
	cc = h.settle(cc)
	oldRev := map[string]string{}
	for _, region := range []string{"eu", "us"} {
		for _, role := range chatv1.Roles {
			oldRev[region+"/"+string(role)] = h.revisionsOf(cc, region, role)[0]
		}
	}

	mark := h.log.mark()
	h.update(cc, func(cc *chatv1.ChatCluster) { cc.Spec.Image = "parley:2" })

	// Migration first: until its Job succeeds, no StatefulSet carries the new image.
	h.waitCondition(cc, chatv1.ConditionProgressing, metav1.ConditionTrue, "Migrating", 20*time.Second)
	h.eventually("migrate job for parley:2", 20*time.Second, func() (bool, error) {
		for _, j := range h.jobs() {
			if j.Annotations["parley.io/image"] == "parley:2" {
				return true, nil
			}
		}
		return false, nil
	})
	for _, name := range []string{"chat-us-chat", "chat-eu-chat", "chat-us-gateway", "chat-eu-gateway"} {
		if img := h.sts(name).Spec.Template.Spec.Containers[0].Image; img != "parley:1" {
			t.Fatalf("statefulset %s has image %s before its migration succeeded", name, img)
		}
	}
	h.migrateThrough(2)
	cc = h.waitCondition(cc, chatv1.ConditionReady, metav1.ConditionTrue, "AllRegionsReady", 120*time.Second)

	// Every pod runs the new revision; the surge is gone.
	for _, region := range []string{"eu", "us"} {
		for _, role := range chatv1.Roles {
			revs := h.revisionsOf(cc, region, role)
			for _, rev := range revs {
				if rev == oldRev[region+"/"+string(role)] {
					t.Errorf("%s/%s still has a pod at the old revision: %v", region, role, revs)
				}
			}
		}
		if n := *h.sts("chat-" + region + "-gateway").Spec.Replicas; n != 2 {
			t.Errorf("%s gateway statefulset has %d replicas after the rollout, want 2", region, n)
		}
	}

	entries := h.log.since(mark)
	rank := func(labels map[string]string) int {
		regionRank := map[string]int{"us": 0, "eu": 1}[labels[specs.LabelRegion]]
		return regionRank*3 + slices.Index(chatv1.Roles, chatv1.Role(labels[specs.LabelRole]))
	}
	// 1. Old pods go strictly in order: us chat, us presence, us gateway, eu chat, …
	last, order := -1, []string{}
	for _, e := range entries {
		if e.Kind != "pod-deleted" || e.Labels[specs.LabelRevision] != oldRev[e.Labels[specs.LabelRegion]+"/"+e.Labels[specs.LabelRole]] {
			continue
		}
		order = append(order, e.Name)
		if r := rank(e.Labels); r < last {
			t.Errorf("pod %s (%s/%s) deleted after a later step of the rollout; order so far %v", e.Name, e.Labels[specs.LabelRegion], e.Labels[specs.LabelRole], order)
		} else {
			last = r
		}
	}
	if len(order) != 10 {
		t.Errorf("%d old pods deleted, want 10: %v", len(order), order)
	}
	t.Logf("old pods deleted in order: %v", order)

	// 2. Gateways slide their ordinal window: a gateway at the new revision (ordinal 2) was
	// added before the region's first drain; every drain came after accepting=false and went to
	// a gateway at the old revision (a drained client lands on a gateway that stays); each old
	// gateway was removed only after its drain; the window ends at ordinals 2 and 3.
	h.checkGatewaySlide(cc, entries, oldRev, 2)

	// A second rollout slides the window back down to ordinal 0.
	for _, region := range []string{"eu", "us"} {
		oldRev[region+"/gateway"] = h.revisionsOf(cc, region, chatv1.RoleGateway)[0]
	}
	mark2 := h.log.mark()
	h.update(cc, func(cc *chatv1.ChatCluster) { cc.Spec.Image = "parley:3" })
	h.eventually("migrate job for parley:3", 20*time.Second, func() (bool, error) {
		for _, j := range h.jobs() {
			if j.Annotations["parley.io/image"] == "parley:3" {
				return true, nil
			}
		}
		return false, nil
	})
	h.migrateThrough(2)
	h.waitCondition(cc, chatv1.ConditionReady, metav1.ConditionTrue, "AllRegionsReady", 120*time.Second)
	h.checkGatewaySlide(cc, h.log.since(mark2), oldRev, 0)

	// 3. The migrate Jobs of parley:2 finished before any pod of the new revision was added.
	firstNew, lastJob := -1, -1
	for _, e := range entries {
		if e.Kind == "job-complete" {
			lastJob = max(lastJob, e.Seq)
		}
		if e.Kind == "pod-added" && firstNew < 0 && e.Labels[specs.LabelRevision] != oldRev[e.Labels[specs.LabelRegion]+"/"+e.Labels[specs.LabelRole]] {
			firstNew = e.Seq
		}
	}
	if lastJob < 0 || firstNew < 0 {
		t.Errorf("no job completion (%d) or new pod (%d) seen", lastJob, firstNew)
	}
	// us migrates first and may start rolling while eu migrates; the first new pod must come
	// after the first completion at least.
	for _, e := range entries {
		if e.Kind == "job-complete" {
			if e.Seq > firstNew {
				// eu's completion may follow us pods; make sure no eu pod preceded it.
				for _, p := range entries {
					if p.Kind == "pod-added" && p.Seq < e.Seq && p.Labels[specs.LabelRegion] == e.Labels[specs.LabelRegion] &&
						p.Labels[specs.LabelRevision] != oldRev[p.Labels[specs.LabelRegion]+"/"+p.Labels[specs.LabelRole]] {
						t.Errorf("pod %s of the new revision added before region %s migrated", p.Name, e.Labels[specs.LabelRegion])
					}
				}
			}
		}
	}

	// The old migrate Jobs were cleaned up; the new ones remain for their logs.
	for _, j := range h.jobs() {
		if j.Annotations["parley.io/image"] != "parley:3" {
			t.Errorf("old migrate job %s still exists", j.Name)
		}
	}
}

// TestDrainTimeout: a gateway whose connections never drop is deleted once drainTimeout passed
// since its drain began, not before.
func TestDrainTimeout(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	cc := h.newCluster("dt", "parley:1", testRegion("eu", 0, 1, 1, 1))
	cc.Spec.Rollout.DrainTimeout = &metav1.Duration{Duration: 2 * time.Second}
	cc.Spec.Rollout.MaxSurge = ptr.To[int32](0)
	cc = h.settle(cc)
	h.gw.setStuck("dt-eu-gateway-0")
	mark := h.log.mark()
	h.update(cc, func(cc *chatv1.ChatCluster) { cc.Spec.Image = "parley:2" })
	h.migrateThrough(1)
	h.waitCondition(cc, chatv1.ConditionReady, metav1.ConditionTrue, "AllRegionsReady", 60*time.Second)

	var drainAt, deletedAt, started time.Time
	var lastConns string
	for _, e := range h.log.since(mark) {
		if e.Name != "dt-eu-gateway-0" {
			continue
		}
		switch {
		case e.Kind == "drain" && drainAt.IsZero():
			drainAt = e.At
		case e.Kind == "status" && deletedAt.IsZero():
			lastConns = e.Extra["connections"]
		case e.Kind == "pod-deleted" && !drainAt.IsZero() && deletedAt.IsZero():
			deletedAt = e.At
			var err error
			if started, err = time.Parse(time.RFC3339Nano, e.Extra["drainStarted"]); err != nil {
				t.Fatalf("deleted gateway has no drain-started annotation: %v", err)
			}
		}
	}
	if drainAt.IsZero() || deletedAt.IsZero() {
		t.Fatalf("drain at %v, deleted at %v: want both", drainAt, deletedAt)
	}
	// The drain began when the operator took the pod out of the Service (the annotation),
	// just before it called the drain endpoint.
	if started.After(drainAt) {
		t.Errorf("drain-started %v is after the drain call %v", started, drainAt)
	}
	if waited := deletedAt.Sub(started); waited < 2*time.Second {
		t.Errorf("stuck gateway deleted %s after its drain began; drainTimeout is 2s", waited)
	}
	if lastConns == "0" {
		t.Errorf("the stuck gateway reported 0 connections; the test's premise failed")
	}
}

// TestDegraded: a region whose new pods never become Ready turns the ChatCluster Degraded and
// stops the rollout there; once they become Ready the rollout finishes.
func TestDegraded(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	cc := h.newCluster("deg", "parley:1", testRegion("eu", 0, 1, 2, 1), testRegion("us", 1, 1, 1, 1))
	cc.Spec.Rollout.ProgressDeadline = &metav1.Duration{Duration: 2 * time.Second}
	cc = h.settle(cc)
	usRevs := h.revisionsOf(cc, "us", chatv1.RoleChat)

	h.kubelet.setReady(func(p *corev1.Pod) bool { return p.Spec.Containers[0].Image != "parley:broken" })
	h.update(cc, func(cc *chatv1.ChatCluster) { cc.Spec.Image = "parley:broken" })
	h.migrateThrough(2)
	got := h.waitCondition(cc, chatv1.ConditionDegraded, metav1.ConditionTrue, "RegionNotReady", 60*time.Second)
	c := findCondition(got, chatv1.ConditionDegraded)
	if !strings.Contains(c.Message, "region eu") || !strings.Contains(c.Message, "kubectl get pods") {
		t.Errorf("Degraded message %q should name the region and say what to check", c.Message)
	}
	if ready := findCondition(got, chatv1.ConditionReady); ready.Status != metav1.ConditionFalse || ready.Reason != "RegionNotReady" {
		t.Errorf("Ready = %+v, want False/RegionNotReady", ready)
	}
	// Stopped: one eu chat pod was replaced, the other is untouched, us is untouched.
	eu := h.pods(specs.Selector(cc, "eu", chatv1.RoleChat))
	if len(eu) != 2 || eu[0].Spec.Containers[0].Image != "parley:1" {
		t.Errorf("eu chat pods %v: want the first still at parley:1", podNames(eu))
	}
	if revs := h.revisionsOf(cc, "us", chatv1.RoleChat); !slices.Equal(revs, usRevs) {
		t.Errorf("us chat revisions %v changed while eu was stuck (were %v)", revs, usRevs)
	}

	// Fixed: the rollout resumes and completes.
	h.kubelet.setReady(func(*corev1.Pod) bool { return true })
	h.waitCondition(cc, chatv1.ConditionReady, metav1.ConditionTrue, "AllRegionsReady", 60*time.Second)
	h.waitCondition(cc, chatv1.ConditionDegraded, metav1.ConditionFalse, "", 10*time.Second)
}

// TestPaused: a paused rollout starts nothing — no migration, no StatefulSet change, no pod
// deleted — and resumes when unpaused.
func TestPaused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	cc := h.newCluster("p", "parley:1", testRegion("eu", 0, 1, 1, 1))
	cc = h.settle(cc)
	mark := h.log.mark()
	jobsBefore := len(h.jobs())
	h.update(cc, func(cc *chatv1.ChatCluster) {
		cc.Spec.Rollout.Paused = true
		cc.Spec.Image = "parley:2"
	})
	h.waitCondition(cc, chatv1.ConditionProgressing, metav1.ConditionFalse, "RolloutPaused", 20*time.Second)
	// Let a few more passes happen (a pod event triggers one) before checking nothing moved.
	h.update(cc, func(cc *chatv1.ChatCluster) { cc.Annotations = map[string]string{"poke": "1"} })
	h.waitCondition(cc, chatv1.ConditionProgressing, metav1.ConditionFalse, "RolloutPaused", 20*time.Second)
	if n := len(h.jobs()); n != jobsBefore {
		t.Errorf("paused rollout created %d migrate jobs", n-jobsBefore)
	}
	if img := h.sts("p-eu-chat").Spec.Template.Spec.Containers[0].Image; img != "parley:1" {
		t.Errorf("paused rollout changed the chat statefulset to %s", img)
	}
	for _, e := range h.log.since(mark) {
		if e.Kind == "pod-deleted" || e.Kind == "drain" {
			t.Errorf("paused rollout: %s %s", e.Kind, e.Name)
		}
	}
	h.update(cc, func(cc *chatv1.ChatCluster) { cc.Spec.Rollout.Paused = false })
	h.migrateThrough(1)
	h.waitCondition(cc, chatv1.ConditionReady, metav1.ConditionTrue, "AllRegionsReady", 60*time.Second)
	if img := h.pods(specs.Selector(cc, "eu", chatv1.RoleChat))[0].Spec.Containers[0].Image; img != "parley:2" {
		t.Errorf("after unpausing, chat runs %s", img)
	}
}

// checkGatewaySlide checks the gateway part of one rollout in entries (see TestRollout, step 2):
// the window of each region ends at start, with 2 replicas.
func (h *harness) checkGatewaySlide(cc *chatv1.ChatCluster, entries []logEntry, oldRev map[string]string, start int32) {
	h.t.Helper()
	for _, region := range []string{"us", "eu"} {
		old := oldRev[region+"/gateway"]
		firstNew, firstDrain := -1, -1
		drained := map[string]int{}
		for _, e := range entries {
			if e.Labels[specs.LabelRegion] != region || e.Labels[specs.LabelRole] != "gateway" {
				continue
			}
			switch e.Kind {
			case "pod-added":
				if e.Labels[specs.LabelRevision] != old && firstNew < 0 {
					firstNew = e.Seq
				}
			case "drain":
				if e.Extra["accepting"] != "false" {
					h.t.Errorf("drain of %s called while parley.io/accepting=%q; want false", e.Name, e.Extra["accepting"])
				}
				if e.Extra["window"] == "" {
					h.t.Errorf("drain of %s without a window", e.Name)
				}
				if e.Labels[specs.LabelRevision] != old {
					h.t.Errorf("%s drained: a gateway at the new revision (its clients would move twice)", e.Name)
				}
				if _, seen := drained[e.Name]; !seen {
					drained[e.Name] = e.Seq
				}
				if firstDrain < 0 {
					firstDrain = e.Seq
				}
			case "pod-deleted":
				if e.Labels[specs.LabelRevision] != old {
					continue
				}
				if d, ok := drained[e.Name]; !ok || d > e.Seq {
					h.t.Errorf("gateway %s removed before it was drained", e.Name)
				}
			}
		}
		if firstNew < 0 || firstDrain < 0 || firstNew > firstDrain {
			h.t.Errorf("%s: first new gateway added at %d, first drain at %d: want a new gateway before any drain", region, firstNew, firstDrain)
		}
		sts := h.sts("chat-" + region + "-gateway")
		got := int32(0)
		if sts.Spec.Ordinals != nil {
			got = sts.Spec.Ordinals.Start
		}
		if got != start || ptr.Deref(sts.Spec.Replicas, 0) != 2 {
			h.t.Errorf("%s gateway window after the rollout: start %d, %d replicas; want start %d, 2 replicas", region, got, ptr.Deref(sts.Spec.Replicas, 0), start)
		}
	}
}
