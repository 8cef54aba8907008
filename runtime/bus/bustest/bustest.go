// Package bustest is the conformance suite every bus.Bus backend passes.
//
// It uses only the bus.Bus interface and waits on conditions with a deadline
// generous enough for a real broker (Kafka rebalances take seconds). Each test
// creates its own topics and groups with unique names, so the suite can run
// against a shared broker. Expectations beyond the interface's doc comments:
//   - CreateTopic returns once the topic can be published to and consumed;
//   - Subscribe returns once its start position is fixed, so records
//     published after it returns are delivered;
//   - Commit returns once the offset is committed (a later owner sees it);
//   - Leave returns after Revoked was called for the member's partitions;
//   - no callback runs after Close returns, and calls afterwards return an
//     error matching bus.ErrClosed.
package bustest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/bus"
)

// WaitFor bounds every wait of the suite.
const WaitFor = 30 * time.Second

// Run runs the suite. newBus returns a fresh bus and registers its Close with
// t.Cleanup.
func Run(t *testing.T, newBus func(t *testing.T) bus.Bus) {
	t.Run("KeyedRecordsStayInOrder", func(t *testing.T) { testKeyedOrder(t, newBus(t)) })
	t.Run("PublishToMissingPartition", func(t *testing.T) { testMissingPartition(t, newBus(t)) })
	t.Run("PublishAll", func(t *testing.T) { testPublishAll(t, newBus(t)) })
	t.Run("SubscribeFromNow", func(t *testing.T) { testSubscribeFromNow(t, newBus(t)) })
	t.Run("SingleMemberGetsAllPartitions", func(t *testing.T) { testSingleMember(t, newBus(t)) })
	t.Run("SecondMemberRebalances", func(t *testing.T) { testSecondMember(t, newBus(t)) })
	t.Run("LeaveResumesAtCommittedOffset", func(t *testing.T) { testLeaveResumes(t, newBus(t)) })
	t.Run("JoinContextEndLeaves", func(t *testing.T) { testJoinContextEnd(t, newBus(t)) })
	t.Run("Lag", func(t *testing.T) { testLag(t, newBus(t)) })
	t.Run("Closed", func(t *testing.T) { testClosed(t, newBus(t)) })
}

// name returns a topic or group name unique to this test and run, made of
// the characters Kafka allows.
func name(t *testing.T, kind string) string {
	r := strings.NewReplacer("/", ".", " ", "_")
	return fmt.Sprintf("bustest.%s.%s.%d", r.Replace(t.Name()), kind, time.Now().UnixNano())
}

func createTopic(t *testing.T, b bus.Bus, partitions int32) string {
	t.Helper()
	topic := name(t, "topic")
	if err := b.CreateTopic(context.Background(), bus.Topic{Name: topic, Partitions: partitions}); err != nil {
		t.Fatalf("CreateTopic(%s, %d): %v", topic, partitions, err)
	}
	// Idempotent.
	if err := b.CreateTopic(context.Background(), bus.Topic{Name: topic, Partitions: partitions}); err != nil {
		t.Fatalf("CreateTopic(%s) again: %v", topic, err)
	}
	if n, err := b.Partitions(topic); err != nil || n != partitions {
		t.Fatalf("Partitions(%s) = %d, %v; want %d", topic, n, err, partitions)
	}
	return topic
}

func publish(t *testing.T, b bus.Bus, topic string, partition int32, key, value string) {
	t.Helper()
	if err := b.Publish(context.Background(), topic, partition, []byte(key), []byte(value)); err != nil {
		t.Fatalf("Publish(%s, %d, %q): %v", topic, partition, key, err)
	}
}

// waitUntil polls cond until it holds or WaitFor passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", WaitFor, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// collector records what Subscribe delivers.
type collector struct {
	mu   sync.Mutex
	recs []bus.Record
}

func (c *collector) add(r bus.Record) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recs = append(c.recs, r)
}

func (c *collector) snapshot() []bus.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.recs)
}

func (c *collector) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.recs)
}

