package operator

import (
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/specs"
)

// TestDisruptionBudgetOnRealControllers (issue 12): the real disruption controller computes the
// operator's PodDisruptionBudget of the gateways (maxUnavailable 1 of 3), and the eviction API
// honours it: one gateway may be evicted (a node drain), a second is refused with 429 while the
// first is not back.
func TestDisruptionBudgetOnRealControllers(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	cc := h.newCluster("pdb", "parley:1", testRegion("eu", 0, 3, 1, 1))
	cc = h.settle(cc)
	name := specs.ObjectName(cc, "eu", chatv1.RoleGateway)
	h.eventually("the disruption controller allows one disruption", 30*time.Second, func() (bool, error) {
		var pdb policyv1.PodDisruptionBudget
		if err := h.c.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: name}, &pdb); err != nil {
			return false, err
		}
		return pdb.Status.ExpectedPods == 3 && pdb.Status.CurrentHealthy == 3 && pdb.Status.DisruptionsAllowed == 1, nil
	})

	// While the first evicted gateway is not Ready again, a second eviction is refused.
	h.kubelet.setReady(func(*corev1.Pod) bool { return false })
	evict := func(pod string) error {
		return h.c.SubResource("eviction").Create(h.ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: h.ns}},
			&policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: h.ns}})
	}
	if err := evict(name + "-0"); err != nil {
		t.Fatalf("evict the first gateway: %v", err)
	}
	h.eventually("the budget spent", 30*time.Second, func() (bool, error) {
		var pdb policyv1.PodDisruptionBudget
		if err := h.c.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: name}, &pdb); err != nil {
			return false, err
		}
		return pdb.Status.DisruptionsAllowed == 0, nil
	})
	err := evict(name + "-1")
	if !apierrors.IsTooManyRequests(err) {
		t.Fatalf("a second eviction while one gateway is down: %v, want 429 (the budget refuses it)", err)
	}
	// The StatefulSet controller recreated the evicted gateway; once it is Ready, the budget is back.
	// The eviction recorded the pod's name in the budget's status.disruptedPods. Pods here have no
	// node, so the API server deletes them at once and the StatefulSet controller recreates the
	// same name at once: when the disruption controller does not see the deletion in between, it
	// counts the new pod as still disrupted until its DeletionTimeout (2 minutes,
	// pkg/controller/disruption) expires — what a real cluster does too when a pod's deletion
	// is missed. So the wait covers that timeout.
	h.kubelet.setReady(func(*corev1.Pod) bool { return true })
	h.eventually("the budget restored", 150*time.Second, func() (bool, error) {
		var pdb policyv1.PodDisruptionBudget
		if err := h.c.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: name}, &pdb); err != nil {
			return false, err
		}
		return pdb.Status.CurrentHealthy == 3 && pdb.Status.DisruptionsAllowed == 1, nil
	})
}

// TestGarbageCollection (issue 12): deleting a ChatCluster lets the real garbage collector delete
// what it owns — StatefulSets, their pods, Services, budgets — without the operator's help.
func TestGarbageCollection(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	cc := h.newCluster("gc", "parley:1", testRegion("eu", 0, 2, 1, 1))
	cc = h.settle(cc)
	if n := len(h.pods(specs.Selector(cc, "eu", chatv1.RoleGateway))); n != 2 {
		t.Fatalf("%d gateway pods before the delete, want 2", n)
	}
	h.stopOperator() // the garbage collector alone does it
	if err := h.c.Delete(h.ctx, cc, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	h.eventually("everything the ChatCluster owned is gone", 60*time.Second, func() (bool, error) {
		var stss appsv1.StatefulSetList
		var svcs corev1.ServiceList
		var pdbs policyv1.PodDisruptionBudgetList
		var pods corev1.PodList
		for _, l := range []client.ObjectList{&stss, &svcs, &pdbs, &pods} {
			if err := h.c.List(h.ctx, l, client.InNamespace(h.ns)); err != nil {
				return false, err
			}
		}
		return len(stss.Items) == 0 && len(svcs.Items) == 0 && len(pdbs.Items) == 0 && len(pods.Items) == 0, nil
	})
}
