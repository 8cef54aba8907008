package rollout

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/specs"
	"github.com/parleychat/parley/runtime/auth"
	pclient "github.com/parleychat/parley/runtime/client"
)

// envInt reads a positive integer from the environment, def when unset.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// loadKnobs reads what the rollouts under load share: the clients per load child
// (PARLEY_ROLLOUT_CLIENTS_PER_CHILD, default 500, made even) and the drainTimeout
// (PARLEY_ROLLOUT_DRAIN_SECONDS, default 20).
func loadKnobs(t *testing.T) (perChild int, drainTimeout time.Duration) {
	t.Helper()
	perChild = envInt(t, "PARLEY_ROLLOUT_CLIENTS_PER_CHILD", 500)
	return perChild + perChild%2, time.Duration(envInt(t, "PARLEY_ROLLOUT_DRAIN_SECONDS", 20)) * time.Second
}

// regionSpec is a region on the backends of hack/deps.sh. The regions of a test share one
// Redis, so each keeps its keys under its own prefix (the API refuses a shared Redis without).
func regionSpec(name string, id int32, gateways, chats, presences int32) chatv1.Region {
	return chatv1.Region{
		Name:      name,
		ID:        id,
		Gateway:   chatv1.GatewaySpec{Replicas: gateways},
		Chat:      chatv1.ChatSpec{Replicas: chats},
		Presence:  chatv1.PresenceSpec{Replicas: presences},
		Cassandra: chatv1.RegionCassandra{LocalDatacenter: cassandraDC, ReplicationFactor: 1},
		Kafka:     chatv1.RegionKafka{Brokers: []string{kafkaAddr}},
		Redis:     chatv1.RegionRedis{Address: redisAddr, KeyPrefix: "parley:" + name + ":"},
	}
}

// setImage changes the ChatCluster's image (retrying on conflicts).
func (cl *cluster) setImage(cc *chatv1.ChatCluster, image string) {
	cl.t.Helper()
	for i := 0; ; i++ {
		cur := &chatv1.ChatCluster{}
		if err := cl.c.Get(cl.ctx, client.ObjectKeyFromObject(cc), cur); err != nil {
			cl.t.Fatal(err)
		}
		cur.Spec.Image = image
		err := cl.c.Update(cl.ctx, cur)
		if err == nil {
			return
		}
		if i > 20 {
			cl.t.Fatal(err)
		}
	}
}

// createReady creates cc and waits until it is Ready; it returns how long that took. The
// Kafka topics of cc's regions are deleted when the test ends.
func (cl *cluster) createReady(cc *chatv1.ChatCluster, timeout time.Duration) time.Duration {
	cl.t.Helper()
	start := time.Now()
	for _, r := range cc.Spec.Regions {
		cl.regions = append(cl.regions, r.Name)
	}
	if err := cl.c.Create(cl.ctx, cc); err != nil {
		cl.t.Fatalf("create ChatCluster: %v", err)
	}
	cl.waitCondition(cc, chatv1.ConditionReady, metav1.ConditionTrue, timeout)
	return time.Since(start).Round(time.Millisecond)
}

// waitRolledOut waits until the ChatCluster is Ready at its generation and every role pod runs
// image, Ready and not terminating, with want pods of each role.
func (cl *cluster) waitRolledOut(cc *chatv1.ChatCluster, image string, want map[string]int, timeout time.Duration) {
	cl.t.Helper()
	cl.eventually("the rollout to "+image, timeout, func() (bool, error) {
		got := &chatv1.ChatCluster{}
		if err := cl.c.Get(cl.ctx, client.ObjectKeyFromObject(cc), got); err != nil {
			return false, err
		}
		for _, c := range got.Status.Conditions {
			if c.Type == chatv1.ConditionReady && (c.Status != metav1.ConditionTrue || c.ObservedGeneration != got.Generation) {
				return false, nil
			}
		}
		roles := map[string]int{}
		for _, p := range cl.pods(map[string]string{specs.LabelInstance: cc.Name, specs.LabelManagedBy: specs.ManagedBy}) {
			if p.Labels[specs.LabelRole] == "" {
				continue // migrate Job pods
			}
			if p.DeletionTimestamp != nil || p.Spec.Containers[0].Image != image || !podReady(&p) {
				return false, nil
			}
			roles[p.Labels[specs.LabelRole]]++
		}
		for r, n := range want {
			if roles[r] != n {
				return false, nil
			}
		}
		return true, nil
	})
}

