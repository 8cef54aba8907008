package client

import (
	"context"
	"errors"
	"time"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// emit queues an event that is not a message.
func (c *Client) emit(ev Event) {
	c.mu.Lock()
	c.enqueueLocked(ev)
	c.mu.Unlock()
}

// enqueueLocked appends ev to the queue (see Events for what is dropped when
// it is full) and makes sure a dispatcher runs.
func (c *Client) enqueueLocked(ev Event) {
	if c.final || c.closing {
		return
	}
	if droppable(ev) && len(c.queue) >= c.cap {
		c.stats.DroppedEvents++
		return
	}
	c.queue = append(c.queue, ev)
	if _, ok := ev.(ClosedEvent); ok {
		c.final = true
	}
	if !c.dispatching {
		c.dispatching = true
		c.wg.Add(1)
		go c.dispatch()
	}
}

// roomLocked is how many more messages the queue takes.
func (c *Client) roomLocked() int {
	if n := c.cap - len(c.queue); n > 0 {
		return n
	}
	return 0
}

// dispatch hands queued events to the application in order. It runs only
// while the queue is non-empty.
func (c *Client) dispatch() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		if len(c.queue) == 0 || c.ctx.Err() != nil {
			c.dispatching = false
			c.mu.Unlock()
			return
		}
		ev := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		c.mu.Unlock()
		select {
		case c.roomCh <- struct{}{}:
		default:
		}
		if !c.deliver(ev) {
			c.mu.Lock()
			c.dispatching = false
			c.mu.Unlock()
			return
		}
		if _, ok := ev.(ClosedEvent); ok {
			c.mu.Lock()
			c.delivered = true
			c.dispatching = false
			if c.events != nil {
				close(c.events)
			}
			c.mu.Unlock()
			return
		}
	}
}

