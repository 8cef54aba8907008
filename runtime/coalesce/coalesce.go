// Package coalesce runs the requests of concurrent callers together (group
// commit): while one batch is in flight, the requests that arrive meanwhile
// wait, and go out in the next batch, all of them in one call. A lone caller
// runs at once (no timer, no added latency); under load the number of
// batches follows the round trips of the backend, not the requests.
//
// The batches are run by the callers themselves: the first becomes the
// leader, runs everything queued, and when its own request is done hands the
// lead to the oldest waiting caller, so no goroutine outlives its caller and
// nothing needs stopping. Parley uses it for Kafka produce requests
// (bus.Coalescer) and session-registry lookups (chat.Router), whose
// per-request cost dominated the distributed mode's CPU (issue 11).
package coalesce

import (
	"context"
	"sync"
)

// Batcher runs batches of In with one call of its function. It is safe for
// concurrent use.
type Batcher[In, Out any] struct {
	run func(ctx context.Context, ins []In) []Out

	mu     sync.Mutex
	queue  []*call[In, Out]
	leader bool // a caller is running a batch
}

type call[In, Out any] struct {
	in   In
	out  Out
	done chan struct{} // closed when out is set
	lead chan struct{} // closed when this caller must take the lead
}

// New returns a batcher whose batches run fn. fn gets the requests of one
// batch in arrival order and must return one result per request, in the same
// order. It runs on one caller's goroutine, with that caller's context
// stripped of its cancellation (one caller giving up must not fail the
// others' requests): fn bounds its own time.
func New[In, Out any](fn func(ctx context.Context, ins []In) []Out) *Batcher[In, Out] {
	return &Batcher[In, Out]{run: fn}
}

// Do runs in, together with the requests of concurrent callers, and returns
// its result. It returns only once in has run.
func (b *Batcher[In, Out]) Do(ctx context.Context, in In) Out {
	me := &call[In, Out]{in: in, done: make(chan struct{}), lead: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, me)
	if b.leader {
		b.mu.Unlock()
		select {
		case <-me.done:
			return me.out
		case <-me.lead:
		}
	} else {
		b.leader = true
		b.mu.Unlock()
	}
	b.lead(context.WithoutCancel(ctx), me)
	return me.out
}

// lead runs the queued batches until me is done, then hands the lead to the
// oldest waiting caller, or gives it up when none waits.
func (b *Batcher[In, Out]) lead(ctx context.Context, me *call[In, Out]) {
	for {
		b.mu.Lock()
		batch := b.queue
		b.queue = nil
		b.mu.Unlock()
		b.runBatch(ctx, batch)
		select {
		case <-me.done:
		default:
			continue // me arrived after this batch was taken
		}
		b.mu.Lock()
		if len(b.queue) == 0 {
			b.leader = false
			b.mu.Unlock()
			return
		}
		next := b.queue[0]
		b.mu.Unlock()
		close(next.lead)
		return
	}
}

func (b *Batcher[In, Out]) runBatch(ctx context.Context, batch []*call[In, Out]) {
	if len(batch) == 0 {
		return
	}
	ins := make([]In, len(batch))
	for i, c := range batch {
		ins[i] = c.in
	}
	outs := b.run(ctx, ins)
	for i, c := range batch {
		if i < len(outs) {
			c.out = outs[i]
		}
		close(c.done)
	}
}

// Waiting returns the number of requests queued behind the running batch.
func (b *Batcher[In, Out]) Waiting() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.leader {
		return 0
	}
	return len(b.queue)
}
