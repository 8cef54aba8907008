package ingress

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/metrics"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// DefaultRequestTimeout is the deadline of a request whose record and
// context carry none.
const DefaultRequestTimeout = 10 * time.Second

// unavailableRetryMs is the retry hint of a request that could not be published.
const unavailableRetryMs = 1000

// expireTick is how often Client.Run expires pending requests.
const expireTick = 50 * time.Millisecond

// Client is the gateway side of the ingress exchange: it publishes
// IngressRecords to the sequencers and matches the Replies that come back on
// the gateway's deliver partition (fed to HandleReply by the gateway). It is
// safe for concurrent use.
type Client struct {
	b       bus.Bus
	out     *bus.Coalescer // publishes concurrent requests together
	gateway string
	region  string // Origin.region of every record ("" = unset)
	topic   string
	m       *metrics.Metrics // nil: not observed

	next atomic.Uint64

	// pending requests by id, in shards (by id) so that the session readers
	// registering requests and the reply handler completing them do not
	// queue on one mutex.
	pending [pendingShards]pendingShard

	receipts receiptQueue // acks and reads waiting to be published (Receipt)
}

// pendingShards is the number of pending-request shards.
const pendingShards = 32

type pendingShard struct {
	mu sync.Mutex
	m  map[uint64]pendingReq
}

func (c *Client) shard(id uint64) *pendingShard { return &c.pending[id%pendingShards] }

type pendingReq struct {
	cb       func(*parleyv1.Reply)
	deadline int64 // unix ms
}

// NewClient returns a client for gateway gatewayID publishing to ingressTopic.
func NewClient(b bus.Bus, gatewayID, ingressTopic string) *Client {
	c := &Client{b: b, out: bus.NewCoalescer(b), gateway: gatewayID, topic: ingressTopic}
	c.receipts.full = make(chan struct{}, 1)
	for i := range c.pending {
		c.pending[i].m = make(map[uint64]pendingReq)
	}
	return c
}

// SetRegion makes c stamp every record with region (Origin.region), so the
// home region of a forwarded request answers it on this region's deliver
// topic; call it before c is used. Without it records carry no region and
// are answered where they are sequenced.
func (c *Client) SetRegion(region string) { c.region = region }

// ObserveWith makes c observe metrics.StageIngressPublish on m; call it
// before c is used.
func (c *Client) ObserveWith(m *metrics.Metrics) { c.m = m }

// Do publishes rec and calls cb exactly once with its outcome: the
// sequencer's Reply; Reply{error unavailable, retry_after_ms 1000} if rec
// cannot have been published (bus.ErrNotSent: safe to retry); Reply{error
// timeout} if the publish failed after the record may have reached the bus,
// or once rec's deadline passes without a reply (outcome unknown: retry with
// the same client_msg_id). A reply arriving after the timeout is dropped.
//
// Do fills rec.origin.gateway_id and request_id, sent_at (now) if zero, and
// deadline if zero (the context's deadline, else now + 10s); the caller sets
// origin user, device and session. The record is keyed by conversation_id
// (by the user id for create_group, whose conversation id the sequencer
// mints). Do blocks until the record is published, so one caller's records
// keep their order; cb may run before Do returns, on another goroutine.
// Timeouts fire only while Run is running.
func (c *Client) Do(ctx context.Context, rec *parleyv1.IngressRecord, cb func(*parleyv1.Reply)) {
	began := time.Now()
	msg, ok := c.register(ctx, rec, cb)
	if !ok {
		return
	}
	errs := c.out.Publish(ctx, []bus.Message{msg})
	c.m.ObserveStage(metrics.StageIngressPublish, time.Since(began))
	if errs != nil {
		c.publishFailed(rec.Origin.RequestId, errs[0])
	}
}

// publishFailed answers request id, whose record failed to publish with err:
// unavailable (safe to retry) only when the record cannot have reached the
// bus (bus.ErrNotSent); otherwise it may be stored and be sequenced yet, so
// the answer is timeout — retry with the same client_msg_id, which the
// sequencer deduplicates (issue 14: outcomes that never lie).
func (c *Client) publishFailed(id uint64, err error) {
	if errors.Is(err, bus.ErrNotSent) {
		c.notEnqueued(id)
		return
	}
	if cb, ok := c.take(id); ok {
		cb(&parleyv1.Reply{RequestId: id, Error: &parleyv1.Error{Code: wire.CodeTimeout, Message: publishUnknown}})
	}
}

// publishUnknown is the message of a request whose publish failed after it
// may have reached the bus.
const publishUnknown = "the request may have been enqueued (the bus did not confirm it in time); retry with the same client_msg_id"

