package bus

import (
	"context"

	"github.com/parleychat/parley/runtime/coalesce"
)

// Coalescer publishes the messages of concurrent callers together, in one
// PublishAll per batch (package coalesce: a lone caller publishes at once;
// callers arriving while a publish is in flight go together in the next).
// Why: Kafka's per-request cost dominated the fleet's CPU at low rates, and
// a synchronous produce drains its partition at once instead of lingering,
// so concurrent Publish calls each made a request of their own (issue 11).
// It is safe for concurrent use.
type Coalescer struct {
	batch *coalesce.Batcher[[]Message, []error]
}

// NewCoalescer returns a coalescer publishing to b.
func NewCoalescer(b Bus) *Coalescer {
	return &Coalescer{batch: coalesce.New(func(ctx context.Context, calls [][]Message) [][]error {
		if len(calls) == 1 {
			return [][]error{b.PublishAll(ctx, calls[0])}
		}
		var all []Message
		for _, msgs := range calls {
			all = append(all, msgs...)
		}
		errs := b.PublishAll(ctx, all)
		outs := make([][]error, len(calls))
		if errs == nil {
			return outs
		}
		at := 0
		for i, msgs := range calls {
			for j, err := range errs[at : at+len(msgs)] {
				if err != nil {
					if outs[i] == nil {
						outs[i] = make([]error, len(msgs))
					}
					outs[i][j] = err
				}
			}
			at += len(msgs)
		}
		return outs
	})}
}

// Publish publishes msgs, together with those of concurrent callers, and
// returns as Bus.PublishAll does: nil when all were accepted, else one error
// per message. One caller's cancellation does not fail the others' messages
// (the bus's publish timeout bounds a batch); Publish returns once its
// messages' outcome is known.
func (c *Coalescer) Publish(ctx context.Context, msgs []Message) []error {
	if len(msgs) == 0 {
		return nil
	}
	return c.batch.Do(ctx, msgs)
}
