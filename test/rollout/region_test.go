package rollout

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/specs"
	"github.com/parleychat/parley/runtime/auth"
	pclient "github.com/parleychat/parley/runtime/client"
)

// TestRegionRunsOnRealControllers: one ChatCluster region (1 gateway, 1 chat, 1 presence) runs
// as real parley processes on a virtual-kubelet node, scheduled by kube-scheduler, its
// StatefulSets, migrate Job, EndpointSlices and garbage collected by kube-controller-manager,
// reconciled by the operator. Two SDK clients exchange a DM through the client Service; a new
// image tag rolls the region (migrate Job, then chat, presence, gateway surge-then-drain), the
// gateway pod is replaced by one of the new template revision, the clients reconnect, a message
// sent after the rollout is delivered, and every message acknowledged before or during the
// rollout is in History and was delivered exactly once.
func TestRegionRunsOnRealControllers(t *testing.T) {
	assets := needCluster(t)
	testStart := time.Now()
	cl := startCluster(t, assets)
	ctx := cl.ctx

	run := fmt.Sprintf("%06x", rand.IntN(1<<24))
	region := "r" + run
	cc := &chatv1.ChatCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "ro", Namespace: cl.ns},
		Spec: chatv1.ChatClusterSpec{
			Image: "ghcr.io/parleychat/parley:rollout-1",
			Regions: []chatv1.Region{{
				Name:      region,
				ID:        0,
				Gateway:   chatv1.GatewaySpec{Replicas: 1},
				Chat:      chatv1.ChatSpec{Replicas: 1},
				Presence:  chatv1.PresenceSpec{Replicas: 1},
				Cassandra: chatv1.RegionCassandra{LocalDatacenter: cassandraDC, ReplicationFactor: 1},
				Kafka:     chatv1.RegionKafka{Brokers: []string{kafkaAddr}},
				Redis:     chatv1.RegionRedis{Address: redisAddr},
			}},
			Cassandra: chatv1.CassandraSpec{ContactPoints: []string{cassandraAddr}, Keyspace: "rollout_" + run},
			Rollout: chatv1.RolloutSpec{
				DrainTimeout: &metav1.Duration{Duration: 10 * time.Second},
			},
		},
	}
	t.Logf("ChatCluster Ready %s after create (migrate Job, 3 StatefulSets, 3 pods)", cl.createReady(cc, 5*time.Minute))

	// The migrate Job ran on the node and the Job controller completed it.
	var jobPods corev1.PodList
	if err := cl.c.List(ctx, &jobPods, client.InNamespace(cl.ns), client.HasLabels{"batch.kubernetes.io/job-name"}); err != nil {
		t.Fatal(err)
	}
	if len(jobPods.Items) == 0 || jobPods.Items[0].Status.Phase != corev1.PodSucceeded {
		t.Fatalf("migrate job pods: %+v, want one Succeeded\n%s", jobPods.Items, cl.describe())
	}

	gwSel := specs.Selector(cc, region, chatv1.RoleGateway)
	gws := cl.pods(gwSel)
	if len(gws) != 1 {
		t.Fatalf("gateway pods %d, want 1\n%s", len(gws), cl.describe())
	}
	oldGW := gws[0]
	if oldGW.Spec.NodeName != cl.node.NodeName || oldGW.Status.PodIP == "" {
		t.Fatalf("gateway pod on node %q with IP %q", oldGW.Spec.NodeName, oldGW.Status.PodIP)
	}
	readyz(t, oldGW.Status.PodIP)
	t.Logf("gateway %s at %s, revision %s (controller-revision-hash %s)", oldGW.Name, oldGW.Status.PodIP,
		oldGW.Labels[specs.LabelRevision], oldGW.Labels["controller-revision-hash"])
	var ips []string
	for _, p := range cl.pods(map[string]string{specs.LabelInstance: cc.Name}) {
		ips = append(ips, p.Name+"="+p.Status.PodIP)
	}
	t.Logf("pod IPs: %v", ips)

	// Two clients through the client Service's endpoints.
	secretDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(secretDir, specs.DevSecretKey), cl.devSecret(cc), 0o600); err != nil {
		t.Fatal(err)
	}
	secret, err := auth.LoadOrCreateDevSecret(secretDir)
	if err != nil {
		t.Fatal(err)
	}
	issuer := auth.NewDevIssuer(secret)
	dialer := &serviceDialer{cl: cl}
	alice := newUser(t, cl, issuer, dialer, "a-"+run, specs.ClientServiceName(cc, region))
	bob := newUser(t, cl, issuer, dialer, "b-"+run, specs.ClientServiceName(cc, region))
	conv := "dm:" + alice.id + ":" + bob.id

	var acked sync.Map // seq → text, every send the server acknowledged
	send := func(from *user, text string) uint64 {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		ok, err := from.c.Send(sctx, conv, text)
		if err != nil {
			t.Errorf("send %q: %v", text, err)
			return 0
		}
		acked.Store(ok.GetSeq(), text)
		return ok.GetSeq()
	}
	for i := range 5 {
		send(alice, fmt.Sprintf("before-%d", i))
	}
	bob.waitFor(t, "before-4", 30*time.Second)
	t.Logf("DM delivered before the rollout (%s)", conv)

	// Keep sending while the operator rolls the region.
	stopSend := make(chan struct{})
	senderDone := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stopSend:
				senderDone <- n
				return
			case <-time.After(300 * time.Millisecond):
			}
			from := alice
			if n%2 == 1 {
				from = bob
			}
			if send(from, fmt.Sprintf("during-%d", n)) != 0 {
				n++
			}
		}
	}()

	// A new tag of the same image: every pod template changes.
	start := time.Now()
	for i := 0; ; i++ {
		cur := &chatv1.ChatCluster{}
		if err := cl.c.Get(ctx, client.ObjectKeyFromObject(cc), cur); err != nil {
			t.Fatal(err)
		}
		cur.Spec.Image = "ghcr.io/parleychat/parley:rollout-2"
		if err := cl.c.Update(ctx, cur); err == nil {
			break
		} else if i > 20 {
			t.Fatal(err)
		}
	}
	cl.eventually("the rollout to rollout-2 (every pod on the new image, gateway replaced, Ready)", 8*time.Minute, func() (bool, error) {
		got := &chatv1.ChatCluster{}
		if err := cl.c.Get(ctx, client.ObjectKeyFromObject(cc), got); err != nil {
			return false, err
		}
		for _, c := range got.Status.Conditions {
			if c.Type == chatv1.ConditionReady && (c.Status != metav1.ConditionTrue || c.ObservedGeneration != got.Generation) {
				return false, nil
			}
		}
		pods := cl.pods(map[string]string{specs.LabelInstance: cc.Name, specs.LabelManagedBy: specs.ManagedBy})
		roles := map[string]int{}
		for _, p := range pods {
			if p.Labels[specs.LabelRole] == "" {
				continue // migrate Job pods
			}
			if p.DeletionTimestamp != nil || p.Spec.Containers[0].Image != got.Spec.Image || !podReady(&p) {
				return false, nil
			}
			roles[p.Labels[specs.LabelRole]]++
		}
		return roles["gateway"] == 1 && roles["chat"] == 1 && roles["presence"] == 1, nil
	})
	rolloutTook := time.Since(start)
	close(stopSend)
	during := <-senderDone

	gws = cl.pods(gwSel)
	newGW := gws[0]
	t.Logf("rollout done in %s: gateway %s uid %s→%s, controller-revision-hash %s→%s, parley.io/revision %s→%s, IP %s→%s",
		rolloutTook.Round(time.Millisecond), newGW.Name, oldGW.UID[:8], newGW.UID[:8],
		oldGW.Labels["controller-revision-hash"], newGW.Labels["controller-revision-hash"],
		oldGW.Labels[specs.LabelRevision], newGW.Labels[specs.LabelRevision], oldGW.Status.PodIP, newGW.Status.PodIP)
	if newGW.UID == oldGW.UID {
		t.Errorf("gateway pod was not replaced")
	}
	if newGW.Labels["controller-revision-hash"] == oldGW.Labels["controller-revision-hash"] {
		t.Errorf("gateway pod's controller-revision-hash did not change (%s)", newGW.Labels["controller-revision-hash"])
	}
	readyz(t, newGW.Status.PodIP)
	// The old gateway was stopped the kubelet's way: its preStop drain ran before SIGTERM.
	oldLog, err := os.ReadFile(filepath.Join(cl.node.Dir, oldGW.Namespace+"_"+oldGW.Name+"_"+string(oldGW.UID)[:8], "parley.log"))
	if err != nil {
		t.Errorf("old gateway's log: %v", err)
	} else if !strings.Contains(string(oldLog), "preStop: ") || !strings.Contains(string(oldLog), "preStop done") {
		t.Errorf("old gateway's preStop hook did not run; log:\n%s", tail(oldLog, 3000))
	} else {
		i := strings.Index(string(oldLog), "preStop: ")
		t.Logf("old gateway's preStop: %s", strings.SplitN(string(oldLog[i:]), "\n", 2)[0])
	}

	// After the rollout: both directions still work, on reconnected clients.
	send(alice, "after-rollout-a")
	send(bob, "after-rollout-b")
	bob.waitFor(t, "after-rollout-a", 60*time.Second)
	alice.waitFor(t, "after-rollout-b", 60*time.Second)

	// Nothing acknowledged is lost: History has every acked seq with its text, and each client
	// was shown every acked message exactly once.
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stored := map[uint64]string{}
	var after uint64
	for {
		h, err := bob.c.HistoryAfter(hctx, conv, after, 200)
		if err != nil {
			t.Fatalf("history: %v", err)
		}
		for _, m := range h.GetMessages() {
			stored[m.GetSeq()] = m.GetText()
			after = max(after, m.GetSeq())
		}
		if !h.GetHasMore() || len(h.GetMessages()) == 0 {
			break
		}
	}
	nAcked, lostStored, lostDelivered := 0, 0, 0
	acked.Range(func(k, v any) bool {
		nAcked++
		seq, text := k.(uint64), v.(string)
		if stored[seq] != text {
			lostStored++
			t.Errorf("acked seq %d %q: History has %q", seq, text, stored[seq])
		}
		for _, u := range []*user{alice, bob} {
			if got := u.seen(seq); got != text {
				lostDelivered++
				t.Errorf("%s: acked seq %d %q was shown as %q", u.id, seq, text, got)
			}
		}
		return true
	})
	as, bs := alice.c.Stats(), bob.c.Stats()
	t.Logf("messages: acked=%d (%d during the rollout) in-history=%d lost-from-history=%d not-shown=%d; reconnects alice=%d bob=%d; duplicates dropped by the SDK alice=%d bob=%d; dials per endpoint %v",
		nAcked, during, len(stored), lostStored, lostDelivered, as.Reconnects, bs.Reconnects, as.Duplicates, bs.Duplicates, dialer.dialsSnapshot())
	if as.Reconnects == 0 || bs.Reconnects == 0 {
		t.Errorf("clients did not reconnect across the gateway's replacement (alice %d, bob %d)", as.Reconnects, bs.Reconnects)
	}
	if dup := alice.dups + bob.dups; dup != 0 {
		t.Errorf("%d messages shown twice to the application", dup)
	}
	t.Logf("rollout: clients=2 acked=%d lost=%d duplicates=%d reconnects: alice=%d bob=%d rollout=%s total=%s",
		nAcked, lostStored+lostDelivered, alice.dups+bob.dups, as.Reconnects, bs.Reconnects,
		rolloutTook.Round(time.Second), time.Since(testStart).Round(time.Second))
	if t.Failed() {
		t.Log(cl.describe())
	}
}

