package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/bus/bustest"
)

// broker is the Kafka the tests use (hack/deps.sh up kafka).
func broker() string {
	if a := os.Getenv("PARLEY_TEST_KAFKA"); a != "" {
		return a
	}
	return "127.0.0.1:9092"
}

// testConfig keeps rebalances quick (heartbeats every 100ms) while the
// session timeout stays above bustest.WaitFor: a member that left is only
// replaced in time if Leave really left the group.
func testConfig() Config {
	return Config{
		Brokers:           []string{broker()},
		ClientID:          "parley-test",
		SessionTimeout:    45 * time.Second,
		HeartbeatInterval: 100 * time.Millisecond,
		RebalanceTimeout:  10 * time.Second,
		JoinTimeout:       20 * time.Second,
	}
}

var reachable struct {
	once sync.Once
	err  error
}

// requireKafka skips the test when no broker answers, unless CI is set:
// CI always provides Kafka, so there it fails.
func requireKafka(t *testing.T) {
	t.Helper()
	reachable.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cfg := testConfig()
		cfg.Logger = slog.New(slog.DiscardHandler) // the skip message says it
		b, err := New(ctx, cfg)
		if err != nil {
			reachable.err = err
			return
		}
		reachable.err = b.Close()
	})
	if reachable.err == nil {
		return
	}
	msg := fmt.Sprintf("Kafka not reachable at %s (%v); run hack/deps.sh up kafka", broker(), reachable.err)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

func newBus(t *testing.T, edit ...func(*Config)) *Bus {
	t.Helper()
	requireKafka(t)
	cfg := testConfig()
	for _, f := range edit {
		f(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// name is a topic or group name unique to the test and run.
func name(t *testing.T, kind string) string {
	r := strings.NewReplacer("/", ".", " ", "_")
	return fmt.Sprintf("kafkatest.%s.%s.%d", r.Replace(t.Name()), kind, time.Now().UnixNano())
}

func TestConformance(t *testing.T) {
	requireKafka(t)
	bustest.Run(t, func(t *testing.T) bus.Bus { return newBus(t) })
}

// TestPartitionForMatchesKafkaPartitioner compares bus.PartitionFor with
// franz-go's implementation of Kafka's default key partitioner (the Java
// client's murmur2), which the bus replaces with kgo.ManualPartitioner.
func TestPartitionForMatchesKafkaPartitioner(t *testing.T) {
	keyed := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	keys := [][]byte{{}, []byte("a"), []byte("ab"), []byte("abc"), []byte("abcd"), []byte("dm:alice:bob"), []byte("g:1234567890123456789"), {0xff, 0x00, 0x80, 0x7f, 0x01}}
	for i := range 500 {
		keys = append(keys, []byte("conv-"+strconv.Itoa(i)))
	}
	for _, n := range []int32{1, 2, 3, 7, 16, 64, 1000} {
		for _, k := range keys {
			want := keyed.Partition(&kgo.Record{Key: k}, int(n))
			if got := bus.PartitionFor(k, n); int(got) != want {
				t.Errorf("PartitionFor(%q, %d) = %d, Kafka's partitioner says %d", k, n, got, want)
			}
		}
	}
}

// TestKeyedPublishMatchesBrokerDefault produces keyed records with a client
// on kgo's default partitioner and checks the partitions the records landed
// in against bus.PartitionFor and the bus's own Publish.
func TestKeyedPublishMatchesBrokerDefault(t *testing.T) {
	b := newBus(t)
	const partitions = 7
	topic := name(t, "topic")
	if err := b.CreateTopic(context.Background(), bus.Topic{Name: topic, Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for i := range 40 {
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("dm:u%d:v%d", i, i*7)), Value: []byte("x")})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if want := bus.PartitionFor(r.Key, partitions); r.Partition != want {
			t.Errorf("key %q: default partitioner chose %d, PartitionFor %d", r.Key, r.Partition, want)
		}
	}
}

// handler records callbacks in an event log shared between handlers.
type handler struct {
	name   string
	events *events
	handle func(ctx context.Context, r bus.Record) // optional

	mu    sync.Mutex
	owned map[int32]bool
	recs  []bus.Record
}

type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, s)
}

