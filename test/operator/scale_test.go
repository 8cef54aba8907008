package operator

import (
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/controller"
	"github.com/parleychat/parley/operator/specs"
)

// TestScale: scaling chat up changes its StatefulSet; scaling gateways down drains the extra
// gateways while the StatefulSet still keeps them, and only then removes them.
func TestScale(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	cc := h.newCluster("sc", "parley:1", testRegion("eu", 0, 3, 1, 1))
	cc = h.settle(cc)
	gwRev := h.revisionsOf(cc, "eu", chatv1.RoleGateway)[0]

	h.update(cc, func(cc *chatv1.ChatCluster) { cc.Spec.Regions[0].Chat.Replicas = 3 })
	h.waitCondition(cc, chatv1.ConditionReady, metav1.ConditionTrue, "AllRegionsReady", 30*time.Second)
	if n := len(h.pods(specs.Selector(cc, "eu", chatv1.RoleChat))); n != 3 || *h.sts("sc-eu-chat").Spec.Replicas != 3 {
		t.Errorf("chat scaled to %d pods, statefulset %d; want 3", n, *h.sts("sc-eu-chat").Spec.Replicas)
	}

	mark := h.log.mark()
	h.update(cc, func(cc *chatv1.ChatCluster) { cc.Spec.Regions[0].Gateway.Replicas = 1 })
	h.eventually("gateways scaled down to 1", 30*time.Second, func() (bool, error) {
		return len(h.pods(specs.Selector(cc, "eu", chatv1.RoleGateway))) == 1 && *h.sts("sc-eu-gateway").Spec.Replicas == 1, nil
	})
	h.waitCondition(cc, chatv1.ConditionReady, metav1.ConditionTrue, "AllRegionsReady", 30*time.Second)

	drained := map[string]int{}
	for _, e := range h.log.since(mark) {
		switch e.Kind {
		case "drain":
			drained[e.Name] = e.Seq
			if e.Extra["stsReplicas"] != "3" {
				t.Errorf("%s drained while its statefulset had %s replicas; want 3 (kept until drained)", e.Name, e.Extra["stsReplicas"])
			}
			if e.Extra["accepting"] != "false" {
				t.Errorf("%s drained while still accepting", e.Name)
			}
		case "pod-deleted":
			if e.Labels[specs.LabelRole] != "gateway" {
				continue
			}
			if d, ok := drained[e.Name]; !ok || d > e.Seq {
				t.Errorf("gateway %s deleted before it was drained", e.Name)
			}
		}
	}
	for _, name := range []string{"sc-eu-gateway-1", "sc-eu-gateway-2"} {
		if _, ok := drained[name]; !ok {
			t.Errorf("%s was never drained", name)
		}
	}
	if _, ok := drained["sc-eu-gateway-0"]; ok {
		t.Errorf("the remaining gateway was drained")
	}
	if rev := h.revisionsOf(cc, "eu", chatv1.RoleGateway); !slices.Equal(rev, []string{gwRev}) {
		t.Errorf("scale-down changed the gateway revision: %v", rev)
	}
}