// register completes rec (see Do), registers cb as its pending request and
// returns the message to publish; it answers cb and returns false when rec
// cannot be encoded.
func (c *Client) register(ctx context.Context, rec *parleyv1.IngressRecord, cb func(*parleyv1.Reply)) (bus.Message, bool) {
	id := c.next.Add(1)
	if rec.Origin == nil {
		rec.Origin = &parleyv1.Origin{}
	}
	rec.Origin.GatewayId = c.gateway
	rec.Origin.RequestId = id
	rec.Origin.Region = c.region
	now := time.Now()
	if rec.SentAt == 0 {
		rec.SentAt = now.UnixMilli()
	}
	if rec.Deadline == 0 {
		d := now.Add(DefaultRequestTimeout)
		if cd, ok := ctx.Deadline(); ok {
			d = cd
		}
		rec.Deadline = d.UnixMilli()
	}
	key := rec.ConversationId
	if key == "" {
		key = rec.Origin.UserId
	}
	v, err := proto.Marshal(rec)
	if err != nil {
		cb(&parleyv1.Reply{RequestId: id, Error: &parleyv1.Error{Code: wire.CodeInvalid, Message: "unencodable request"}})
		return bus.Message{}, false
	}
	// Registered before publishing: the reply may come back before Publish returns.
	sh := c.shard(id)
	sh.mu.Lock()
	sh.m[id] = pendingReq{cb: cb, deadline: rec.Deadline}
	sh.mu.Unlock()
	return bus.Message{Topic: c.topic, Partition: -1, Key: []byte(key), Value: v}, true
}

// notEnqueued answers request id, whose record could not be published,
// with unavailable (safe to retry).
func (c *Client) notEnqueued(id uint64) {
	if cb, ok := c.take(id); ok {
		cb(&parleyv1.Reply{RequestId: id, Error: &parleyv1.Error{
			Code: wire.CodeUnavailable, Message: "the request was not enqueued; retry later", RetryAfterMs: unavailableRetryMs}})
	}
}

// Call is Do that waits for the outcome. It returns the reply and, when the
// reply carries an error, that error as a *wire.Error; if ctx ends first it
// returns ctx's error (the outcome is then unknown).
func (c *Client) Call(ctx context.Context, rec *parleyv1.IngressRecord) (*parleyv1.Reply, error) {
	ch := make(chan *parleyv1.Reply, 1)
	c.Do(ctx, rec, func(rep *parleyv1.Reply) { ch <- rep })
	// Call does not rely on Run for its deadline: REST handlers may use a
	// client whose Run is not running yet.
	t := time.NewTimer(time.Until(time.UnixMilli(rec.Deadline)) + expireTick)
	defer t.Stop()
	var rep *parleyv1.Reply
	select {
	case rep = <-ch:
	case <-t.C:
		if cb, ok := c.take(rec.Origin.RequestId); ok {
			cb(timeoutReply(rec.Origin.RequestId))
		}
		rep = <-ch
	case <-ctx.Done():
		c.take(rec.Origin.RequestId)
		return nil, ctx.Err()
	}
	if e := rep.GetError(); e != nil {
		return rep, &wire.Error{Code: e.GetCode(), Message: e.GetMessage(), RetryAfterMs: e.GetRetryAfterMs()}
	}
	return rep, nil
}

// HandleReply hands a reply from the deliver partition to its waiting
// request; replies of unknown or expired requests are dropped.
func (c *Client) HandleReply(rep *parleyv1.Reply) {
	if cb, ok := c.take(rep.GetRequestId()); ok {
		cb(rep)
	}
}

// Pending returns the number of requests waiting for a reply.
func (c *Client) Pending() int {
	n := 0
	for i := range c.pending {
		sh := &c.pending[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// Run expires pending requests past their deadline with Reply{error timeout},
// on one shared ticker, and publishes queued receipts every ReceiptWindow
// (Receipt), until ctx ends; then it publishes the receipts still queued
// (bounded by DefaultRequestTimeout) and returns.
func (c *Client) Run(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.runReceipts(ctx)
	}()
	defer func() { <-done }()
	t := time.NewTicker(expireTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.expire(now.UnixMilli())
		}
	}
}

// runReceipts publishes the queued receipts every ReceiptWindow, or sooner
// when the queue is full, until ctx ends, and once more after.
func (c *Client) runReceipts(ctx context.Context) {
	t := time.NewTicker(ReceiptWindow)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultRequestTimeout)
			c.flushReceipts(fctx)
			cancel()
			return
		case <-t.C:
		case <-c.receipts.full:
		}
		fctx, cancel := context.WithTimeout(ctx, DefaultRequestTimeout)
		c.flushReceipts(fctx)
		cancel()
	}
}

func (c *Client) expire(nowMs int64) {
	var due []uint64
	var cbs []func(*parleyv1.Reply)
	for i := range c.pending {
		sh := &c.pending[i]
		sh.mu.Lock()
		for id, p := range sh.m {
			if p.deadline <= nowMs {
				due = append(due, id)
				cbs = append(cbs, p.cb)
				delete(sh.m, id)
			}
		}
		sh.mu.Unlock()
	}
	for i, cb := range cbs {
		cb(timeoutReply(due[i]))
	}
}

func (c *Client) take(id uint64) (func(*parleyv1.Reply), bool) {
	sh := c.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	p, ok := sh.m[id]
	if ok {
		delete(sh.m, id)
	}
	return p.cb, ok
}

func timeoutReply(id uint64) *parleyv1.Reply {
	return &parleyv1.Reply{RequestId: id, Error: &parleyv1.Error{
		Code: wire.CodeTimeout, Message: "the outcome is unknown; retrying is safe (a send with the same client_msg_id, any other request as it was)"}}
}