func (e *events) snapshot() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log)
}

func newHandler(name string, ev *events) *handler {
	return &handler{name: name, events: ev, owned: make(map[int32]bool)}
}

func (h *handler) Assigned(ps []int32) {
	h.events.add(fmt.Sprintf("%s assigned %v", h.name, ps))
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range ps {
		h.owned[p] = true
	}
}

func (h *handler) Revoked(ps []int32) {
	h.events.add(fmt.Sprintf("%s revoked %v", h.name, ps))
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range ps {
		delete(h.owned, p)
	}
}

func (h *handler) Handle(ctx context.Context, r bus.Record) {
	if h.handle != nil {
		h.handle(ctx, r)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r)
}

func (h *handler) ownedSet() []int32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ps []int32
	for p := range h.owned {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

func (h *handler) records() []bus.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.recs)
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bustest.WaitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", bustest.WaitFor, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func createTopic(t *testing.T, b *Bus, partitions int32) string {
	t.Helper()
	topic := name(t, "topic")
	if err := b.CreateTopic(context.Background(), bus.Topic{Name: topic, Partitions: partitions}); err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	return topic
}

func join(t *testing.T, b *Bus, group, topic, member string, h bus.GroupHandler) bus.Membership {
	t.Helper()
	m, err := b.Join(context.Background(), group, topic, member, h)
	if err != nil {
		t.Fatalf("Join(%s): %v", member, err)
	}
	t.Cleanup(func() { _ = m.Leave() })
	return m
}

// TestRevokeWaitsForInFlightHandle: a partition moving to a new member is
// revoked only after its in-flight Handle returned (its ctx is cancelled
// first), and its uncommitted record goes to the new owner.
func TestRevokeWaitsForInFlightHandle(t *testing.T) {
	b := newBus(t)
	topic, group := createTopic(t, b, 2), name(t, "group")
	ev := new(events)
	release := make(chan struct{})
	a := newHandler("a", ev)
	var entered sync.WaitGroup
	entered.Add(2)
	a.handle = func(ctx context.Context, r bus.Record) {
		if string(r.Value) != "block" {
			return
		}
		entered.Done()
		select {
		case <-ctx.Done():
			ev.add(fmt.Sprintf("a handle of %d cancelled", r.Partition))
		case <-release:
		}
	}
	join(t, b, group, topic, "a", a)
	waitUntil(t, "a to own both partitions", func() bool { return len(a.ownedSet()) == 2 })
	for p := range int32(2) {
		if err := b.Publish(context.Background(), topic, p, nil, []byte("block")); err != nil {
			t.Fatal(err)
		}
	}
	entered.Wait()

	c := newHandler("b", ev)
	join(t, b, group, topic, "b", c)
	t.Cleanup(func() { close(release) }) // before the Leaves (cleanups run last-in first-out)
	waitUntil(t, "b to get a partition", func() bool { return len(c.ownedSet()) == 1 })
	moved := c.ownedSet()[0]
	want := []string{
		"a assigned [0 1]",
		fmt.Sprintf("a handle of %d cancelled", moved),
		fmt.Sprintf("a revoked [%d]", moved),
		fmt.Sprintf("b assigned [%d]", moved),
	}
	if got := ev.snapshot(); !slices.Equal(got, want) {
		t.Errorf("events = %q, want %q", got, want)
	}
	waitUntil(t, "b to get the uncommitted record", func() bool { return len(c.records()) == 1 })
}

