package memory

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/bus/bustest"
)

func newBus(t *testing.T, opts ...Option) *Bus {
	b := New(opts...)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	bustest.Run(t, func(t *testing.T) bus.Bus { return newBus(t) })
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// handler is a GroupHandler recording callbacks in one event log.
type handler struct {
	name   string
	handle func(ctx context.Context, r bus.Record) // optional

	mu     sync.Mutex
	events *[]string // shared between handlers to see the order
	owned  map[int32]bool
	recs   []bus.Record
}

func newHandler(name string, events *[]string) *handler {
	return &handler{name: name, events: events, owned: make(map[int32]bool)}
}

var eventsMu sync.Mutex

func (h *handler) log(e string) {
	eventsMu.Lock()
	defer eventsMu.Unlock()
	*h.events = append(*h.events, e)
}

func (h *handler) Assigned(ps []int32) {
	h.log(fmt.Sprintf("%s assigned %v", h.name, ps))
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range ps {
		h.owned[p] = true
	}
}

func (h *handler) Revoked(ps []int32) {
	h.log(fmt.Sprintf("%s revoked %v", h.name, ps))
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

func (h *handler) ownedCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.owned)
}

func (h *handler) records() []bus.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.recs)
}

func snapshot(events *[]string) []string {
	eventsMu.Lock()
	defer eventsMu.Unlock()
	return slices.Clone(*events)
}

func mustTopic(t *testing.T, b *Bus, name string, n int32) {
	t.Helper()
	if err := b.CreateTopic(context.Background(), bus.Topic{Name: name, Partitions: n}); err != nil {
		t.Fatal(err)
	}
}

func mustPublish(t *testing.T, b *Bus, topic string, p int32, v string) {
	t.Helper()
	if err := b.Publish(context.Background(), topic, p, nil, []byte(v)); err != nil {
		t.Fatal(err)
	}
}

func TestRevokeWaitsForInFlightHandle(t *testing.T) {
	b := newBus(t)
	mustTopic(t, b, "t", 2)
	var events []string
	entered := make(chan struct{})
	release := make(chan struct{})
	cancelled := make(chan struct{})
	a := newHandler("a", &events)
	var first sync.Once
	a.handle = func(ctx context.Context, r bus.Record) {
		block := false
		// Only the first delivery blocks: the record comes back to a when b
		// leaves at the end of the test.
		first.Do(func() { block = true })
		if !block {
			return
		}
		close(entered)
		<-ctx.Done() // the revoke cancels the Handle ctx first
		close(cancelled)
		<-release
		a.log("a handle returned")
	}
	ma, err := b.Join(context.Background(), "g", "t", "a", a)
	if err != nil {
		t.Fatal(err)
	}
	defer ma.Leave()
	// Round-robin over sorted ids: "b" takes partition 1 from "a".
	mustPublish(t, b, "t", 1, "block")
	<-entered

	c := newHandler("b", &events)
	joined := make(chan bus.Membership)
	go func() {
		mb, err := b.Join(context.Background(), "g", "t", "b", c)
		if err != nil {
			t.Error(err)
		}
		joined <- mb
	}()
	<-cancelled
	// The rebalance is stuck behind a's Handle: nothing revoked or assigned.
	if got := snapshot(&events); !slices.Equal(got, []string{"a assigned [0 1]"}) {
		t.Fatalf("events while Handle in flight = %q", got)
	}
	close(release)
	mb := <-joined
	defer mb.Leave()
	want := []string{"a assigned [0 1]", "a handle returned", "a revoked [1]", "b assigned [1]"}
	if got := snapshot(&events); !slices.Equal(got, want) {
		t.Fatalf("events = %q, want %q", got, want)
	}
	if err := ma.Commit(1, 1); err == nil {
		t.Errorf("commit on a revoked partition succeeded")
	}
	if err := ma.Commit(0, 0); err != nil {
		t.Errorf("commit on an owned partition: %v", err)
	}
	// The uncommitted "block" record is redelivered to its new owner.
	waitUntil(t, "b to get the uncommitted record", func() bool { return len(c.records()) == 1 })
}

func TestStaticMembershipReplaces(t *testing.T) {
	b := newBus(t)
	mustTopic(t, b, "t", 2)
	var events []string
	old := newHandler("old", &events)
	mOld, err := b.Join(context.Background(), "g", "t", "m1", old)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		mustPublish(t, b, "t", 0, fmt.Sprint(i))
	}
	waitUntil(t, "old to handle 5 records", func() bool { return len(old.records()) == 5 })
	if err := mOld.Commit(0, 3); err != nil {
		t.Fatal(err)
	}

	// Restart with the same member id, without leaving first.
	repl := newHandler("new", &events)
	mNew, err := b.Join(context.Background(), "g", "t", "m1", repl)
	if err != nil {
		t.Fatal(err)
	}
	if old.ownedCount() != 0 || repl.ownedCount() != 2 {
		t.Fatalf("owned: old %d, new %d; want 0, 2", old.ownedCount(), repl.ownedCount())
	}
	waitUntil(t, "new to resume at the committed offset", func() bool { return len(repl.records()) == 2 })
	if got := repl.records(); got[0].Offset != 3 || got[1].Offset != 4 {
		t.Errorf("new resumed with offsets %d, %d; want 3, 4", got[0].Offset, got[1].Offset)
	}
	// The replaced membership is dead: its Leave does not touch the new one.
	if err := mOld.Commit(0, 5); err == nil {
		t.Errorf("replaced member could commit")
	}
	if err := mOld.Leave(); err != nil {
		t.Errorf("Leave of replaced member: %v", err)
	}
	if repl.ownedCount() != 2 {
		t.Errorf("new lost its partitions when the replaced member left")
	}
	if err := mNew.Leave(); err != nil {
		t.Fatal(err)
	}
	if err := mNew.Leave(); err != nil {
		t.Errorf("second Leave: %v", err)
	}
}