// TestRegionAddRemove: adding a region creates its fleets after its migration; removing one
// drains its gateways, then deletes its objects, and leaves the other region alone.
func TestRegionAddRemove(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	cc := h.newCluster("ar", "parley:1", testRegion("eu", 0, 1, 1, 1))
	cc = h.settle(cc)
	euBefore := h.content(h.sts("ar-eu-gateway"))

	// The keyspace gains us's datacenter, so eu migrates again (replication), then us.
	h.update(cc, func(cc *chatv1.ChatCluster) { cc.Spec.Regions = append(cc.Spec.Regions, testRegion("us", 1, 2, 1, 1)) })
	h.migrateThrough(2)
	cc = h.waitCondition(cc, chatv1.ConditionReady, metav1.ConditionTrue, "AllRegionsReady", 60*time.Second)
	if cc.Status.ReadyRegions != "2/2" || len(cc.Status.Regions) != 2 {
		t.Errorf("status after adding us: %q, %d regions", cc.Status.ReadyRegions, len(cc.Status.Regions))
	}
	for _, role := range chatv1.Roles {
		h.sts("ar-us-" + string(role))
	}

	// us's outbox holds three sends accepted while their home was unreachable: the removal
	// drains us's gateways, then waits, saying so, and deletes nothing until it is empty.
	usChat := h.pods(specs.Selector(cc, "us", chatv1.RoleChat))[0].Name
	h.gw.setOutbox(usChat, 3, true)
	mark := h.log.mark()
	h.update(cc, func(cc *chatv1.ChatCluster) { cc.Spec.Regions = cc.Spec.Regions[:1] })
	h.migrateThrough(1) // the keyspace drops us's datacenter
	h.eventually("Progressing says the removal waits for us's outbox", 30*time.Second, func() (bool, error) {
		got := &chatv1.ChatCluster{}
		if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(cc), got); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(got.Status.Conditions, chatv1.ConditionProgressing)
		return c != nil && c.Reason == controller.ReasonRemovingRegion &&
			strings.Contains(c.Message, "us: waiting for 3 accepted sends in its outbox"), nil
	})
	for _, name := range []string{"ar-us-chat", "ar-us-presence"} {
		h.sts(name) // still there
	}
	h.gw.setOutbox(usChat, 3, false)
	h.eventually("us objects deleted", 30*time.Second, func() (bool, error) {
		for _, obj := range []client.Object{&appsv1.StatefulSet{}, &corev1.Service{}, &corev1.ConfigMap{}, &policyv1.PodDisruptionBudget{}} {
			for _, name := range []string{"ar-us-chat", "ar-us-presence", "ar-us-gateway"} {
				err := h.c.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: name}, obj)
				if err == nil {
					return false, nil
				}
				if !apierrors.IsNotFound(err) {
					return false, err
				}
			}
		}
		err := h.c.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: "ar-us"}, &corev1.Service{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	cc = h.waitCondition(cc, chatv1.ConditionReady, metav1.ConditionTrue, "AllRegionsReady", 30*time.Second)
	if cc.Status.ReadyRegions != "1/1" || len(cc.Status.Regions) != 1 {
		t.Errorf("status after removing us: %q, %d regions", cc.Status.ReadyRegions, len(cc.Status.Regions))
	}

	drained := map[string]bool{}
	for _, e := range h.log.since(mark) {
		if e.Kind == "drain" {
			if e.Labels[specs.LabelRegion] != "us" {
				t.Errorf("removing us drained %s", e.Name)
			}
			drained[e.Name] = true
		}
		if e.Kind == "pod-deleted" && e.Labels[specs.LabelRole] == "gateway" && !drained[e.Name] {
			t.Errorf("gateway %s deleted before it was drained", e.Name)
		}
	}
	if len(drained) != 2 {
		t.Errorf("drained %v, want both us gateways", drained)
	}
	sawEmpty := false
	for _, e := range h.log.since(mark) {
		if e.Kind == "pod-deleted" && !sawEmpty {
			t.Errorf("%s deleted before us's outbox was reported empty", e.Name)
		}
		if e.Kind != "outbox" {
			continue
		}
		if e.Extra["stsExists"] != "true" {
			t.Errorf("%s answered its outbox (pending %s) after its StatefulSet was deleted", e.Name, e.Extra["pending"])
		}
		sawEmpty = sawEmpty || e.Extra["pending"] == "0"
	}
	if !sawEmpty {
		t.Error("us was deleted without its outbox ever reported empty")
	}
	if after := h.content(h.sts("ar-eu-gateway")); after != euBefore {
		t.Errorf("eu gateway statefulset was rewritten:\n before %s\n after  %s", euBefore, after)
	}
}

// TestRegionMode: an operator started with --region reconciles only that region, and reports
// only it.
func TestRegionMode(t *testing.T) {
	h := newHarness(t, harnessOpts{region: "us"})
	cc := h.newCluster("rm", "parley:1", testRegion("eu", 0, 1, 1, 1), testRegion("us", 1, 1, 1, 1))
	h.create(cc)
	h.migrateThrough(1)
	cc = h.waitCondition(cc, chatv1.ConditionReady, metav1.ConditionTrue, "AllRegionsReady", 60*time.Second)
	if len(cc.Status.Regions) != 1 || cc.Status.Regions[0].Name != "us" || cc.Status.ReadyRegions != "1/1" {
		t.Errorf("status regions %+v (%s), want only us", cc.Status.Regions, cc.Status.ReadyRegions)
	}
	var stss appsv1.StatefulSetList
	if err := h.c.List(h.ctx, &stss, client.InNamespace(h.ns)); err != nil {
		t.Fatal(err)
	}
	for _, s := range stss.Items {
		if s.Labels[specs.LabelRegion] != "us" {
			t.Errorf("--region us created %s", s.Name)
		}
	}
	for _, j := range h.jobs() {
		if j.Labels[specs.LabelRegion] != "us" {
			t.Errorf("--region us ran migrate job %s", j.Name)
		}
	}
}