// resolverServer serves GET /resolve?addr=<service:port> from d to load children; it returns
// the base URL.
func resolverServer(t *testing.T, d *serviceDialer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr, err := d.resolve(r.Context(), r.URL.Query().Get("addr"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, addr)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// loadFleet is the load children of one test.
type loadFleet struct {
	t        *testing.T
	children []*loadChild
	n        int
}

// startLoad starts the clients of each cfg (cfg.N users cfg.Prefix0…) in children of at most
// perChild clients and waits until all are connected.
func startLoad(t *testing.T, cl *cluster, perChild int, cfgs ...loadConfig) *loadFleet {
	t.Helper()
	f := &loadFleet{t: t}
	start := time.Now()
	for _, cfg := range cfgs {
		f.n += cfg.N
		for off := 0; off < cfg.N; off += perChild {
			c := cfg
			c.Offset, c.N = off, min(perChild, cfg.N-off)
			ch, err := startLoadChild(c, filepath.Join(cl.workDir, fmt.Sprintf("load-%s%d.stderr", c.Prefix, off)))
			if err != nil {
				t.Fatal(err)
			}
			f.children = append(f.children, ch)
			t.Cleanup(ch.kill)
		}
	}
	timeout := 2*time.Minute + time.Duration(f.n)*20*time.Millisecond
	for i, ch := range f.children {
		select {
		case l := <-ch.connected:
			if l.Failed > 0 {
				t.Fatalf("load child %d: %d clients connected, %d failed (first: %s)\n%s", i, l.Connected, l.Failed, l.FirstErr, cl.describe())
			}
		case <-ch.exited:
			b, _ := os.ReadFile(ch.stderr)
			t.Fatalf("load child %d exited before connecting: %v\n%s", i, ch.err, tail(b, 3000))
		case <-time.After(time.Until(start.Add(timeout))):
			t.Fatalf("load children not connected within %s\n%s", timeout, cl.describe())
		}
	}
	t.Logf("%d clients connected in %d children in %s", f.n, len(f.children), time.Since(start).Round(time.Millisecond))
	return f
}

// stop stops sending everywhere and collects every client's report.
func (f *loadFleet) stop(timeout time.Duration) (reports []clientReport, settled bool) {
	f.t.Helper()
	for _, ch := range f.children {
		ch.stop()
	}
	settled = true
	deadline := time.Now().Add(timeout)
	for i, ch := range f.children {
		select {
		case l := <-ch.done:
			settled = settled && l.Settled
		case <-ch.exited:
			select {
			case l := <-ch.done: // it reported, then exited
				settled = settled && l.Settled
			default:
				f.t.Fatalf("load child %d exited without its report: %v", i, ch.err)
			}
		case <-time.After(time.Until(deadline)):
			f.t.Fatalf("load child %d: no report within %s", i, timeout)
		}
		<-ch.exited
		reports = append(reports, ch.reports...)
	}
	if len(reports) != f.n {
		f.t.Fatalf("%d client reports, want %d", len(reports), f.n)
	}
	return reports, settled
}

// loadVerdict is what the clients' reports and History say.
type loadVerdict struct {
	clients, acked, sendErrors int
	lost, notStored, notShown  int
	duplicates                 int
	reconnects                 map[int]int    // reconnects → clients
	ackedBy                    map[string]int // acknowledged messages by the senders' user prefix
	examples                   []string
}

// checkLoad compares every acknowledged message with History (read over REST through the
// Service, as the sender's DM peer would) and with what the peer was shown.
func checkLoad(t *testing.T, reports []clientReport, issuer *auth.DevIssuer, d *serviceDialer, service string) loadVerdict {
	t.Helper()
	byID := map[string]*clientReport{}
	convs := map[string]string{} // conv → a member
	for i := range reports {
		r := &reports[i]
		byID[r.ID] = r
		convs[r.Conv] = r.ID
	}
	httpc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 16}}
	stored := map[string]map[uint64]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	var firstErr error
	for conv, member := range convs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			tok, err := issuer.Issue(member, "", time.Hour)
			if err != nil {
				mu.Lock()
				firstErr = err
				mu.Unlock()
				return
			}
			rest := pclient.NewREST("http://"+service, tok)
			rest.HTTP = httpc
			got := map[uint64]string{}
			var after uint64
			for attempt := 0; ; {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				h, err := rest.HistoryAfter(ctx, conv, after, 200)
				cancel()
				if err != nil {
					if attempt++; attempt < 5 {
						time.Sleep(time.Second)
						continue
					}
					mu.Lock()
					firstErr = fmt.Errorf("history of %s: %w", conv, err)
					mu.Unlock()
					return
				}
				for _, m := range h.GetMessages() {
					got[m.GetSeq()] = m.GetText()
					after = max(after, m.GetSeq())
				}
				if !h.GetHasMore() || len(h.GetMessages()) == 0 {
					break
				}
			}
			mu.Lock()
			stored[conv] = got
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("reading History: %v", firstErr)
	}
	v := loadVerdict{clients: len(reports), reconnects: map[int]int{}, ackedBy: map[string]int{}}
	for _, r := range reports {
		v.duplicates += r.Duplicates
		v.sendErrors += r.SendErrors
		v.reconnects[r.Reconnects]++
		v.ackedBy[r.ID[:strings.LastIndexByte(r.ID, '-')+1]] += len(r.Acked)
		peer := byID[r.Peer]
		for _, m := range r.Acked {
			v.acked++
			inHistory := stored[r.Conv][m.Seq] == m.Text
			shown := peer != nil && peer.Shown[m.Seq] == m.Text
			if !inHistory {
				v.notStored++
			}
			if !shown {
				v.notShown++
			}
			if !inHistory || !shown {
				v.lost++
				if len(v.examples) < 10 {
					v.examples = append(v.examples, fmt.Sprintf("%s seq %d %q: history %q, shown to %s %q",
						r.Conv, m.Seq, m.Text, stored[r.Conv][m.Seq], r.Peer, peer.Shown[m.Seq]))
				}
			}
		}
	}
	return v
}

