package ingress

import (
	"context"
	"sync"
	"time"

	"github.com/parleychat/parley/runtime/bus"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// Receipts (acks and reads sent over WebSocket) are not answered on success
// and move forward-only pointers, so a few tens of milliseconds of delay cost
// a user nothing, while publishing each one alone costs a full round of the
// bus (a produce, a fetch on each side, and the sequencer's reply) per
// receipt: in a DM every message is acknowledged once, which doubled the
// requests one send costs Kafka (issue 11). The gateway therefore queues
// them and publishes every ReceiptWindow, all at once so that the producer
// puts them in one request, keeping per session, conversation and kind only
// the highest seq.
const (
	// ReceiptWindow is how long a receipt may wait before it is published.
	ReceiptWindow = 50 * time.Millisecond
	// maxQueuedReceipts starts a publish early once that many distinct
	// receipts wait, bounding the memory a storm of receipts holds.
	maxQueuedReceipts = 4096
)

// queuedReceiptKey identifies receipts that supersede each other: one session's
// receipts of one kind in one conversation.
type queuedReceiptKey struct {
	session, conv string
	read          bool
}

// queuedReceipt is the highest receipt of its key so far and the callbacks
// of every receipt merged into it.
type queuedReceipt struct {
	rec *parleyv1.IngressRecord
	cbs []func(*parleyv1.Reply)
}

// receiptQueue holds the receipts waiting for the next flush.
type receiptQueue struct {
	mu   sync.Mutex
	m    map[queuedReceiptKey]*queuedReceipt
	full chan struct{} // signalled (never blocking) when m reaches maxQueuedReceipts
}

// Receipt queues rec, an ack or a read, to be published within
// ReceiptWindow (by Run), merged with the same session's receipts of the
// same kind in the same conversation: only the highest seq is published, and
// cb is called with its reply (an empty reply on success, an error reply
// otherwise, as Do). Records of other operations go through Do at once.
// Receipt never blocks on the bus.
func (c *Client) Receipt(rec *parleyv1.IngressRecord, cb func(*parleyv1.Reply)) {
	var seq uint64
	var read bool
	switch op := rec.Op.(type) {
	case *parleyv1.IngressRecord_Ack:
		seq = op.Ack.GetSeq()
	case *parleyv1.IngressRecord_Read:
		seq, read = op.Read.GetSeq(), true
	default:
		ctx, cancel := context.WithTimeout(context.Background(), DefaultRequestTimeout)
		defer cancel()
		c.Do(ctx, rec, cb)
		return
	}
	k := queuedReceiptKey{session: rec.GetOrigin().GetSessionId(), conv: rec.GetConversationId(), read: read}
	q := &c.receipts
	q.mu.Lock()
	if q.m == nil {
		q.m = make(map[queuedReceiptKey]*queuedReceipt)
	}
	qr := q.m[k]
	if qr == nil {
		qr = &queuedReceipt{rec: rec}
		q.m[k] = qr
	} else if seq > receiptSeq(qr.rec) {
		qr.rec = rec
	}
	if cb != nil {
		qr.cbs = append(qr.cbs, cb)
	}
	full := len(q.m) >= maxQueuedReceipts
	q.mu.Unlock()
	if full {
		select {
		case q.full <- struct{}{}:
		default:
		}
	}
}

func receiptSeq(rec *parleyv1.IngressRecord) uint64 {
	if a := rec.GetAck(); a != nil {
		return a.GetSeq()
	}
	return rec.GetRead().GetSeq()
}

// flushReceipts publishes every queued receipt in one PublishAll (one
// produce request) and returns when all are published or failed.
func (c *Client) flushReceipts(ctx context.Context) {
	q := &c.receipts
	q.mu.Lock()
	batch := q.m
	q.m = nil
	q.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	msgs := make([]bus.Message, 0, len(batch))
	ids := make([]uint64, 0, len(batch))
	for _, qr := range batch {
		cbs := qr.cbs
		msg, ok := c.register(ctx, qr.rec, func(rep *parleyv1.Reply) {
			for _, cb := range cbs {
				cb(rep)
			}
		})
		if ok {
			msgs = append(msgs, msg)
			ids = append(ids, qr.rec.Origin.RequestId)
		}
	}
	for i, err := range c.out.Publish(ctx, msgs) {
		if err != nil {
			c.publishFailed(ids[i], err)
		}
	}
}

// QueuedReceipts returns the number of receipts waiting to be published.
func (c *Client) QueuedReceipts() int {
	c.receipts.mu.Lock()
	defer c.receipts.mu.Unlock()
	return len(c.receipts.m)
}