func TestRetention(t *testing.T) {
	b := newBus(t)
	mustTopic(t, b, "nobody", 1)
	mustTopic(t, b, "grouped", 1)
	mustTopic(t, b, "subscribed", 1)

	// Nobody reads: nothing is kept.
	for range 10 {
		mustPublish(t, b, "nobody", 0, "x")
	}
	if s, e := b.topics["nobody"].parts[0].retained(); s != 10 || e != 10 {
		t.Errorf("topic without readers retains [%d, %d), want [10, 10)", s, e)
	}

	// A group pins what it has not committed.
	var events []string
	h := newHandler("a", &events)
	m, err := b.Join(context.Background(), "g", "grouped", "a", h)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Leave()
	for range 10 {
		mustPublish(t, b, "grouped", 0, "x")
	}
	waitUntil(t, "10 records handled", func() bool { return len(h.records()) == 10 })
	if s, e := b.topics["grouped"].parts[0].retained(); s != 0 || e != 10 {
		t.Errorf("uncommitted: retains [%d, %d), want [0, 10)", s, e)
	}
	if err := m.Commit(0, 7); err != nil {
		t.Fatal(err)
	}
	if s, e := b.topics["grouped"].parts[0].retained(); s != 7 || e != 10 {
		t.Errorf("committed 7: retains [%d, %d), want [7, 10)", s, e)
	}

	// A subscriber pins what it has not read yet, then releases it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var got int
	if err := b.Subscribe(ctx, "subscribed", 0, func(bus.Record) { mu.Lock(); got++; mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		mustPublish(t, b, "subscribed", 0, "x")
	}
	waitUntil(t, "the subscriber to read everything and release it", func() bool {
		mu.Lock()
		defer mu.Unlock()
		s, e := b.topics["subscribed"].parts[0].retained()
		return got == 10 && s == 10 && e == 10
	})
}

func TestCapDropsForStuckConsumer(t *testing.T) {
	b := newBus(t, WithMaxRecords(10))
	mustTopic(t, b, "t", 1)
	var events []string
	release := make(chan struct{})
	var once sync.Once
	h := newHandler("a", &events)
	h.handle = func(ctx context.Context, r bus.Record) {
		once.Do(func() {
			select {
			case <-release:
			case <-ctx.Done():
			}
		})
	}
	m, err := b.Join(context.Background(), "g", "t", "a", h)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Leave()
	// Publish never waits for the stuck handler.
	for i := range 1000 {
		mustPublish(t, b, "t", 0, fmt.Sprint(i))
	}
	if s, e := b.topics["t"].parts[0].retained(); e-s > 10 || e != 1000 {
		t.Errorf("retains [%d, %d), want at most 10 records ending at 1000", s, e)
	}
	close(release)
	waitUntil(t, "the handler to reach the newest record", func() bool {
		recs := h.records()
		return len(recs) > 0 && recs[len(recs)-1].Offset == 999
	})
}

func TestSubscriberDoesNotBlockPublish(t *testing.T) {
	b := newBus(t, WithMaxRecords(100))
	mustTopic(t, b, "t", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := b.Subscribe(ctx, "t", 0, func(bus.Record) { <-ctx.Done() }); err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		mustPublish(t, b, "t", 0, "x")
	}
	if s, e := b.topics["t"].parts[0].retained(); e-s > 100 {
		t.Errorf("retains %d records, cap is 100", e-s)
	}
}

func TestPublishCopies(t *testing.T) {
	b := newBus(t)
	mustTopic(t, b, "t", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan bus.Record, 1)
	if err := b.Subscribe(ctx, "t", 0, func(r bus.Record) { got <- r }); err != nil {
		t.Fatal(err)
	}
	buf := []byte("hello")
	if err := b.Publish(ctx, "t", 0, buf, buf); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XXXXX")
	if r := <-got; string(r.Value) != "hello" || string(r.Key) != "hello" {
		t.Errorf("record changed with the caller's buffer: key %q value %q", r.Key, r.Value)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	b := New()
	mustTopic(t, b, "t", 4)
	var events []string
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, id := range []string{"a", "b", "c"} {
		if _, err := b.Join(ctx, "g", "t", id, newHandler(id, &events)); err != nil {
			t.Fatal(err)
		}
	}
	subCtx, subCancel := context.WithCancel(context.Background())
	for p := range int32(4) {
		if err := b.Subscribe(subCtx, "t", p, func(bus.Record) {}); err != nil {
			t.Fatal(err)
		}
		mustPublish(t, b, "t", p, "x")
	}
	// Subscriptions end with their ctx, before Close.
	subCancel()
	waitUntil(t, "subscriber goroutines to end", func() bool {
		for _, p := range b.topics["t"].parts {
			p.mu.Lock()
			n := len(p.subs)
			p.mu.Unlock()
			if n > 0 {
				return false
			}
		}
		return true
	})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	cancel() // the members' Join ctx: their watches must not outlive Close for long
	waitUntil(t, "goroutines to return to the baseline", func() bool { return runtime.NumGoroutine() <= before })
}