// dialRates counts the dials to each endpoint per second within [from, to): the peak of any
// one endpoint in any one second, the mean over the (endpoint, second) buckets with dials, and
// the dials per endpoint.
func (d *serviceDialer) dialRates(from, to time.Time) (peak int, peakAt string, mean float64, per map[string]int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	buckets := map[string]int{}
	per = map[string]int{}
	total := 0
	for _, r := range d.log {
		if r.at.Before(from) || !r.at.Before(to) {
			continue
		}
		k := r.target + "@" + strconv.FormatInt(int64(r.at.Sub(from)/time.Second), 10) + "s"
		buckets[k]++
		per[r.target]++
		total++
		if buckets[k] > peak {
			peak, peakAt = buckets[k], k
		}
	}
	if len(buckets) > 0 {
		mean = float64(total) / float64(len(buckets))
	}
	return peak, peakAt, mean, per
}

// loadBase is what every load child of cc shares: the cluster's dev secret (and an issuer of
// its tokens), the resolver of a caching serviceDialer, and the pace of the DMs; the caller sets
// the Services, prefix and N.
func loadBase(t *testing.T, cl *cluster, cc *chatv1.ChatCluster) (loadConfig, *auth.DevIssuer, *serviceDialer) {
	t.Helper()
	secretDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(secretDir, specs.DevSecretKey), cl.devSecret(cc), 0o600); err != nil {
		t.Fatal(err)
	}
	secret, err := auth.LoadOrCreateDevSecret(secretDir)
	if err != nil {
		t.Fatal(err)
	}
	dialer := &serviceDialer{cl: cl, TTL: 250 * time.Millisecond}
	return loadConfig{
		Resolver:  resolverServer(t, dialer),
		SecretDir: secretDir,
		SendMin:   2 * time.Second,
		SendMax:   5 * time.Second,
		Settle:    90 * time.Second,
	}, auth.NewDevIssuer(secret), dialer
}

// clientService is region's client Service as the load children dial it, "<name>:80".
func clientService(cc *chatv1.ChatCluster, region string) string {
	return specs.ClientServiceName(cc, region) + ":80"
}

// startClients connects n load clients (in children of perChild) to region's client Service
// through a caching serviceDialer.
func startClients(t *testing.T, cl *cluster, cc *chatv1.ChatCluster, region string, n, perChild int) (*loadFleet, *auth.DevIssuer, *serviceDialer, string) {
	t.Helper()
	cfg, issuer, dialer := loadBase(t, cl, cc)
	cfg.Service, cfg.Prefix, cfg.N = clientService(cc, region), "u"+region+"-", n
	return startLoad(t, cl, perChild, cfg), issuer, dialer, cfg.Service
}

