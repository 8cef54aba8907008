package bus

import (
	"context"
	"sync"
)

// Coalescer publishes the messages of concurrent callers together: while one
// PublishAll is in flight, the messages of the callers that arrive meanwhile
// wait, and go out in the next PublishAll, all of them at once. A lone caller
// publishes at once (no timer, no added latency); under load the number of
// produce requests follows the round trips, not the messages (group commit).
// Why: Kafka's per-request cost dominated the fleet's CPU at low rates, and
// a synchronous produce drains its partition at once instead of lingering,
// so concurrent Publish calls each made a request of their own (issue 11).
//
// The publishing is done by the callers themselves: the first becomes the
// leader, publishes everything queued, and when its own messages are done
// hands the lead to a waiting caller, so no goroutine outlives its caller.
// It is safe for concurrent use.
type Coalescer struct {
	b Bus

	mu     sync.Mutex
	queue  []*coalesced
	leader bool // a caller is publishing
}

// coalesced is one caller's messages.
type coalesced struct {
	msgs []Message
	errs []error
	done chan struct{} // closed when msgs are published or failed
	lead chan struct{} // closed when this caller must take the lead
}

// NewCoalescer returns a coalescer publishing to b.
func NewCoalescer(b Bus) *Coalescer { return &Coalescer{b: b} }

// Publish publishes msgs, together with those of concurrent callers, and
// returns as Bus.PublishAll does: nil when all were accepted, else one error
// per message. A batch is bounded by its callers' contexts only through the
// bus's own publish timeout: one caller's cancellation does not fail the
// others' messages, and Publish returns once its messages' outcome is known.
func (c *Coalescer) Publish(ctx context.Context, msgs []Message) []error {
	if len(msgs) == 0 {
		return nil
	}
	me := &coalesced{msgs: msgs, done: make(chan struct{}), lead: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, me)
	if c.leader {
		c.mu.Unlock()
		select {
		case <-me.done:
			return me.errs
		case <-me.lead:
		}
	} else {
		c.leader = true
		c.mu.Unlock()
	}
	c.lead(context.WithoutCancel(ctx), me)
	return me.errs
}

// lead publishes queued batches until me is done, then hands the lead to the
// oldest waiting caller, or gives it up when none waits.
func (c *Coalescer) lead(ctx context.Context, me *coalesced) {
	for {
		c.mu.Lock()
		batch := c.queue
		c.queue = nil
		c.mu.Unlock()
		c.publish(ctx, batch)
		select {
		case <-me.done:
		default:
			continue // me was queued after this batch was taken
		}
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.leader = false
			c.mu.Unlock()
			return
		}
		next := c.queue[0]
		c.mu.Unlock()
		close(next.lead)
		return
	}
}

// publish sends every message of batch in one PublishAll and completes each
// caller.
func (c *Coalescer) publish(ctx context.Context, batch []*coalesced) {
	if len(batch) == 0 {
		return
	}
	var all []Message
	if len(batch) == 1 {
		all = batch[0].msgs
	} else {
		for _, w := range batch {
			all = append(all, w.msgs...)
		}
	}
	errs := c.b.PublishAll(ctx, all)
	at := 0
	for _, w := range batch {
		if errs != nil {
			for i, err := range errs[at : at+len(w.msgs)] {
				if err != nil {
					if w.errs == nil {
						w.errs = make([]error, len(w.msgs))
					}
					w.errs[i] = err
				}
			}
		}
		at += len(w.msgs)
		close(w.done)
	}
}