func subscribe(t *testing.T, ctx context.Context, b bus.Bus, topic string, partition int32) *collector {
	t.Helper()
	c := new(collector)
	if err := b.Subscribe(ctx, topic, partition, c.add); err != nil {
		t.Fatalf("Subscribe(%s, %d): %v", topic, partition, err)
	}
	return c
}

// subscribeAll subscribes to every partition of topic until the test ends.
func subscribeAll(t *testing.T, b bus.Bus, topic string, partitions int32) (context.Context, []*collector) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var subs []*collector
	for p := range partitions {
		subs = append(subs, subscribe(t, ctx, b, topic, p))
	}
	return ctx, subs
}

func testKeyedOrder(t *testing.T, b bus.Bus) {
	const partitions, keys, perKey = 4, 8, 25
	topic := createTopic(t, b, partitions)
	_, subs := subscribeAll(t, b, topic, partitions)
	for i := range perKey {
		for k := range keys {
			publish(t, b, topic, -1, fmt.Sprintf("conv-%d", k), strconv.Itoa(i))
		}
	}
	waitUntil(t, "every keyed record", func() bool {
		n := 0
		for _, s := range subs {
			n += s.len()
		}
		return n >= keys*perKey
	})

	next := make(map[string]int) // key -> next expected value
	for p, s := range subs {
		last := int64(-1)
		for _, r := range s.snapshot() {
			key := string(r.Key)
			if want := bus.PartitionFor(r.Key, partitions); r.Partition != int32(p) || want != int32(p) {
				t.Errorf("record %q of key %s: partition %d from subscription %d, PartitionFor says %d", r.Value, key, r.Partition, p, want)
			}
			if r.Topic != topic {
				t.Errorf("record topic %q, want %q", r.Topic, topic)
			}
			if r.Offset <= last {
				t.Errorf("partition %d: offset %d after %d", p, r.Offset, last)
			}
			last = r.Offset
			if got := string(r.Value); got != strconv.Itoa(next[key]) {
				t.Errorf("key %s: got value %s, want %d (out of order or duplicated)", key, got, next[key])
			}
			next[key]++
		}
	}
	for k := range keys {
		if key := fmt.Sprintf("conv-%d", k); next[key] != perKey {
			t.Errorf("key %s: got %d records, want %d", key, next[key], perKey)
		}
	}
}

func testMissingPartition(t *testing.T, b bus.Bus) {
	topic := createTopic(t, b, 2)
	if err := b.Publish(context.Background(), topic, 2, []byte("k"), []byte("v")); err == nil {
		t.Errorf("Publish to partition 2 of a 2-partition topic succeeded")
	}
}

// testPublishAll publishes keyed and explicitly placed records together,
// one of them to a partition that does not exist: that one fails alone, the
// others arrive where Publish would put them, in order within a partition.
func testPublishAll(t *testing.T, b bus.Bus) {
	const partitions = 3
	topic := createTopic(t, b, partitions)
	ctx, subs := subscribeAll(t, b, topic, partitions)
	if errs := b.PublishAll(ctx, nil); errs != nil {
		t.Errorf("PublishAll of nothing: %v", errs)
	}
	msgs := []bus.Message{
		{Topic: topic, Partition: 1, Value: []byte("p1-a")},
		{Topic: topic, Partition: -1, Key: []byte("conv-x"), Value: []byte("x-0")},
		{Topic: topic, Partition: partitions, Value: []byte("nowhere")},
		{Topic: topic, Partition: 1, Value: []byte("p1-b")},
		{Topic: topic, Partition: -1, Key: []byte("conv-x"), Value: []byte("x-1")},
	}
	errs := b.PublishAll(ctx, msgs)
	if len(errs) != len(msgs) {
		t.Fatalf("PublishAll with one bad partition: %d errors, want one per message (%d)", len(errs), len(msgs))
	}
	for i, err := range errs {
		if (i == 2) != (err != nil) {
			t.Errorf("message %d (%s): error %v", i, msgs[i].Value, err)
		}
	}
	xp := bus.PartitionFor([]byte("conv-x"), partitions)
	want := map[int32][]string{1: {"p1-a", "p1-b"}}
	want[xp] = append(want[xp], "x-0", "x-1")
	waitUntil(t, "the published records", func() bool {
		for p, vs := range want {
			if subs[p].len() < len(vs) {
				return false
			}
		}
		return true
	})
	for p := range int32(partitions) {
		var got []string
		for _, r := range subs[p].snapshot() {
			got = append(got, string(r.Value))
		}
		// x-* and p1-* may interleave when they share a partition; each
		// pair keeps its order.
		for _, pair := range [][2]string{{"p1-a", "p1-b"}, {"x-0", "x-1"}} {
			i, j := slices.Index(got, pair[0]), slices.Index(got, pair[1])
			if (i >= 0) != (j >= 0) || i > j {
				t.Errorf("partition %d: got %v, want %s before %s", p, got, pair[0], pair[1])
			}
		}
		if len(got) != len(want[p]) {
			t.Errorf("partition %d: got %v, want %v in some order", p, got, want[p])
		}
	}
}

