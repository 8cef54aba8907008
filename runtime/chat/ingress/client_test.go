package ingress

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/bus"
	busmem "github.com/parleychat/parley/runtime/bus/memory"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// ingressTap captures the records published to an ingress topic.
type ingressTap struct {
	mu   sync.Mutex
	recs []bus.Record
}

func (tap *ingressTap) all() []bus.Record {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return append([]bus.Record(nil), tap.recs...)
}

func newClientBus(t *testing.T, ctx context.Context) (*busmem.Bus, *ingressTap) {
	b := busmem.New()
	t.Cleanup(func() { _ = b.Close() })
	if err := b.CreateTopic(ctx, bus.Topic{Name: "in", Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	tap := &ingressTap{}
	for p := range int32(4) {
		if err := b.Subscribe(ctx, "in", p, func(r bus.Record) {
			tap.mu.Lock()
			tap.recs = append(tap.recs, r)
			tap.mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	return b, tap
}

// counter records the replies a callback got.
type counter struct {
	n    atomic.Int32
	mu   sync.Mutex
	last *parleyv1.Reply
}

func (c *counter) cb(rep *parleyv1.Reply) {
	c.mu.Lock()
	c.last = rep
	c.mu.Unlock()
	c.n.Add(1)
}

func (c *counter) reply() *parleyv1.Reply {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

func TestClientMatchesReplies(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, tap := newClientBus(t, ctx)
	c := NewClient(b, "gateway-3", "in")
	var got counter
	c.Do(ctx, sendRec("alice", "dm:alice:bob", "m", "hi"), got.cb)
	waitFor(t, "record published", func() bool { return len(tap.all()) == 1 })
	r := tap.all()[0]
	in := &parleyv1.IngressRecord{}
	if err := proto.Unmarshal(r.Value, in); err != nil {
		t.Fatal(err)
	}
	if string(r.Key) != "dm:alice:bob" || r.Partition != bus.PartitionFor([]byte("dm:alice:bob"), 4) {
		t.Fatalf("key %q partition %d", r.Key, r.Partition)
	}
	o := in.GetOrigin()
	if o.GetGatewayId() != "gateway-3" || o.GetRequestId() == 0 || o.GetUserId() != "alice" || in.GetDeadline() <= in.GetSentAt() {
		t.Fatalf("record %v", in)
	}
	if c.Pending() != 1 {
		t.Fatalf("pending %d", c.Pending())
	}
	c.HandleReply(&parleyv1.Reply{RequestId: o.GetRequestId(), SendOk: &parleyv1.SendOk{Seq: 9}})
	c.HandleReply(&parleyv1.Reply{RequestId: o.GetRequestId(), SendOk: &parleyv1.SendOk{Seq: 10}}) // duplicate: dropped
	if got.n.Load() != 1 || got.reply().GetSendOk().GetSeq() != 9 || c.Pending() != 0 {
		t.Fatalf("callback calls %d, reply %v", got.n.Load(), got.reply())
	}

	// create_group has no conversation id yet: keyed by the creator.
	c.Do(ctx, &parleyv1.IngressRecord{Origin: origin("carol"), Op: &parleyv1.IngressRecord_CreateGroup{CreateGroup: &parleyv1.CreateGroup{}}}, func(*parleyv1.Reply) {})
	waitFor(t, "create_group published", func() bool { return len(tap.all()) == 2 })
	if r := tap.all()[1]; string(r.Key) != "carol" {
		t.Fatalf("create_group key %q", r.Key)
	}
}

func TestClientPublishFailureIsUnavailable(t *testing.T) {
	ctx := context.Background()
	b, _ := newClientBus(t, ctx)
	c := NewClient(b, "gateway-0", "no-such-topic")
	var got counter
	c.Do(ctx, sendRec("alice", "dm:alice:bob", "m", "hi"), got.cb)
	if got.n.Load() != 1 {
		t.Fatalf("callback calls %d", got.n.Load())
	}
	if e := got.reply().GetError(); e.GetCode() != wire.CodeUnavailable || e.GetRetryAfterMs() != 1000 {
		t.Fatalf("reply %v", got.reply())
	}
	if c.Pending() != 0 {
		t.Fatal("failed request left pending")
	}
}

func TestClientTimeout(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, _ := newClientBus(t, ctx)
	c := NewClient(b, "gateway-0", "in")
	go c.Run(ctx)
	var got counter
	rec := sendRec("alice", "dm:alice:bob", "m", "hi")
	rec.Deadline = time.Now().Add(30 * time.Millisecond).UnixMilli()
	c.Do(ctx, rec, got.cb)
	waitFor(t, "timeout", func() bool { return got.n.Load() == 1 })
	if got.reply().GetError().GetCode() != wire.CodeTimeout {
		t.Fatalf("reply %v", got.reply())
	}
	// The late reply is dropped: the callback ran exactly once.
	c.HandleReply(&parleyv1.Reply{RequestId: rec.GetOrigin().GetRequestId()})
	if got.n.Load() != 1 || c.Pending() != 0 {
		t.Fatalf("callback calls %d after a late reply", got.n.Load())
	}

	// Call without Run enforces the deadline itself.
	c2 := NewClient(b, "gateway-0", "in")
	cctx, ccancel := context.WithTimeout(ctx, 40*time.Millisecond)
	defer ccancel()
	rep, err := c2.Call(cctx, sendRec("alice", "dm:alice:bob", "m2", "hi"))
	if code(err) != wire.CodeTimeout && err != context.DeadlineExceeded {
		t.Fatalf("Call past its deadline: %v %v", rep, err)
	}
	if c2.Pending() != 0 {
		t.Fatal("Call left its request pending")
	}
}