// TestPausesSlowPartition: while Handle is stuck, fetching of its partition
// pauses at Config.MaxQueued records and resumes once Handle goes on;
// records still arrive once each, in order.
func TestPausesSlowPartition(t *testing.T) {
	b := newBus(t, func(c *Config) { c.MaxQueued = 4 })
	topic, group := createTopic(t, b, 1), name(t, "group")
	gate := make(chan struct{})
	var entered sync.Once
	enteredCh := make(chan struct{})
	h := newHandler("a", new(events))
	h.handle = func(ctx context.Context, r bus.Record) {
		entered.Do(func() { close(enteredCh) })
		select {
		case <-gate:
		case <-ctx.Done():
		}
	}
	m := join(t, b, group, topic, "a", h).(*membership)
	const n = 60
	for i := range n {
		if err := b.Publish(context.Background(), topic, 0, nil, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	<-enteredCh
	waitUntil(t, "fetching of the stuck partition to pause", func() bool {
		return slices.Contains(m.cl.PauseFetchPartitions(nil)[topic], 0)
	})
	close(gate)
	waitUntil(t, "every record", func() bool { return len(h.records()) >= n })
	for i, r := range h.records() {
		if string(r.Value) != strconv.Itoa(i) || r.Offset != int64(i) {
			t.Fatalf("record %d: value %s offset %d", i, r.Value, r.Offset)
		}
	}
	waitUntil(t, "fetching to resume", func() bool {
		return len(m.cl.PauseFetchPartitions(nil)[topic]) == 0
	})
}

// TestJoinSameMemberReplaces: a second Join with the same member id on one
// bus takes over the first one's partitions (static membership), revoking
// them from the old handler first.
func TestJoinSameMemberReplaces(t *testing.T) {
	b := newBus(t)
	topic, group := createTopic(t, b, 2), name(t, "group")
	ev := new(events)
	old, cur := newHandler("old", ev), newHandler("new", ev)
	mOld := join(t, b, group, topic, "m", old)
	waitUntil(t, "old to own both partitions", func() bool { return len(old.ownedSet()) == 2 })
	join(t, b, group, topic, "m", cur)
	waitUntil(t, "new to own both partitions", func() bool { return len(cur.ownedSet()) == 2 })
	want := []string{"old assigned [0 1]", "old revoked [0 1]", "new assigned [0 1]"}
	if got := ev.snapshot(); !slices.Equal(got, want) {
		t.Errorf("events = %q, want %q", got, want)
	}
	if err := mOld.Commit(0, 0); err == nil {
		t.Errorf("Commit through the replaced membership succeeded")
	}
	if err := b.Publish(context.Background(), topic, 1, nil, []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "new to handle a record", func() bool { return len(cur.records()) == 1 })
	if n := len(old.records()); n != 0 {
		t.Errorf("replaced handler got %d records", n)
	}
}

// TestCreateTopicMismatch: an existing topic with another partition count
// is an error, not silently accepted.
func TestCreateTopicMismatch(t *testing.T) {
	b := newBus(t)
	topic := createTopic(t, b, 2)
	if err := b.CreateTopic(context.Background(), bus.Topic{Name: topic, Partitions: 3}); err == nil {
		t.Errorf("CreateTopic with 3 partitions of a 2-partition topic succeeded")
	}
	if _, err := b.Partitions(name(t, "missing")); err == nil {
		t.Errorf("Partitions of a missing topic succeeded")
	}
}

// TestCloseStopsGoroutines: after Close, every goroutine the bus and its
// clients started has ended (members that never left, subscriptions whose
// ctx is still live, Join watches).
func TestCloseStopsGoroutines(t *testing.T) {
	requireKafka(t)
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := New(ctx, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	topic, group := createTopic(t, b, 2), name(t, "group")
	ev := new(events)
	a, c := newHandler("a", ev), newHandler("b", ev)
	if _, err := b.Join(ctx, group, topic, "a", a); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Join(context.Background(), group, topic, "b", c); err != nil {
		t.Fatal(err)
	}
	var got sync.WaitGroup
	got.Add(2)
	for p := range int32(2) {
		if err := b.Subscribe(context.Background(), topic, p, func(bus.Record) { got.Done() }); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, topic, p, nil, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	got.Wait()
	waitUntil(t, "the members to handle both records", func() bool { return len(a.records())+len(c.records()) == 2 })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "goroutines to return to the baseline", func() bool { return runtime.NumGoroutine() <= before })
}

// committer is a handler that, like the chat sequencer, commits the offset
// after its last handled record of each partition in Revoked.
type committer struct {
	*handler
	m    func() bus.Membership
	errs chan error
}

func (c *committer) Revoked(ps []int32) {
	for _, p := range ps {
		var last int64 = -1
		for _, r := range c.records() {
			if r.Partition == p {
				last = r.Offset
			}
		}
		if last >= 0 {
			if err := c.m().Commit(p, last+1); err != nil {
				c.errs <- fmt.Errorf("commit %d in Revoked: %w", p, err)
			}
		}
	}
	c.handler.Revoked(ps)
}

// TestCommitInRevoked: offsets committed inside Revoked, during a
// cooperative rebalance and during Leave, are where the next owner resumes.
func TestCommitInRevoked(t *testing.T) {
	b := newBus(t)
	topic, group := createTopic(t, b, 2), name(t, "group")
	ev := new(events)
	var ma bus.Membership
	var mu sync.Mutex
	a := &committer{handler: newHandler("a", ev), errs: make(chan error, 4), m: func() bus.Membership {
		mu.Lock()
		defer mu.Unlock()
		return ma
	}}
	m := join(t, b, group, topic, "a", a)
	mu.Lock()
	ma = m
	mu.Unlock()
	waitUntil(t, "a to own both partitions", func() bool { return len(a.ownedSet()) == 2 })
	publish := func(from, to int) {
		for p := range int32(2) {
			for i := from; i < to; i++ {
				if err := b.Publish(context.Background(), topic, p, nil, []byte(fmt.Sprintf("p%d-%d", p, i))); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	publish(0, 3)
	waitUntil(t, "a to handle 6 records", func() bool { return len(a.records()) == 6 })

	// Cooperative rebalance: one partition moves to b.
	c := newHandler("b", ev)
	join(t, b, group, topic, "b", c)
	waitUntil(t, "b to get a partition", func() bool { return len(c.ownedSet()) == 1 })
	moved := c.ownedSet()[0]
	kept := 1 - moved
	publish(3, 5)
	waitUntil(t, "b to handle the new records of its partition", func() bool { return len(c.records()) >= 2 })
	for _, r := range c.records() {
		if r.Partition != moved || r.Offset < 3 {
			t.Errorf("b handled %s (partition %d offset %d): the commit in Revoked was not used", r.Value, r.Partition, r.Offset)
		}
	}

	count := func(h *handler, p int32) int {
		n := 0
		for _, r := range h.records() {
			if r.Partition == p {
				n++
			}
		}
		return n
	}
	waitUntil(t, "a to handle the new records of its partition", func() bool { return count(a.handler, kept) == 5 })

	// Leave: a commits its other partition in Revoked; b resumes there.
	if err := m.Leave(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b to own both partitions", func() bool { return len(c.ownedSet()) == 2 })
	publish(5, 7)
	waitUntil(t, "b to handle a's partition", func() bool {
		return count(c, kept) >= 2
	})
	for _, r := range c.records() {
		if r.Partition == kept && r.Offset < 5 {
			t.Errorf("b handled %s (offset %d) that a committed in Revoked", r.Value, r.Offset)
		}
	}
	close(a.errs)
	for err := range a.errs {
		t.Error(err)
	}
}

// BenchmarkPublishParallel measures acks=all Publish from many goroutines
// sharing batches; it reports, it does not judge.
func BenchmarkPublishParallel(bb *testing.B) {
	requireKafkaB(bb)
	ctx := context.Background()
	b, err := New(ctx, testConfig())
	if err != nil {
		bb.Fatal(err)
	}
	defer b.Close()
	topic := fmt.Sprintf("kafkabench.%d", time.Now().UnixNano())
	if err := b.CreateTopic(ctx, bus.Topic{Name: topic, Partitions: 16}); err != nil {
		bb.Fatal(err)
	}
	value := make([]byte, 256)
	bb.SetParallelism(32)
	bb.ResetTimer()
	var n int64
	var mu sync.Mutex
	bb.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		n++
		key := []byte("conv-" + strconv.FormatInt(n, 10))
		mu.Unlock()
		for pb.Next() {
			if err := b.Publish(ctx, topic, -1, key, value); err != nil {
				bb.Error(err)
				return
			}
		}
	})
}

func requireKafkaB(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	k, err := New(ctx, testConfig())
	if err != nil {
		b.Skipf("Kafka not reachable at %s (%v); run hack/deps.sh up kafka", broker(), err)
	}
	_ = k.Close()
}

func TestConfigDefaults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr bool
		check   func(Config) bool
	}{
		{name: "no brokers", cfg: Config{}, wantErr: true},
		{name: "defaults", cfg: Config{Brokers: []string{"k:9092"}}, check: func(c Config) bool {
			return c.ClientID == "parley" && c.Linger == 2*time.Millisecond && c.ReplicationFactor == 1 &&
				c.SessionTimeout == 30*time.Second && c.HeartbeatInterval == 3*time.Second &&
				c.JoinTimeout == c.RebalanceTimeout && c.MaxQueued == 1000
		}},
		{name: "short session shortens heartbeat", cfg: Config{Brokers: []string{"k:9092"}, SessionTimeout: 6 * time.Second}, check: func(c Config) bool {
			return c.HeartbeatInterval == 2*time.Second
		}},
		{name: "heartbeat too slow for session", cfg: Config{Brokers: []string{"k:9092"}, SessionTimeout: 6 * time.Second, HeartbeatInterval: 3 * time.Second}, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.withDefaults()
			if (err != nil) != tc.wantErr {
				t.Fatalf("withDefaults() error = %v, want error %v", err, tc.wantErr)
			}
			if tc.check != nil && !tc.check(got) {
				t.Errorf("withDefaults() = %+v", got)
			}
		})
	}
}

// TestNewFailsWithoutBroker: New reports an unreachable cluster instead of
// returning a bus whose calls would hang.
func TestNewFailsWithoutBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	b, err := New(ctx, Config{Brokers: []string{"127.0.0.1:1"}, Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		_ = b.Close()
		t.Fatal("New with no broker listening succeeded")
	}
}

// TestPublishAllAsyncKeepsOrder keeps many batches in flight to one
// partition and reads them back: every record acknowledged, in call order;
// a closed bus answers every record not sent.
func TestPublishAllAsyncKeepsOrder(t *testing.T) {
	b := newBus(t)
	topic := name(t, "topic")
	ctx := context.Background()
	if err := b.CreateTopic(ctx, bus.Topic{Name: topic, Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	const batches, per = 50, 4
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range batches {
		var msgs []bus.Message
		for j := range per {
			msgs = append(msgs, bus.Message{Topic: topic, Partition: 1, Value: []byte(strconv.Itoa(i*per + j))})
		}
		wg.Add(1)
		b.PublishAllAsync(ctx, msgs, func(errs []error) {
			defer wg.Done()
			for _, err := range errs {
				if err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d records failed", n)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker()), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {1: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []string
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for len(got) < batches*per && rctx.Err() == nil {
		cl.PollFetches(rctx).EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	for i := range batches * per {
		if i >= len(got) || got[i] != strconv.Itoa(i) {
			t.Fatalf("record %d read back as %v (of %d): order not kept", i, got[min(i, len(got)-1)], len(got))
		}
	}

	_ = b.Close()
	done := make(chan []error, 1)
	b.PublishAllAsync(ctx, []bus.Message{{Topic: topic, Partition: 0, Value: []byte("x")}}, func(errs []error) { done <- errs })
	if errs := <-done; len(errs) != 1 || !errors.Is(errs[0], bus.ErrNotSent) {
		t.Fatalf("PublishAllAsync on a closed bus = %v, want ErrNotSent", errs)
	}
}