func testSubscribeFromNow(t *testing.T, b bus.Bus) {
	topic := createTopic(t, b, 2)
	publish(t, b, topic, 0, "k", "before")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	first := subscribe(t, ctx, b, topic, 0)
	for i := range 5 {
		publish(t, b, topic, 0, "k", fmt.Sprintf("after-%d", i))
	}
	publish(t, b, topic, 1, "k", "other-partition")
	waitUntil(t, "5 records after subscribing", func() bool { return first.len() >= 5 })
	recs := first.snapshot()
	for i, r := range recs {
		if want := fmt.Sprintf("after-%d", i); string(r.Value) != want || r.Partition != 0 {
			t.Errorf("record %d: %q on partition %d, want %q on 0", i, r.Value, r.Partition, want)
		}
		if i > 0 && r.Offset != recs[i-1].Offset+1 {
			t.Errorf("record %d: offset %d after %d", i, r.Offset, recs[i-1].Offset)
		}
	}

	// A subscription whose ctx ended gets nothing published afterwards.
	ctx2, cancel2 := context.WithCancel(context.Background())
	t.Cleanup(cancel2)
	second := subscribe(t, ctx2, b, topic, 0)
	cancel()
	publish(t, b, topic, 0, "k", "late")
	waitUntil(t, "the second subscription to get the late record", func() bool { return second.len() >= 1 })
	if got := string(second.snapshot()[0].Value); got != "late" {
		t.Errorf("second subscription got %q first, want late", got)
	}
	for _, r := range first.snapshot() {
		if string(r.Value) == "late" {
			t.Errorf("a subscription got a record published after its ctx ended")
		}
	}
}

// tracker checks, across the members of one group, that a partition has at
// most one owner at a time and that Handle runs only on owned partitions.
type tracker struct {
	t     *testing.T
	mu    sync.Mutex
	owner map[int32]*member
}

func newTracker(t *testing.T) *tracker {
	return &tracker{t: t, owner: make(map[int32]*member)}
}

// member is a GroupHandler that records what it gets.
type member struct {
	name string
	tr   *tracker
	m    bus.Membership

	mu      sync.Mutex
	owned   map[int32]bool
	last    map[int32]int64 // offset last handled since the partition was assigned
	handled map[int32][]bus.Record
	revoked int
}

func (tr *tracker) join(t *testing.T, ctx context.Context, b bus.Bus, group, topic, id string) *member {
	t.Helper()
	h := &member{name: id, tr: tr, owned: make(map[int32]bool), last: make(map[int32]int64), handled: make(map[int32][]bus.Record)}
	m, err := b.Join(ctx, group, topic, id, h)
	if err != nil {
		t.Fatalf("Join(%s, %s, %s): %v", group, topic, id, err)
	}
	h.m = m
	t.Cleanup(func() {
		if err := m.Leave(); err != nil && !errors.Is(err, bus.ErrClosed) {
			t.Errorf("Leave(%s): %v", id, err)
		}
	})
	return h
}