func readyz(t *testing.T, ip string) {
	t.Helper()
	resp, err := http.Get("http://" + ip + ":8080/readyz")
	if err != nil {
		t.Fatalf("readyz on %s: %v", ip, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz on %s: HTTP %d", ip, resp.StatusCode)
	}
}

func (d *serviceDialer) dialsSnapshot() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]int{}
	for k, v := range d.dials {
		out[k] = v
	}
	return out
}

// user is one SDK client and what it was shown.
type user struct {
	id string
	c  *pclient.Client

	mu    sync.Mutex
	msgs  map[uint64]string
	dups  int
	texts map[string]bool
}

func newUser(t *testing.T, cl *cluster, issuer *auth.DevIssuer, d *serviceDialer, id, service string) *user {
	t.Helper()
	tok, err := issuer.Issue(id, "", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	u := &user{id: id, msgs: map[uint64]string{}, texts: map[string]bool{}}
	dctx, cancel := context.WithTimeout(cl.ctx, 30*time.Second)
	defer cancel()
	c, err := pclient.Dial(dctx, pclient.Options{
		URL:     "ws://" + service + ":80",
		Token:   tok,
		Dialer:  &websocket.Dialer{NetDialContext: d.DialContext},
		Backoff: pclient.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second},
		OnEvent: func(ev pclient.Event) {
			if m, ok := ev.(pclient.MessageEvent); ok {
				u.mu.Lock()
				if _, seen := u.msgs[m.Message.GetSeq()]; seen {
					u.dups++
				}
				u.msgs[m.Message.GetSeq()] = m.Message.GetText()
				u.texts[m.Message.GetText()] = true
				u.mu.Unlock()
			}
		},
	})
	if err != nil {
		t.Fatalf("dial %s as %s: %v\n%s", service, id, err, cl.describe())
	}
	t.Cleanup(func() { _ = c.Close() })
	u.c = c
	return u
}

func (u *user) seen(seq uint64) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.msgs[seq]
}

func (u *user) waitFor(t *testing.T, text string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		u.mu.Lock()
		ok := u.texts[text]
		u.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was not shown %q within %s", u.id, text, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
