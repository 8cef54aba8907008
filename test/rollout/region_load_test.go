package rollout

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/specs"
)

// TestTwoRegionRolloutUnderLoad: TestRolloutUnderLoad's rollout across the two regions of one
// ChatCluster (2 gateways, 1 chat, 1 presence each, on the same backends), rolled in its
// regionOrder, which names the second region first. PARLEY_ROLLOUT_TWO_REGION_CLIENTS clients
// (default 1,200), half on each region's client Service, each user homed by a home_region claim
// in the region it connects to: a quarter in DMs within the first region, a quarter within the
// second, and half in DMs across the two. A DM's home is its lower user id's home, which is the
// first region for half of the cross-region DMs and the second for the others, so in each
// region some senders' messages go through the outbox to the other region and their peers'
// come back through the relay while both regions roll. Checked as in TestRolloutUnderLoad,
// over every client: nothing acknowledged lost or shown twice, ≥90 % reconnect exactly once and
// none more than twice; and the operator's order: chat, presence, then gateways of one region,
// then the next, each step touching no pod before the one before it is done.
func TestTwoRegionRolloutUnderLoad(t *testing.T) {
	assets := needCluster(t)
	nClients := envInt(t, "PARLEY_ROLLOUT_TWO_REGION_CLIENTS", 1200)
	nClients = (nClients + 7) / 8 * 8 // four groups of pairs
	perChild, drainTimeout := loadKnobs(t)
	const gateways, chats, presences = 2, 1, 1
	testStart := time.Now()
	cl := startCluster(t, assets)

	run := fmt.Sprintf("%06x", rand.IntN(1<<24))
	first, second := "e"+run, "w"+run
	order := []string{second, first}
	cc := &chatv1.ChatCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "two", Namespace: cl.ns},
		Spec: chatv1.ChatClusterSpec{
			Image: "ghcr.io/parleychat/parley:two-1",
			Regions: []chatv1.Region{
				regionSpec(first, 0, gateways, chats, presences),
				regionSpec(second, 1, gateways, chats, presences),
			},
			Cassandra: chatv1.CassandraSpec{ContactPoints: []string{cassandraAddr}, Keyspace: "rollout_two_" + run},
			Rollout:   chatv1.RolloutSpec{DrainTimeout: &metav1.Duration{Duration: drainTimeout}, RegionOrder: order},
		},
	}
	t.Logf("two-region ChatCluster Ready %s after create (%d gateways, %d chat, %d presence in each of %s and %s)",
		cl.createReady(cc, 6*time.Minute), gateways, chats, presences, first, second)

	base, issuer, dialer := loadBase(t, cl, cc)
	group := func(prefix, region, peerRegion string) loadConfig {
		c := base
		c.Prefix, c.N = prefix, nClients/4
		c.Service, c.Home = clientService(cc, region), region
		if peerRegion != "" {
			c.PeerService, c.PeerHome = clientService(cc, peerRegion), peerRegion
		}
		return c
	}
	fleet := startLoad(t, cl, perChild,
		group("u"+first+"-", first, ""),
		group("u"+second+"-", second, ""),
		group("x"+run+"-", first, second), // DMs homed in first (the even, lower user id's home)
		group("y"+run+"-", second, first), // DMs homed in second
	)
	t.Logf("initial connections per gateway: %v", dialer.dialsSnapshot())

	var stages []rollStage
	for _, region := range order {
		for _, role := range []chatv1.Role{chatv1.RoleChat, chatv1.RolePresence, chatv1.RoleGateway} {
			n := map[chatv1.Role]int{chatv1.RoleChat: chats, chatv1.RolePresence: presences, chatv1.RoleGateway: gateways}[role]
			stages = append(stages, rollStage{region: region, role: string(role), replicas: n})
		}
	}
	image := "ghcr.io/parleychat/parley:two-2"
	sl := watchStages(t, cl, cc, image, stages)
	lr := &loadRollout{
		cl: cl, cc: cc, fleet: fleet, issuer: issuer, dialer: dialer, service: clientService(cc, first),
		image:     image,
		want:      map[string]int{"gateway": 2 * gateways, "chat": 2 * chats, "presence": 2 * presences},
		timeout:   time.Duration(2*gateways+4)*drainTimeout + 12*time.Minute,
		limit:     time.Duration(2*gateways)*drainTimeout + 4*time.Minute,
		limitWhat: "drainTimeout × gateways + 2m per region",
		label:     "rollout (2 regions)",
	}
	_, _, rollStart, _ := lr.run(t)
	sl.check(t, rollStart)

	// The cross-region paths carried DMs after the rollout too: each region's new chat pods
	// forwarded sends to the other region (outbox) and routed deliveries it relayed here.
	for _, region := range order {
		var forwarded, relayed float64
		for _, p := range cl.pods(specs.Selector(cc, region, chatv1.RoleChat)) {
			forwarded += scrapeSum(t, p.Status.PodIP, "parley_outbox_forwarded_total")
			relayed += scrapeSum(t, p.Status.PodIP, "parley_region_relayed_deliveries_total")
		}
		t.Logf("region %s after the rollout: %.0f sends forwarded to the other region's home, %.0f relayed deliveries routed", region, forwarded, relayed)
		if forwarded == 0 || relayed == 0 {
			t.Errorf("region %s: no cross-region traffic after the rollout (forwarded %.0f, relayed %.0f)", region, forwarded, relayed)
		}
	}
	t.Logf("total %s", time.Since(testStart).Round(time.Second))
	if t.Failed() {
		t.Log(cl.describe())
	}
}