func (h *member) Assigned(ps []int32) {
	h.tr.mu.Lock()
	for _, p := range ps {
		if o := h.tr.owner[p]; o != nil && o != h {
			h.tr.t.Errorf("partition %d assigned to %s while %s owns it", p, h.name, o.name)
		}
		h.tr.owner[p] = h
	}
	h.tr.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range ps {
		h.owned[p] = true
		delete(h.last, p)
	}
}

func (h *member) Revoked(ps []int32) {
	h.tr.mu.Lock()
	for _, p := range ps {
		if o := h.tr.owner[p]; o != h {
			h.tr.t.Errorf("partition %d revoked from %s, which does not own it", p, h.name)
		} else {
			delete(h.tr.owner, p)
		}
	}
	h.tr.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range ps {
		delete(h.owned, p)
	}
	h.revoked++
}

func (h *member) Handle(ctx context.Context, r bus.Record) {
	h.tr.mu.Lock()
	if o := h.tr.owner[r.Partition]; o != h {
		h.tr.t.Errorf("%s handled offset %d of partition %d it does not own", h.name, r.Offset, r.Partition)
	}
	h.tr.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if ctx == nil {
		h.tr.t.Errorf("Handle got a nil context")
	}
	// Within one assignment offsets only go up; a new assignment may go back
	// to the committed offset.
	if last, ok := h.last[r.Partition]; ok && r.Offset <= last {
		h.tr.t.Errorf("%s: partition %d offset %d after %d", h.name, r.Partition, r.Offset, last)
	}
	h.last[r.Partition] = r.Offset
	h.handled[r.Partition] = append(h.handled[r.Partition], r)
}

// ownedSet returns the partitions h owns, sorted.
func (h *member) ownedSet() []int32 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ps []int32
	for p := range h.owned {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

func (h *member) records(p int32) []bus.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.handled[p])
}

func allPartitions(n int32) []int32 {
	ps := make([]int32, n)
	for i := range ps {
		ps[i] = int32(i)
	}
	return ps
}

// split reports whether the members own disjoint non-empty sets covering
// every partition.
func split(n int32, ms ...*member) bool {
	var all []int32
	for _, m := range ms {
		ps := m.ownedSet()
		if len(ps) == 0 {
			return false
		}
		all = append(all, ps...)
	}
	slices.Sort(all)
	return slices.Equal(all, allPartitions(n))
}

// hasValues reports whether h handled every value in want on p.
func hasValues(h *member, p int32, want ...string) bool {
	got := make(map[string]bool)
	for _, r := range h.records(p) {
		got[string(r.Value)] = true
	}
	for _, w := range want {
		if !got[w] {
			return false
		}
	}
	return true
}

func values(p int32, from, to int) []string {
	var vs []string
	for i := from; i < to; i++ {
		vs = append(vs, fmt.Sprintf("p%d-%d", p, i))
	}
	return vs
}

func publishEach(t *testing.T, b bus.Bus, topic string, partitions int32, from, to int) {
	t.Helper()
	for p := range partitions {
		for _, v := range values(p, from, to) {
			publish(t, b, topic, p, "k", v)
		}
	}
}

func testSingleMember(t *testing.T, b bus.Bus) {
	const partitions = 3
	topic, group := createTopic(t, b, partitions), name(t, "group")
	tr := newTracker(t)
	a := tr.join(t, context.Background(), b, group, topic, "a")
	waitUntil(t, "a to own every partition", func() bool {
		return slices.Equal(a.ownedSet(), allPartitions(partitions))
	})
	publishEach(t, b, topic, partitions, 0, 10)
	for p := range int32(partitions) {
		waitUntil(t, fmt.Sprintf("a to handle partition %d", p), func() bool {
			return hasValues(a, p, values(p, 0, 10)...)
		})
		var got []string
		for _, r := range a.records(p) {
			got = append(got, string(r.Value))
		}
		if want := values(p, 0, 10); !slices.Equal(got, want) {
			t.Errorf("partition %d: handled %v, want %v", p, got, want)
		}
	}
}

