package rollout

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/specs"
)

// TestRegionRemovalGarbageCollected: a ChatCluster of two regions (1 gateway, 1 chat,
// 1 presence each); the second region leaves the spec. The operator drains its gateway (the pod
// is annotated parley.io/drain-started before it goes) and deletes the region's StatefulSets
// with background propagation; the real garbage collector then deletes the chat and presence
// pods and the StatefulSets' ControllerRevisions through their owner references (the operator
// deletes neither). The remaining region stays Ready and untouched.
func TestRegionRemovalGarbageCollected(t *testing.T) {
	// Light (one cluster, few clients): runs alongside the other light test after the heavy ones.
	t.Parallel()
	assets := needCluster(t)
	cl := startCluster(t, assets)
	ctx := cl.ctx

	run := fmt.Sprintf("%06x", rand.IntN(1<<24))
	keep, remove := "k"+run, "x"+run
	cc := &chatv1.ChatCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "rm", Namespace: cl.ns},
		Spec: chatv1.ChatClusterSpec{
			Image:     "ghcr.io/parleychat/parley:rm-1",
			Regions:   []chatv1.Region{regionSpec(keep, 0, 1, 1, 1), regionSpec(remove, 1, 1, 1, 1)},
			Cassandra: chatv1.CassandraSpec{ContactPoints: []string{cassandraAddr}, Keyspace: "rollout_rm_" + run},
			Rollout:   chatv1.RolloutSpec{DrainTimeout: &metav1.Duration{Duration: 10 * time.Second}},
		},
	}
	t.Logf("two-region ChatCluster Ready in %s", cl.createReady(cc, 6*time.Minute))

	regionSel := func(region string) client.MatchingLabels {
		return client.MatchingLabels{specs.LabelInstance: cc.Name, specs.LabelRegion: region}
	}
	var keepPods, gonePods corev1.PodList
	if err := cl.c.List(ctx, &keepPods, client.InNamespace(cl.ns), regionSel(keep), client.HasLabels{specs.LabelRole}); err != nil {
		t.Fatal(err)
	}
	if err := cl.c.List(ctx, &gonePods, client.InNamespace(cl.ns), regionSel(remove), client.HasLabels{specs.LabelRole}); err != nil {
		t.Fatal(err)
	}
	if len(keepPods.Items) != 3 || len(gonePods.Items) != 3 {
		t.Fatalf("pods: %d in %s, %d in %s; want 3 each\n%s", len(keepPods.Items), keep, len(gonePods.Items), remove, cl.describe())
	}
	var sets appsv1.StatefulSetList
	if err := cl.c.List(ctx, &sets, client.InNamespace(cl.ns), regionSel(remove)); err != nil {
		t.Fatal(err)
	}
	setUIDs := map[types.UID]string{}
	for _, s := range sets.Items {
		setUIDs[s.UID] = s.Name
	}
	var revs appsv1.ControllerRevisionList
	if err := cl.c.List(ctx, &revs, client.InNamespace(cl.ns)); err != nil {
		t.Fatal(err)
	}
	ownedRevs := 0
	for _, r := range revs.Items {
		if ref := metav1.GetControllerOf(&r); ref != nil && setUIDs[ref.UID] != "" {
			ownedRevs++
		}
	}
	for _, p := range gonePods.Items {
		ref := metav1.GetControllerOf(&p)
		if ref == nil || ref.Kind != "StatefulSet" || setUIDs[ref.UID] == "" {
			t.Fatalf("pod %s is not controlled by one of its region's StatefulSets: %+v", p.Name, p.OwnerReferences)
		}
	}
	t.Logf("region %s: %d StatefulSets, %d ControllerRevisions, pods %v", remove, len(sets.Items), ownedRevs, podNames(gonePods.Items))

	// Remove the region from the spec, watching its pods for the drain annotation.
	w, err := cl.c.Watch(ctx, &corev1.PodList{}, client.InNamespace(cl.ns), regionSel(remove))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	var drainMu sync.Mutex
	drainSeen := map[string]bool{}
	go func() {
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok {
				if _, draining := p.Annotations[specs.AnnotationDrainStarted]; draining {
					drainMu.Lock()
					drainSeen[p.Name] = true
					drainMu.Unlock()
				}
			}
		}
	}()
	for i := 0; ; i++ {
		cur := &chatv1.ChatCluster{}
		if err := cl.c.Get(ctx, client.ObjectKeyFromObject(cc), cur); err != nil {
			t.Fatal(err)
		}
		cur.Spec.Regions = cur.Spec.Regions[:1]
		if err := cl.c.Update(ctx, cur); err == nil {
			break
		} else if i > 20 {
			t.Fatal(err)
		}
	}
	start := time.Now()
	cl.eventually("region "+remove+"'s pods, StatefulSets and ControllerRevisions gone", 3*time.Minute, func() (bool, error) {
		var pods corev1.PodList
		if err := cl.c.List(ctx, &pods, client.InNamespace(cl.ns), regionSel(remove), client.HasLabels{specs.LabelRole}); err != nil {
			return false, err
		}
		var sets appsv1.StatefulSetList
		if err := cl.c.List(ctx, &sets, client.InNamespace(cl.ns), regionSel(remove)); err != nil {
			return false, err
		}
		var revs appsv1.ControllerRevisionList
		if err := cl.c.List(ctx, &revs, client.InNamespace(cl.ns)); err != nil {
			return false, err
		}
		left := 0
		for _, r := range revs.Items {
			for _, ref := range r.OwnerReferences {
				if setUIDs[ref.UID] != "" {
					left++
				}
			}
		}
		return len(pods.Items) == 0 && len(sets.Items) == 0 && left == 0, nil
	})
	drainMu.Lock()
	defer drainMu.Unlock()
	t.Logf("region %s removed in %s (drain annotation seen on %v)", remove, time.Since(start).Round(time.Millisecond), drainSeen)
	gw := specs.ObjectName(cc, remove, chatv1.RoleGateway) + "-0"
	if !drainSeen[gw] {
		t.Errorf("gateway %s was not seen draining (parley.io/drain-started) before it went", gw)
	}
	for _, p := range gonePods.Items {
		if p.Labels[specs.LabelRole] != string(chatv1.RoleGateway) && drainSeen[p.Name] {
			t.Errorf("non-gateway pod %s was drained", p.Name)
		}
	}
	// Nothing else of the region is left. The operator deletes Services one
	// by one after the StatefulSets, in the same pass: give that pass time
	// to finish (a CI run saw one Service still listed 0.4 s after the pods
	// went).
	var svcs corev1.ServiceList
	var cms corev1.ConfigMapList
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := cl.c.List(ctx, &svcs, client.InNamespace(cl.ns), regionSel(remove)); err != nil {
			t.Fatal(err)
		}
		if err := cl.c.List(ctx, &cms, client.InNamespace(cl.ns), regionSel(remove)); err != nil {
			t.Fatal(err)
		}
		if len(svcs.Items)+len(cms.Items) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(svcs.Items)+len(cms.Items) != 0 {
		t.Errorf("region %s left %d Services and %d ConfigMaps 30 s after its removal", remove, len(svcs.Items), len(cms.Items))
	}

	// The other region is untouched and the ChatCluster Ready with one region.
	got := cl.waitCondition(cc, chatv1.ConditionReady, metav1.ConditionTrue, time.Minute)
	if len(got.Status.Regions) != 1 || got.Status.Regions[0].Name != keep {
		t.Errorf("status.regions %+v, want only %s", got.Status.Regions, keep)
	}
	for _, p := range keepPods.Items {
		var cur corev1.Pod
		if err := cl.c.Get(ctx, client.ObjectKeyFromObject(&p), &cur); err != nil || cur.UID != p.UID || cur.DeletionTimestamp != nil || !podReady(&cur) {
			t.Errorf("pod %s of the kept region was disturbed (err %v)", p.Name, err)
		}
	}
	if t.Failed() {
		t.Log(cl.describe())
	}
}

func podNames(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}