func (c *Client) deliver(ev Event) bool {
	if c.opts.OnEvent != nil {
		c.opts.OnEvent(ev)
		return true
	}
	select {
	case c.events <- ev:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// onMessage takes a pushed message (or one this client sent).
func (c *Client) onMessage(m *parleyv1.Message) {
	if m.GetConversationId() == "" || m.GetSeq() == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.holding {
		c.held = append(c.held, m)
		return
	}
	c.pushLocked(m)
}

func (c *Client) pushLocked(m *parleyv1.Message) {
	out, dup := c.tr.push(m, c.roomLocked())
	if dup {
		c.stats.Duplicates++
	}
	c.emitMessagesLocked(out, false)
	c.kickFillLocked(true)
}

func (c *Client) emitMessagesLocked(msgs []*parleyv1.Message, pulled bool) {
	if c.final || c.closing {
		return // the client has stopped: nothing follows the ClosedEvent
	}
	for _, m := range msgs {
		c.queue = append(c.queue, MessageEvent{Message: m, Pulled: pulled})
		c.ackLaterLocked(m.GetConversationId())
	}
	if pulled {
		c.stats.Pulled += uint64(len(msgs))
	}
	if len(msgs) > 0 && !c.dispatching {
		c.dispatching = true
		c.wg.Add(1)
		go c.dispatch()
	}
}

// kickFillLocked starts the filler when a conversation lags its head;
// grace when a push revealed the gap (see fill), not after a sync.
func (c *Client) kickFillLocked(grace bool) {
	if c.filling || c.closing || c.stopped || c.holding || !c.tr.behind() {
		return
	}
	c.filling = true
	c.wg.Add(1)
	go c.fill(grace)
}

// fill pulls the messages conversations are missing, oldest first, in pages
// no larger than the room left in the queue. It runs while there is work.
//
// With grace it first waits gapGrace: a gap is most often a push still in
// flight (the reply to this client's own send, or a later push, overtook
// it), and the pushes that arrive meanwhile close it without a History
// request.
func (c *Client) fill(grace bool) {
	defer c.wg.Done()
	stalls := map[string]int{}
	failures := 0
	stop := func() {
		c.mu.Lock()
		c.filling = false
		c.mu.Unlock()
	}
	if grace && !sleepCtx(c.runCtx, gapGrace) {
		stop()
		return
	}
	for {
		c.mu.Lock()
		released, conv, after, head, ok := c.tr.fillWork(c.roomLocked())
		c.emitMessagesLocked(released, false)
		room := c.roomLocked()
		if !ok && !(c.tr.behind() && room == 0) {
			c.filling = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		if room == 0 {
			if !c.waitRoom() {
				stop()
				return
			}
			continue
		}
		limit := min(uint64(room), wire.MaxPageSize, head-after)
		msgs, hasMore, joined, err := c.pull(c.runCtx, conv, after, uint32(limit))
		if err != nil {
			var we *wire.Error
			switch {
			case c.runCtx.Err() != nil:
				stop()
				return
			case errors.As(err, &we) && permanentPullError(we.Code):
				c.log.Warn("cannot pull missing messages; skipping them", "conversation", conv, "err", err)
				c.mu.Lock()
				c.tr.giveUp(conv)
				c.mu.Unlock()
			case errors.Is(err, ErrConnectionLost):
				// The next History waits for the reconnect.
			default:
				failures++
				d := c.bo.Delay(failures)
				if we != nil && we.RetryAfterMs > 0 {
					d = time.Duration(we.RetryAfterMs) * time.Millisecond
				}
				c.log.Debug("pull failed; retrying", "conversation", conv, "err", err, "in", d)
				if !sleepCtx(c.runCtx, d) {
					stop()
					return
				}
			}
			continue
		}
		failures = 0
		c.mu.Lock()
		room = c.roomLocked()
		out, dups := c.tr.page(conv, after, msgs, hasMore, joined, room)
		c.stats.Duplicates += uint64(dups)
		c.emitMessagesLocked(out, true)
		// A stall: nothing moved the cursor since the pull started, although
		// there was room. (Pushes that moved it meanwhile are progress.)
		stalled := room > 0 && c.tr.state(conv).cursor == after
		if stalled {
			stalls[conv]++
			if stalls[conv] >= maxFillStalls {
				c.log.Warn("the server shows nothing above the cursor; skipping", "conversation", conv, "cursor", after)
				c.emitMessagesLocked(c.tr.skip(conv, c.roomLocked()), true)
				delete(stalls, conv)
				stalled = false
			}
		} else {
			delete(stalls, conv)
		}
		n := stalls[conv]
		c.mu.Unlock()
		if stalled && !sleepCtx(c.runCtx, c.bo.Delay(n)) {
			stop()
			return
		}
	}
}

// permanentPullError: retrying the pull cannot help.
func permanentPullError(code string) bool {
	switch code {
	case wire.CodeNotMember, wire.CodeNotFound, wire.CodeForbidden, wire.CodeInvalid:
		return true
	}
	return false
}

func (c *Client) waitRoom() bool {
	select {
	case <-c.roomCh:
		return true
	case <-c.runCtx.Done():
		return false
	}
}

// ackLaterLocked schedules a cumulative delivered ack for conv.
func (c *Client) ackLaterLocked(conv string) {
	if c.opts.NoAutoAck {
		return
	}
	c.ackDirty[conv] = struct{}{}
	if c.ackTimer == nil && !c.closing && c.cur != nil {
		c.ackTimer = time.AfterFunc(ackDelay, c.flushAcks)
	}
}

func (c *Client) flushAcks() {
	c.mu.Lock()
	c.ackTimer = nil
	cn := c.cur
	if c.closing || cn == nil {
		c.mu.Unlock() // kept dirty: acked after the reconnect
		return
	}
	var acks []*parleyv1.Ack
	for conv := range c.ackDirty {
		if seq, ok := c.tr.toAck(conv); ok {
			acks = append(acks, &parleyv1.Ack{ConversationId: conv, Seq: seq})
		}
		delete(c.ackDirty, conv)
	}
	c.wg.Add(1)
	c.mu.Unlock()
	defer c.wg.Done()
	for i, a := range acks {
		err := cn.write(&parleyv1.ClientFrame{Id: c.nextID.Add(1), Body: &parleyv1.ClientFrame_Ack{Ack: a}})
		c.mu.Lock()
		if err != nil {
			for _, rest := range acks[i:] {
				c.ackDirty[rest.ConversationId] = struct{}{}
			}
			c.mu.Unlock()
			return
		}
		c.tr.acked(a.ConversationId, a.Seq)
		c.mu.Unlock()
	}
}

// baseline runs once at Dial: the messages after resumed cursors, then the
// inbox heads as the starting point of every other conversation. Pushes that
// arrive meanwhile wait, so none is taken for a gap below the baseline.
func (c *Client) baseline(ctx context.Context) error {
	c.mu.Lock()
	var resumed []*parleyv1.Cursor
	if len(c.opts.Cursors) > 0 {
		resumed = c.tr.cursors()
	}
	c.mu.Unlock()
	if err := c.syncCursors(ctx, resumed); err != nil {
		return err
	}
	inbox, err := c.Sync(ctx, nil)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range inbox.GetConversations() {
		if c.tr.known(st.GetConversationId()) {
			c.tr.observeHead(st.GetConversationId(), st.GetHeadSeq())
		} else {
			c.tr.setCursor(st.GetConversationId(), st.GetHeadSeq())
		}
	}
	held := c.held
	c.held, c.holding = nil, false
	for _, m := range held {
		c.pushLocked(m)
	}
	c.kickFillLocked(false)
	return nil
}

// resync runs after each reconnect: the first page after every cursor
// (Sync), then the inbox to find conversations joined while disconnected,
// whose messages are all new; the filler pulls the rest. It also renews the
// presence subscription and the acks the old connection did not carry.
func (c *Client) resync() {
	defer c.wg.Done()
	ctx := c.runCtx
	c.mu.Lock()
	cursors := c.tr.cursors()
	subs := c.presenceSub
	c.mu.Unlock()
	if len(subs) > 0 {
		if err := c.SubscribePresence(ctx, subs); err != nil {
			c.log.Debug("renew presence subscription", "err", err)
		}
	}
	if err := c.syncCursors(ctx, cursors); err != nil {
		c.log.Debug("resync", "err", err)
		if ctx.Err() != nil || errors.Is(err, ErrConnectionLost) {
			return // the next connection resyncs
		}
		// Otherwise the inbox heads below still reveal every gap, and the
		// filler pulls them one conversation at a time.
	}
	inbox, err := c.Sync(ctx, nil)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.log.Debug("resync inbox", "err", err)
	} else {
		for _, st := range inbox.GetConversations() {
			id := st.GetConversationId()
			switch {
			case c.tr.known(id):
				c.tr.observeHead(id, st.GetHeadSeq())
			case st.GetJoinedSeq() > 0:
				// Joined while disconnected: everything visible is new.
				c.tr.setCursor(id, st.GetJoinedSeq()-1)
				c.tr.observeHead(id, st.GetHeadSeq())
			}
		}
	}
	c.kickFillLocked(false)
	if len(c.ackDirty) > 0 && c.ackTimer == nil && !c.closing && !c.opts.NoAutoAck {
		c.ackTimer = time.AfterFunc(ackDelay, c.flushAcks)
	}
}

// syncChunk bounds the cursors of one Sync (the server takes at most 1000).
const syncChunk = 500

// syncCursors syncs from cursors, in chunks, applying each result.
func (c *Client) syncCursors(ctx context.Context, cursors []*parleyv1.Cursor) error {
	for len(cursors) > 0 {
		n := min(len(cursors), syncChunk)
		res, err := c.Sync(ctx, cursors[:n])
		if err != nil {
			return err
		}
		c.applySync(cursors[:n], res)
		cursors = cursors[n:]
	}
	return nil
}

// applySync takes a Sync result for the cursors sent: each state's first
// page is applied after the cursor sent for it, and its head is recorded so
// the filler follows has_more.
func (c *Client) applySync(sent []*parleyv1.Cursor, res *parleyv1.SyncResult) {
	after := make(map[string]uint64, len(sent))
	for _, cu := range sent {
		after[cu.GetConversationId()] = cu.GetSeq()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range res.GetConversations() {
		id := st.GetConversationId()
		a, ok := after[id]
		if !ok {
			// Not asked for: treat as discovered, like the inbox.
			if c.tr.known(id) {
				c.tr.observeHead(id, st.GetHeadSeq())
			} else if st.GetJoinedSeq() > 0 {
				c.tr.setCursor(id, st.GetJoinedSeq()-1)
				c.tr.observeHead(id, st.GetHeadSeq())
			}
			continue
		}
		c.tr.observeHead(id, st.GetHeadSeq())
		out, dups := c.tr.page(id, a, st.GetMessages(), st.GetHasMore(), st.GetJoinedSeq(), c.roomLocked())
		c.stats.Duplicates += uint64(dups)
		c.emitMessagesLocked(out, true)
	}
	c.kickFillLocked(false)
}
