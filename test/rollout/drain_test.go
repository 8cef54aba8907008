package rollout

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/specs"
)

// TestNodeDrainEvictsWithinBudget: a node drain's view of a region of 3 gateways. The operator's
// PodDisruptionBudget for the gateways (maxUnavailable 1), kept by the real disruption
// controller, lets the eviction API (policy/v1 Eviction, what `kubectl drain` calls) evict one
// gateway and refuses a second concurrent eviction with 429; the evicted gateway runs its
// preStop drain, its clients reconnect to the others, the StatefulSet controller recreates it,
// the budget allows one disruption again, and no acknowledged message is lost or shown twice.
// PARLEY_ROLLOUT_DRAIN_CLIENTS sets the clients (default 300).
func TestNodeDrainEvictsWithinBudget(t *testing.T) {
	// Light (one cluster, few clients): runs alongside the other light test after the heavy ones.
	t.Parallel()
	assets := needCluster(t)
	nClients := envInt(t, "PARLEY_ROLLOUT_DRAIN_CLIENTS", 300)
	nClients += nClients % 2
	const gateways = 3
	drainTimeout := 10 * time.Second
	cl := startCluster(t, assets)
	ctx := cl.ctx

	run := fmt.Sprintf("%06x", rand.IntN(1<<24))
	region := "d" + run
	cc := &chatv1.ChatCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "drain", Namespace: cl.ns},
		Spec: chatv1.ChatClusterSpec{
			Image:     "ghcr.io/parleychat/parley:drain-1",
			Regions:   []chatv1.Region{regionSpec(region, 0, gateways, 1, 1)},
			Cassandra: chatv1.CassandraSpec{ContactPoints: []string{cassandraAddr}, Keyspace: "rollout_drain_" + run},
			Rollout:   chatv1.RolloutSpec{DrainTimeout: &metav1.Duration{Duration: drainTimeout}},
		},
	}
	cl.createReady(cc, 5*time.Minute)

	pdbKey := client.ObjectKey{Namespace: cl.ns, Name: specs.ObjectName(cc, region, chatv1.RoleGateway)}
	budget := func(allowed int32) {
		t.Helper()
		cl.eventually(fmt.Sprintf("gateway PodDisruptionBudget: %d healthy, %d disruption(s) allowed", gateways, allowed), 2*time.Minute, func() (bool, error) {
			var pdb policyv1.PodDisruptionBudget
			if err := cl.c.Get(ctx, pdbKey, &pdb); err != nil {
				return false, err
			}
			return pdb.Status.ObservedGeneration == pdb.Generation && pdb.Status.CurrentHealthy == gateways &&
				pdb.Status.DisruptionsAllowed == allowed, nil
		})
	}
	budget(1)
	var pdb policyv1.PodDisruptionBudget
	if err := cl.c.Get(ctx, pdbKey, &pdb); err != nil {
		t.Fatal(err)
	}
	t.Logf("PodDisruptionBudget %s: maxUnavailable %s, healthy %d/%d, disruptions allowed %d",
		pdb.Name, pdb.Spec.MaxUnavailable.String(), pdb.Status.CurrentHealthy, pdb.Status.ExpectedPods, pdb.Status.DisruptionsAllowed)

	fleet, issuer, dialer, service := startClients(t, cl, cc, region, nClients, 500)
	initial := dialer.dialsSnapshot()
	t.Logf("initial connections per gateway: %v", initial)
	time.Sleep(5 * time.Second)

	gwSel := specs.Selector(cc, region, chatv1.RoleGateway)
	gws := cl.pods(gwSel)
	if len(gws) != gateways {
		t.Fatalf("%d gateway pods, want %d", len(gws), gateways)
	}
	evict := func(name string) error {
		return cl.cs.PolicyV1().Evictions(cl.ns).Evict(ctx, &policyv1.Eviction{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: cl.ns},
		})
	}
	first, second := gws[0], gws[1]
	drainStart := time.Now()
	if err := evict(first.Name); err != nil {
		t.Fatalf("evict %s: %v", first.Name, err)
	}
	t.Logf("evicted %s", first.Name)
	err := evict(second.Name)
	switch {
	case err == nil:
		t.Errorf("a second concurrent eviction (%s) was allowed: the PodDisruptionBudget did not hold", second.Name)
	case apierrors.IsTooManyRequests(err):
		t.Logf("second concurrent eviction of %s refused with 429: %v", second.Name, err)
	default:
		t.Errorf("second eviction of %s: %v, want 429 TooManyRequests", second.Name, err)
	}

	// The evicted gateway drains, stops, and is recreated; the budget recovers.
	cl.eventually("evicted gateway replaced and every gateway Ready", 2*time.Minute+drainTimeout, func() (bool, error) {
		n := 0
		for _, p := range cl.pods(gwSel) {
			if p.Name == first.Name && p.UID == first.UID {
				return false, nil
			}
			if p.DeletionTimestamp == nil && podReady(&p) {
				n++
			}
		}
		return n == gateways, nil
	})
	replaced := time.Since(drainStart)
	budget(1)
	t.Logf("evicted gateway drained and replaced in %s; the budget allows one disruption again", replaced.Round(time.Millisecond))
	if !t.Failed() {
		// The refused pod is evictable now.
		if err := evict(second.Name); err != nil {
			t.Errorf("evict %s after the budget recovered: %v", second.Name, err)
		}
		cl.eventually("second evicted gateway replaced", 2*time.Minute+drainTimeout, func() (bool, error) {
			n := 0
			for _, p := range cl.pods(gwSel) {
				if p.Name == second.Name && p.UID == second.UID {
					return false, nil
				}
				if p.DeletionTimestamp == nil && podReady(&p) {
					n++
				}
			}
			return n == gateways, nil
		})
	}
	time.Sleep(5 * time.Second)

	reports, settled := fleet.stop(3 * time.Minute)
	if !settled {
		t.Logf("not every acknowledged message was shown on both sides within the settle time")
	}
	v := checkLoad(t, reports, issuer, dialer, service)
	reconnected := 0
	for n, c := range v.reconnects {
		if n > 0 {
			reconnected += c
		}
	}
	t.Logf("drain: clients=%d acked=%d lost=%d (not in History %d, not shown %d) duplicates=%d send-errors=%d reconnects per client %v; initially on %s: %d, on %s: %d",
		v.clients, v.acked, v.lost, v.notStored, v.notShown, v.duplicates, v.sendErrors, v.reconnects,
		first.Name, dialsTo(initial, first.Name), second.Name, dialsTo(initial, second.Name))
	for _, e := range v.examples {
		t.Logf("lost: %s", e)
	}
	if v.lost != 0 || v.duplicates != 0 {
		t.Errorf("lost %d, duplicates %d; want 0", v.lost, v.duplicates)
	}
	if want := dialsTo(initial, first.Name); reconnected < want {
		t.Errorf("%d clients reconnected, fewer than the %d connected to the evicted %s", reconnected, want, first.Name)
	}
	if v.acked == 0 {
		t.Errorf("no message was acknowledged")
	}
	if t.Failed() {
		t.Log(cl.describe())
	}
}

// dialsTo sums the dials of a dialsSnapshot to the pod named pod.
func dialsTo(dials map[string]int, pod string) int {
	n := 0
	for k, c := range dials {
		if len(k) > len(pod) && k[:len(pod)+1] == pod+"@" {
			n += c
		}
	}
	return n
}