// TestRolloutUnderLoad: one region of 3 gateways, 2 chat and 1 presence on the real controllers;
// PARLEY_ROLLOUT_CLIENTS SDK clients (default 2,000) in child processes, spread over the client
// Service's Ready endpoints, exchange DMs in pairs every 2–5 s while a new image tag rolls every
// role. Afterwards every acknowledged message must be in History and have been shown to the
// peer, and nothing may be shown twice. The reconnect distribution and the peak reconnect rate
// per gateway are reported against the targets of issue 12 (asserted with
// PARLEY_ROLLOUT_STRICT=1).
func TestRolloutUnderLoad(t *testing.T) {
	assets := needCluster(t)
	nClients := envInt(t, "PARLEY_ROLLOUT_CLIENTS", 2000)
	nClients += nClients % 2
	perChild, drainTimeout := loadKnobs(t)
	const gateways, chats, presences = 3, 2, 1
	testStart := time.Now()
	cl := startCluster(t, assets)

	run := fmt.Sprintf("%06x", rand.IntN(1<<24))
	region := "l" + run
	cc := &chatv1.ChatCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "load", Namespace: cl.ns},
		Spec: chatv1.ChatClusterSpec{
			Image:     "ghcr.io/parleychat/parley:load-1",
			Regions:   []chatv1.Region{regionSpec(region, 0, gateways, chats, presences)},
			Cassandra: chatv1.CassandraSpec{ContactPoints: []string{cassandraAddr}, Keyspace: "rollout_load_" + run},
			Rollout:   chatv1.RolloutSpec{DrainTimeout: &metav1.Duration{Duration: drainTimeout}},
		},
	}
	t.Logf("ChatCluster Ready %s after create (%d gateways, %d chat, %d presence)", cl.createReady(cc, 5*time.Minute), gateways, chats, presences)

	fleet, issuer, dialer, service := startClients(t, cl, cc, region, nClients, perChild)
	t.Logf("initial connections per gateway: %v", dialer.dialsSnapshot())

	// A new tag of the same image: every pod template changes, every role rolls.
	lr := &loadRollout{
		cl: cl, cc: cc, fleet: fleet, issuer: issuer, dialer: dialer, service: service,
		image:     "ghcr.io/parleychat/parley:load-2",
		want:      map[string]int{"gateway": gateways, "chat": chats, "presence": presences},
		timeout:   time.Duration(gateways+2)*drainTimeout + 8*time.Minute,
		limit:     time.Duration(gateways)*drainTimeout + 2*time.Minute,
		limitWhat: "drainTimeout × gateways + 2m",
		label:     "rollout",
	}
	hist, clients, rollStart, stopAt := lr.run(t)
	if path := os.Getenv("PARLEY_ROLLOUT_PLOT"); path != "" {
		if err := plotRollout(path, hist, clients, dialer.dialSeries(rollStart, stopAt)); err != nil {
			t.Errorf("plot: %v", err)
		} else {
			t.Logf("reconnect plot written to %s", path)
		}
	}
	t.Logf("total %s", time.Since(testStart).Round(time.Second))
	if t.Failed() {
		t.Log(cl.describe())
	}
}

// loadRollout is a rollout under load: the fleet's clients exchange DMs while cc's image
// changes.
type loadRollout struct {
	cl      *cluster
	cc      *chatv1.ChatCluster
	fleet   *loadFleet
	issuer  *auth.DevIssuer
	dialer  *serviceDialer
	service string         // History is read through it
	image   string         // the new image
	want    map[string]int // role → pods, all regions together, once rolled out
	timeout time.Duration  // for the whole rollout
	// limit is issue 12's bound on the rollout's duration, limitWhat how it is made.
	limit     time.Duration
	limitWhat string
	label     string // starts the line printed: "<label>: clients=… duration=…s"
}

