package ingress

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

func receiptRec(user, session, conv string, read bool, seq uint64) *parleyv1.IngressRecord {
	rec := &parleyv1.IngressRecord{Origin: &parleyv1.Origin{UserId: user, SessionId: session}, ConversationId: conv}
	if read {
		rec.Op = &parleyv1.IngressRecord_Read{Read: &parleyv1.Read{ConversationId: conv, Seq: seq}}
	} else {
		rec.Op = &parleyv1.IngressRecord_Ack{Ack: &parleyv1.Ack{ConversationId: conv, Seq: seq}}
	}
	return rec
}

// TestClientReceiptsMergeAndPublishTogether: receipts wait for the flush,
// one session's receipts of one kind in one conversation collapse to the
// highest seq, other kinds, sessions and conversations stay apart, and an
// error reply reaches every merged receipt's callback.
func TestClientReceiptsMergeAndPublishTogether(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, tap := newClientBus(t, ctx)
	c := NewClient(b, "gateway-0", "in")
	var acks [3]counter
	c.Receipt(receiptRec("alice", "s1", "dm:alice:bob", false, 5), acks[0].cb)
	c.Receipt(receiptRec("alice", "s1", "dm:alice:bob", false, 9), acks[1].cb)
	c.Receipt(receiptRec("alice", "s1", "dm:alice:bob", false, 7), acks[2].cb) // lower: merged, 9 stays
	c.Receipt(receiptRec("alice", "s1", "dm:alice:bob", true, 4), nil)
	c.Receipt(receiptRec("alice", "s2", "dm:alice:bob", false, 3), nil)
	c.Receipt(receiptRec("alice", "s1", "dm:alice:carol", false, 2), nil)
	if n := c.QueuedReceipts(); n != 4 {
		t.Fatalf("queued receipts %d, want 4 (one per session, kind and conversation)", n)
	}
	if n := len(tap.all()); n != 0 {
		t.Fatalf("%d records published before the flush, want 0", n)
	}

	go c.Run(ctx)
	waitFor(t, "four receipts published", func() bool { return len(tap.all()) == 4 })
	if c.QueuedReceipts() != 0 {
		t.Fatalf("queued receipts %d after the flush", c.QueuedReceipts())
	}
	var ackID uint64
	for _, r := range tap.all() {
		in := &parleyv1.IngressRecord{}
		if err := proto.Unmarshal(r.Value, in); err != nil {
			t.Fatal(err)
		}
		if in.GetOrigin().GetSessionId() == "s1" && in.GetConversationId() == "dm:alice:bob" && in.GetAck() != nil {
			if got := in.GetAck().GetSeq(); got != 9 {
				t.Errorf("merged ack seq %d, want 9 (the highest)", got)
			}
			ackID = in.GetOrigin().GetRequestId()
		}
	}
	if ackID == 0 {
		t.Fatal("the merged ack of s1 was not published")
	}
	c.HandleReply(&parleyv1.Reply{RequestId: ackID, Error: &parleyv1.Error{Code: wire.CodeNotMember, Message: "not a member"}})
	for i := range acks {
		if acks[i].n.Load() != 1 || acks[i].reply().GetError().GetCode() != wire.CodeNotMember {
			t.Errorf("callback %d of the merged ack: %d calls, reply %v; want one not_member", i, acks[i].n.Load(), acks[i].reply())
		}
	}
}

// TestClientReceiptFullQueueFlushesEarly: a full queue does not wait for the
// window.
func TestClientReceiptFullQueueFlushesEarly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, tap := newClientBus(t, ctx)
	c := NewClient(b, "gateway-0", "in")
	for i := range maxQueuedReceipts {
		c.Receipt(receiptRec("alice", "s", fmt.Sprintf("dm:alice:u%d", i), false, 1), nil)
	}
	if n := c.QueuedReceipts(); n != maxQueuedReceipts {
		t.Fatalf("queued %d, want %d", n, maxQueuedReceipts)
	}
	select {
	case <-c.receipts.full:
		c.receipts.full <- struct{}{} // put the signal back for Run
	default:
		t.Fatal("a full queue did not signal the flusher")
	}
	go c.Run(ctx)
	waitFor(t, "the full queue published", func() bool { return len(tap.all()) == maxQueuedReceipts })
}