func testSecondMember(t *testing.T, b bus.Bus) {
	const partitions = 4
	topic, group := createTopic(t, b, partitions), name(t, "group")
	tr := newTracker(t)
	a := tr.join(t, context.Background(), b, group, topic, "a")
	waitUntil(t, "a to own every partition", func() bool {
		return slices.Equal(a.ownedSet(), allPartitions(partitions))
	})
	c := tr.join(t, context.Background(), b, group, topic, "b")
	waitUntil(t, "a and b to split the partitions", func() bool { return split(partitions, a, c) })
	if a.revokedCount() == 0 {
		t.Errorf("a lost partitions without Revoked")
	}
	publishEach(t, b, topic, partitions, 0, 10)
	for p := range int32(partitions) {
		waitUntil(t, fmt.Sprintf("partition %d to be handled", p), func() bool {
			return hasValues(a, p, values(p, 0, 10)...) || hasValues(c, p, values(p, 0, 10)...)
		})
	}
}

func (h *member) revokedCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.revoked
}

func testLeaveResumes(t *testing.T, b bus.Bus) {
	const partitions = 2
	topic, group := createTopic(t, b, partitions), name(t, "group")
	tr := newTracker(t)
	a := tr.join(t, context.Background(), b, group, topic, "a")
	waitUntil(t, "a to own every partition", func() bool {
		return slices.Equal(a.ownedSet(), allPartitions(partitions))
	})
	c := tr.join(t, context.Background(), b, group, topic, "b")
	waitUntil(t, "a and b to split the partitions", func() bool { return split(partitions, a, c) })
	moved := c.ownedSet()

	publishEach(t, b, topic, partitions, 0, 10)
	resume := make(map[int32]int64) // partition -> offset of its record 5
	for _, p := range moved {
		waitUntil(t, fmt.Sprintf("b to handle partition %d", p), func() bool {
			return hasValues(c, p, values(p, 0, 10)...)
		})
		recs := c.records(p)
		if len(recs) != 10 {
			t.Fatalf("b handled %d records of partition %d, want 10", len(recs), p)
		}
		resume[p] = recs[5].Offset
		if err := c.m.Commit(p, recs[3].Offset+1); err != nil {
			t.Fatalf("Commit(%d, %d): %v", p, recs[3].Offset+1, err)
		}
		if err := c.m.Commit(p, recs[5].Offset); err != nil {
			t.Fatalf("Commit(%d, %d): %v", p, recs[5].Offset, err)
		}
		// Lower than committed: ignored.
		if err := c.m.Commit(p, recs[1].Offset); err != nil {
			t.Fatalf("Commit(%d, %d) lower: %v", p, recs[1].Offset, err)
		}
	}
	if err := c.m.Leave(); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if got := c.ownedSet(); len(got) != 0 {
		t.Errorf("b still owns %v after Leave returned", got)
	}
	waitUntil(t, "a to own every partition again", func() bool {
		return slices.Equal(a.ownedSet(), allPartitions(partitions))
	})
	for _, p := range moved {
		waitUntil(t, fmt.Sprintf("a to handle the uncommitted records of partition %d", p), func() bool {
			return hasValues(a, p, values(p, 5, 10)...)
		})
		recs := a.records(p)
		if recs[0].Offset != resume[p] {
			t.Errorf("partition %d: a resumed at offset %d (%s), want the committed offset %d", p, recs[0].Offset, recs[0].Value, resume[p])
		}
		for _, r := range recs {
			if r.Offset < resume[p] {
				t.Errorf("partition %d: committed record %s (offset %d) was redelivered", p, r.Value, r.Offset)
			}
		}
	}
}