// run lets the DMs go for 10 s, changes the image, waits until every pod runs it, lets the DMs go
// 10 s more, stops the clients and checks every acknowledged message against History and the
// peer. It logs the verdict and the dials per gateway, prints issue 12's line, asserts that
// nothing was lost or shown twice and the targets (the reconnect counts always, the rate and
// the duration with PARLEY_ROLLOUT_STRICT=1), and returns the reconnect histogram (0, 1, 2, >2
// times), the clients and the span the dials were counted over.
func (lr *loadRollout) run(t *testing.T) (hist [4]int, clients int, rollStart, stopAt time.Time) {
	t.Helper()
	time.Sleep(10 * time.Second) // traffic before the rollout
	rollStart = time.Now()
	lr.cl.setImage(lr.cc, lr.image)
	lr.cl.waitRolledOut(lr.cc, lr.image, lr.want, lr.timeout)
	rollTook := time.Since(rollStart)
	t.Logf("rollout done in %s", rollTook.Round(time.Millisecond))

	time.Sleep(10 * time.Second) // traffic after the rollout, reconnects settle
	stopAt = time.Now()
	reports, settled := lr.fleet.stop(3 * time.Minute)
	if !settled {
		t.Logf("not every acknowledged message was shown on both sides within the settle time")
	}
	v := checkLoad(t, reports, lr.issuer, lr.dialer, lr.service)

	peak, peakAt, mean, per := lr.dialer.dialRates(rollStart, stopAt)
	hist = [4]int{v.reconnects[0], v.reconnects[1], v.reconnects[2], 0}
	for n, c := range v.reconnects {
		if n > 2 {
			hist[3] += c
		}
	}
	keys := make([]int, 0, len(v.reconnects))
	for n := range v.reconnects {
		keys = append(keys, n)
	}
	sort.Ints(keys)
	var dist []string
	for _, n := range keys {
		dist = append(dist, fmt.Sprintf("%dx=%d", n, v.reconnects[n]))
	}
	t.Logf("messages: acked=%d (by user prefix %v) send-errors=%d lost=%d (not in History %d, not shown to the peer %d) duplicates=%d",
		v.acked, v.ackedBy, v.sendErrors, v.lost, v.notStored, v.notShown, v.duplicates)
	t.Logf("reconnects per client: %s; dials per endpoint during the rollout %v; peak %d/s (%s), mean %.1f/s over endpoint-seconds with dials",
		strings.Join(dist, " "), per, peak, peakAt, mean)
	for _, e := range v.examples {
		t.Logf("lost: %s", e)
	}
	fmt.Printf("%s: clients=%d lost=%d duplicates=%d reconnects: 0x=%d 1x=%d 2x=%d >2x=%d peak_reconnects_per_s=%d duration=%ds\n",
		lr.label, v.clients, v.lost, v.duplicates, hist[0], hist[1], hist[2], hist[3], peak, int(rollTook.Round(time.Second)/time.Second))

	if v.lost != 0 {
		t.Errorf("%d acknowledged messages lost (not in History %d, not shown to the peer %d)", v.lost, v.notStored, v.notShown)
	}
	if v.duplicates != 0 {
		t.Errorf("%d messages shown twice", v.duplicates)
	}
	if v.acked == 0 {
		t.Errorf("no message was acknowledged")
	}
	// The issue's targets.
	once := float64(hist[1]) / float64(v.clients)
	// The reconnect counts are asserted always (the sliding window gives 99 %+ once, far from
	// the bound); the rate and duration depend on the machine's load and are asserted with
	// PARLEY_ROLLOUT_STRICT=1.
	targets := []struct {
		ok, always bool
		what       string
	}{
		{once >= 0.9, true, fmt.Sprintf("≥90%% of clients reconnect exactly once: %.1f%% (%d of %d)", 100*once, hist[1], v.clients)},
		{hist[3] == 0, true, fmt.Sprintf("no client reconnects more than twice: %d did", hist[3])},
		{mean == 0 || float64(peak) <= 2*mean, false, fmt.Sprintf("no gateway above 2× the mean reconnect rate: peak %d/s vs mean %.1f/s", peak, mean)},
		{rollTook <= lr.limit, false, fmt.Sprintf("rollout within %s = %s: took %s", lr.limitWhat, lr.limit, rollTook.Round(time.Second))},
	}
	strict := os.Getenv("PARLEY_ROLLOUT_STRICT") != ""
	for _, tg := range targets {
		switch {
		case tg.ok:
			t.Logf("target met: %s", tg.what)
		case strict || tg.always:
			t.Errorf("target missed: %s", tg.what)
		default:
			t.Logf("TARGET MISSED (asserted with PARLEY_ROLLOUT_STRICT=1): %s", tg.what)
		}
	}
	return hist, v.clients, rollStart, stopAt
}
