package chat

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/bus"
	busmem "github.com/parleychat/parley/runtime/bus/memory"
	"github.com/parleychat/parley/runtime/presence"
	presmem "github.com/parleychat/parley/runtime/presence/memory"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// downRegistry is the real memory registry with Sessions failing, as when
// Redis is unreachable.
type downRegistry struct{ presence.Registry }

func (downRegistry) Sessions(context.Context, []string) (map[string][]presence.Session, error) {
	return nil, errors.New("registry unreachable")
}

// deliverTap records the DeliverRecords of each deliver partition.
type deliverTap struct {
	mu   sync.Mutex
	recs map[int32][]*parleyv1.DeliverRecord
}

func tapDeliver(t *testing.T, ctx context.Context, b bus.Bus, topic string, n int32) *deliverTap {
	tap := &deliverTap{recs: make(map[int32][]*parleyv1.DeliverRecord)}
	for p := range n {
		err := b.Subscribe(ctx, topic, p, func(r bus.Record) {
			dr := &parleyv1.DeliverRecord{}
			if err := proto.Unmarshal(r.Value, dr); err != nil {
				t.Errorf("undecodable deliver record: %v", err)
			}
			tap.mu.Lock()
			tap.recs[p] = append(tap.recs[p], dr)
			tap.mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return tap
}

func (tap *deliverTap) get(p int32) []*parleyv1.DeliverRecord {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return slices.Clone(tap.recs[p])
}

func TestRouterOneRecordPerGateway(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := busmem.New()
	defer b.Close()
	const topic = "parley.test.deliver"
	if err := b.CreateTopic(ctx, bus.Topic{Name: topic, Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	reg := presmem.New()
	defer reg.Close()
	exp := time.Now().Add(time.Hour)
	for _, s := range []presence.Session{
		{UserID: "alice", DeviceID: "phone", SessionID: "a1", GatewayID: "gateway-0", Expires: exp},
		{UserID: "alice", DeviceID: "laptop", SessionID: "a2", GatewayID: "gateway-0", Expires: exp},
		{UserID: "bob", DeviceID: "phone", SessionID: "b1", GatewayID: "gateway-1", Expires: exp},
		{UserID: "carol", DeviceID: "phone", SessionID: "c1", GatewayID: "gateway-0", Expires: exp},
		{UserID: "carol", DeviceID: "laptop", SessionID: "c2", GatewayID: "gateway-1", Expires: exp},
		{UserID: "eve", DeviceID: "phone", SessionID: "e1", GatewayID: "gateway-7", Expires: exp}, // no such partition
	} {
		if err := reg.Touch(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	tap := tapDeliver(t, ctx, b, topic, 3)
	r := NewRouter(b, reg, topic)
	msg := &parleyv1.Message{ConversationId: "g:1", Seq: 7, Text: "hi"}
	d := &parleyv1.Delivery{ExceptSessionId: "a1", Body: &parleyv1.Delivery_Message{Message: msg}}
	users := []string{"alice", "bob", "carol", "dave", "eve"}
	if err := r.Deliver(ctx, users, d); err != nil {
		t.Fatal(err)
	}
	// A reply to gateway-2 after the delivery: once it arrives, anything the
	// delivery sent to partition 2 would have arrived before it.
	if err := r.Reply(ctx, &parleyv1.Origin{GatewayId: "gateway-2", RequestId: 42}, &parleyv1.Reply{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "deliveries", func() bool { return len(tap.get(0)) == 1 && len(tap.get(1)) == 1 && len(tap.get(2)) == 1 })
	for p, want := range map[int32][]string{0: {"alice", "carol"}, 1: {"bob", "carol"}} {
		rec := tap.get(p)[0]
		if len(rec.GetDeliveries()) != 1 || !slices.Equal(rec.GetDeliveries()[0].GetUserIds(), want) {
			t.Fatalf("partition %d: %v, want users %v", p, rec, want)
		}
		got := rec.GetDeliveries()[0]
		if !proto.Equal(got.GetMessage(), msg) || got.GetExceptSessionId() != "a1" {
			t.Fatalf("partition %d: delivery %v", p, got)
		}
	}
	if rec := tap.get(2)[0]; len(rec.GetDeliveries()) != 0 || len(rec.GetReplies()) != 1 || rec.GetReplies()[0].GetRequestId() != 42 {
		t.Fatalf("partition 2: %v, want only the reply", rec)
	}
	if len(d.GetUserIds()) != 0 {
		t.Fatal("Deliver modified its argument")
	}

	// A batch: two deliveries to the same users and a reply to gateway-0
	// travel in one record per gateway.
	var batch Batch
	batch.Deliver(users[:2], d)
	batch.Deliver(users[:2], &parleyv1.Delivery{Body: &parleyv1.Delivery_Receipt{Receipt: &parleyv1.Receipt{Seq: 3}}})
	batch.Reply(&parleyv1.Origin{GatewayId: "gateway-0", RequestId: 43}, &parleyv1.Reply{})
	if err := r.Publish(ctx, &batch); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "batch", func() bool { return len(tap.get(0)) == 2 && len(tap.get(1)) == 2 })
	if rec := tap.get(0)[1]; len(rec.GetDeliveries()) != 2 || len(rec.GetReplies()) != 1 {
		t.Fatalf("gateway-0 batch record %v", rec)
	}

	// Registry down: every partition gets every recipient.
	dr := NewRouter(b, downRegistry{reg}, topic)
	if err := dr.Deliver(ctx, []string{"alice", "dave"}, d); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "degraded deliveries", func() bool {
		return len(tap.get(0)) == 3 && len(tap.get(1)) == 3 && len(tap.get(2)) == 2
	})
	for _, rec := range [][]*parleyv1.DeliverRecord{tap.get(0)[2:], tap.get(1)[2:], tap.get(2)[1:]} {
		if us := rec[0].GetDeliveries()[0].GetUserIds(); !slices.Equal(us, []string{"alice", "dave"}) {
			t.Fatalf("degraded delivery users %v", us)
		}
	}

	if err := r.Reply(ctx, &parleyv1.Origin{GatewayId: "nonsense", RequestId: 1}, &parleyv1.Reply{}); err == nil {
		t.Fatal("reply to an unparsable gateway id succeeded")
	}
}

func TestRouterSplitsLargeBatches(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := busmem.New()
	defer b.Close()
	const topic = "parley.test.deliver"
	if err := b.CreateTopic(ctx, bus.Topic{Name: topic, Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	reg := presmem.New()
	defer reg.Close()
	if err := reg.Touch(ctx, presence.Session{UserID: "u", SessionID: "s", GatewayID: "gateway-0", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	tap := tapDeliver(t, ctx, b, topic, 1)
	var batch Batch
	big := string(make([]byte, 4096))
	users := []string{"u"}
	const n = 300 // ~1.2 MiB
	for i := range n {
		batch.Deliver(users, &parleyv1.Delivery{Body: &parleyv1.Delivery_Message{Message: &parleyv1.Message{Seq: uint64(i + 1), Text: big}}})
	}
	if err := NewRouter(b, reg, topic).Publish(ctx, &batch); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "all deliveries", func() bool {
		total := 0
		for _, rec := range tap.get(0) {
			total += len(rec.GetDeliveries())
		}
		return total == n
	})
	recs := tap.get(0)
	if len(recs) < 3 {
		t.Fatalf("%d records for ~1.2 MiB, want the batch split at 512 KiB", len(recs))
	}
	var seq uint64
	for _, rec := range recs {
		if proto.Size(rec) > maxRecordBytes+8<<10 {
			t.Fatalf("record of %d bytes", proto.Size(rec))
		}
		for _, d := range rec.GetDeliveries() {
			seq++
			if d.GetMessage().GetSeq() != seq {
				t.Fatalf("delivery order broken at %d", seq)
			}
		}
	}
}

// countingRegistry counts Sessions calls and the users asked.
type countingRegistry struct {
	presence.Registry
	mu    sync.Mutex
	calls int
	users int
}

func (c *countingRegistry) Sessions(ctx context.Context, users []string) (map[string][]presence.Session, error) {
	c.mu.Lock()
	c.calls++
	c.users += len(users)
	c.mu.Unlock()
	return c.Registry.Sessions(ctx, users)
}

func (c *countingRegistry) asked() (calls, users int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls, c.users
}

// A group of BroadcastMinUsers users goes to every gateway partition with
// all its users and no registry lookup; one user fewer is looked up and goes
// only where its online users are. With offline push on, the broadcast
// group's offline users are still found (after publishing).
func TestRouterBroadcastsLargeGroups(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := busmem.New()
	defer b.Close()
	const topic = "parley.test.deliver"
	if err := b.CreateTopic(ctx, bus.Topic{Name: topic, Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	mem := presmem.New()
	defer mem.Close()
	reg := &countingRegistry{Registry: mem}
	users := make([]string, BroadcastMinUsers)
	for i := range users {
		users[i] = "u" + string(rune('A'+i/26)) + string(rune('a'+i%26))
	}
	// Only the first user is online, on gateway-1.
	if err := mem.Touch(ctx, presence.Session{UserID: users[0], SessionID: "s", GatewayID: "gateway-1", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	tap := tapDeliver(t, ctx, b, topic, 3)
	r := NewRouter(b, reg, topic)
	d := &parleyv1.Delivery{Body: &parleyv1.Delivery_Message{Message: &parleyv1.Message{ConversationId: "g:1", Seq: 1}}}

	if err := r.Deliver(ctx, users, d); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "broadcast", func() bool { return len(tap.get(0)) == 1 && len(tap.get(1)) == 1 && len(tap.get(2)) == 1 })
	for p := range int32(3) {
		if got := tap.get(p)[0].GetDeliveries()[0].GetUserIds(); !slices.Equal(got, users) {
			t.Fatalf("partition %d: users %v, want all %d", p, got, len(users))
		}
	}
	if calls, _ := reg.asked(); calls != 0 {
		t.Fatalf("%d registry lookups for a broadcast group, want 0", calls)
	}

	// One user fewer: looked up, only gateway-1 gets it.
	if err := r.Deliver(ctx, users[:BroadcastMinUsers-1], d); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "looked-up delivery", func() bool { return len(tap.get(1)) == 2 })
	if got := tap.get(1)[1].GetDeliveries()[0].GetUserIds(); !slices.Equal(got, users[:1]) {
		t.Fatalf("looked-up delivery to %v, want only %v", got, users[:1])
	}
	if calls, n := reg.asked(); calls != 1 || n != BroadcastMinUsers-1 {
		t.Fatalf("registry asked %d times for %d users, want once for %d", calls, n, BroadcastMinUsers-1)
	}
	if n := len(tap.get(0)) + len(tap.get(2)); n != 2 {
		t.Fatalf("partitions 0 and 2 got %d records, want only the broadcast's", n)
	}

	// Offline push on: the broadcast group's offline users are notified.
	var mu sync.Mutex
	var offline []string
	r.OnOffline(func(_ context.Context, us []string, _ *parleyv1.Delivery) {
		mu.Lock()
		offline = append(offline, us...)
		mu.Unlock()
	})
	if err := r.Deliver(ctx, users, d); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(offline, users[1:]) {
		t.Fatalf("offline users %v, want %v", offline, users[1:])
	}
}

func TestBroadcastsNeedsAsManyUsersAsPartitions(t *testing.T) {
	for _, c := range []struct {
		m    int
		n    int32
		want bool
	}{
		{BroadcastMinUsers, 1, true},
		{BroadcastMinUsers - 1, 1, false},
		{BroadcastMinUsers, BroadcastMinUsers + 1, false},
		{500, 500, true},
		{2, 1, false},
	} {
		if got := broadcasts(c.m, c.n); got != c.want {
			t.Errorf("broadcasts(%d users, %d partitions) = %v, want %v", c.m, c.n, got, c.want)
		}
	}
}