// testLag: a group's lag counts every record it has not committed — all of
// them before it ever committed, then what is after its commits — and a
// missing topic is an error.
func testLag(t *testing.T, b bus.Bus) {
	lg, ok := b.(bus.Lagger)
	if !ok {
		t.Fatalf("%T does not implement bus.Lagger", b)
	}
	const partitions = 2
	topic, group := createTopic(t, b, partitions), name(t, "group")
	ctx := context.Background()
	lag := func() int64 {
		t.Helper()
		n, err := lg.Lag(ctx, group, topic)
		if err != nil {
			t.Fatalf("Lag: %v", err)
		}
		return n
	}
	if n := lag(); n != 0 {
		t.Errorf("lag of an empty topic = %d, want 0", n)
	}
	a := newTracker(t).join(t, ctx, b, group, topic, "a")
	waitUntil(t, "a to own every partition", func() bool {
		return slices.Equal(a.ownedSet(), allPartitions(partitions))
	})
	publishEach(t, b, topic, partitions, 0, 3)
	for p := range int32(partitions) {
		waitUntil(t, fmt.Sprintf("a to handle partition %d", p), func() bool { return hasValues(a, p, values(p, 0, 3)...) })
	}
	if n := lag(); n != 2*3 {
		t.Errorf("lag before the group committed = %d, want %d", n, 2*3)
	}
	for p := range int32(partitions) {
		if err := a.m.Commit(p, a.records(p)[1].Offset+1); err != nil {
			t.Fatalf("Commit: %v", err)
		}
	}
	waitUntil(t, "lag 2 after committing two of three records per partition", func() bool { return lag() == 2 })
	for p := range int32(partitions) {
		if err := a.m.Commit(p, a.records(p)[2].Offset+1); err != nil {
			t.Fatalf("Commit: %v", err)
		}
	}
	waitUntil(t, "lag 0 after committing everything", func() bool { return lag() == 0 })
	if _, err := lg.Lag(ctx, group, name(t, "missing")); err == nil {
		t.Error("Lag of a missing topic succeeded")
	}
}

func testJoinContextEnd(t *testing.T, b bus.Bus) {
	const partitions = 2
	topic, group := createTopic(t, b, partitions), name(t, "group")
	tr := newTracker(t)
	a := tr.join(t, context.Background(), b, group, topic, "a")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := tr.join(t, ctx, b, group, topic, "b")
	waitUntil(t, "a and b to split the partitions", func() bool { return split(partitions, a, c) })
	cancel()
	waitUntil(t, "b to leave once its ctx ended", func() bool {
		return len(c.ownedSet()) == 0 && slices.Equal(a.ownedSet(), allPartitions(partitions))
	})
	publishEach(t, b, topic, partitions, 0, 3)
	for p := range int32(partitions) {
		waitUntil(t, fmt.Sprintf("a to handle partition %d", p), func() bool {
			return hasValues(a, p, values(p, 0, 3)...)
		})
	}
}

func testClosed(t *testing.T, b bus.Bus) {
	topic, group := createTopic(t, b, 1), name(t, "group")
	tr := newTracker(t)
	a := tr.join(t, context.Background(), b, group, topic, "a")
	waitUntil(t, "a to own the partition", func() bool { return len(a.ownedSet()) == 1 })
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := context.Background()
	checks := map[string]error{
		"CreateTopic": b.CreateTopic(ctx, bus.Topic{Name: name(t, "topic"), Partitions: 1}),
		"Publish":     b.Publish(ctx, topic, 0, nil, []byte("v")),
		"Subscribe":   b.Subscribe(ctx, topic, 0, func(bus.Record) {}),
		"Commit":      a.m.Commit(0, 0),
	}
	_, checks["Join"] = b.Join(ctx, group, topic, "b", tr.newIdle())
	_, checks["Partitions"] = b.Partitions(topic)
	for op, err := range checks {
		if !errors.Is(err, bus.ErrClosed) {
			t.Errorf("%s after Close: %v, want bus.ErrClosed", op, err)
		}
	}
	if err := a.m.Leave(); err != nil && !errors.Is(err, bus.ErrClosed) {
		t.Errorf("Leave after Close: %v", err)
	}
}

// newIdle returns a handler for calls expected to fail.
func (tr *tracker) newIdle() *member {
	return &member{name: "idle", tr: tr, owned: make(map[int32]bool), last: make(map[int32]int64), handled: make(map[int32][]bus.Record)}
}