// rollStage is one step of a rollout: the pods of one role in one region.
type rollStage struct {
	region, role string
	replicas     int
}

// stageLog watches a ChatCluster's role pods while it rolls out to an image and notes, in the
// order the API server reports pod changes, when each stage was first touched (a pod of the
// new image created, or an old one deleted) and when it was first done (its replicas at the
// new image, Ready and not terminating, and no old pod left that is not terminating).
type stageLog struct {
	stages []rollStage
	image  string
	stop   func()

	mu        sync.Mutex
	pods      map[types.UID]*corev1.Pod
	events    int
	touched   []int // event number, 0 = not yet
	done      []int
	touchedAt []time.Time
	doneAt    []time.Time
	ended     error // why the watch ended early
}

func watchStages(t *testing.T, cl *cluster, cc *chatv1.ChatCluster, image string, stages []rollStage) *stageLog {
	t.Helper()
	w, err := cl.c.Watch(cl.ctx, &corev1.PodList{}, client.InNamespace(cl.ns),
		client.MatchingLabels{specs.LabelInstance: cc.Name}, client.HasLabels{specs.LabelRole})
	if err != nil {
		t.Fatal(err)
	}
	sl := &stageLog{
		stages: stages, image: image, stop: w.Stop, pods: map[types.UID]*corev1.Pod{},
		touched: make([]int, len(stages)), done: make([]int, len(stages)),
		touchedAt: make([]time.Time, len(stages)), doneAt: make([]time.Time, len(stages)),
	}
	go func() {
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			sl.mu.Lock()
			switch {
			case ev.Type == watch.Error || ev.Type != watch.Bookmark && !ok:
				sl.ended = fmt.Errorf("watch event %s: %v", ev.Type, ev.Object)
			case ev.Type == watch.Deleted:
				delete(sl.pods, p.UID)
			case ok:
				sl.pods[p.UID] = p
			}
			sl.events++
			sl.note()
			sl.mu.Unlock()
		}
		sl.mu.Lock()
		if sl.ended == nil {
			sl.ended = fmt.Errorf("watch closed")
		}
		sl.mu.Unlock()
	}()
	t.Cleanup(w.Stop)
	return sl
}

// note records the stages first touched or done by the latest event; sl.mu is held.
func (sl *stageLog) note() {
	now := time.Now()
	for i, st := range sl.stages {
		fresh, old := 0, 0
		touched := false
		for _, p := range sl.pods {
			if p.Labels[specs.LabelRegion] != st.region || p.Labels[specs.LabelRole] != st.role {
				continue
			}
			isNew := p.Spec.Containers[0].Image == sl.image
			touched = touched || isNew || p.DeletionTimestamp != nil
			switch {
			case p.DeletionTimestamp != nil:
			case isNew && podReady(p):
				fresh++
			case !isNew:
				old++
			}
		}
		if touched && sl.touched[i] == 0 {
			sl.touched[i], sl.touchedAt[i] = sl.events, now
		}
		if fresh == st.replicas && old == 0 && sl.touched[i] != 0 && sl.done[i] == 0 {
			sl.done[i], sl.doneAt[i] = sl.events, now
		}
	}
}

// check stops the watch, logs when each stage was touched and done (since rollStart), and fails
// the test unless every stage was done, each touched only after the one before it was done.
func (sl *stageLog) check(t *testing.T, rollStart time.Time) {
	t.Helper()
	sl.stop()
	sl.mu.Lock()
	defer sl.mu.Unlock()
	var b strings.Builder
	for i, st := range sl.stages {
		fmt.Fprintf(&b, "\n  %s/%s: touched at event %d (+%s), done at event %d (+%s)", st.region, st.role,
			sl.touched[i], sl.touchedAt[i].Sub(rollStart).Round(100*time.Millisecond),
			sl.done[i], sl.doneAt[i].Sub(rollStart).Round(100*time.Millisecond))
	}
	t.Logf("rollout stages in the order they must roll, times since the image changed (%d pod events):%s", sl.events, b.String())
	if sl.ended != nil && !strings.Contains(sl.ended.Error(), "closed") {
		t.Errorf("pod watch: %v", sl.ended)
	}
	for i, st := range sl.stages {
		switch {
		case sl.done[i] == 0:
			t.Errorf("stage %s/%s was never seen done", st.region, st.role)
		case i > 0 && sl.done[i-1] != 0 && sl.touched[i] <= sl.done[i-1]:
			prev := sl.stages[i-1]
			t.Errorf("stage %s/%s started (event %d) before %s/%s was done (event %d)",
				st.region, st.role, sl.touched[i], prev.region, prev.role, sl.done[i-1])
		}
	}
}

// scrapeSum sums the samples of the counter name on the /metrics of the pod at ip.
func scrapeSum(t *testing.T, ip, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + ip + ":8080/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", ip, err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name); ok && (strings.HasPrefix(rest, "{") || strings.HasPrefix(rest, " ")) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metrics of %s: %q: %v", ip, line, err)
			}
			sum += v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("metrics of %s: %v", ip, err)
	}
	return sum
}
