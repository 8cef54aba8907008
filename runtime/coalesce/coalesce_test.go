package coalesce

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestEveryCallerGetsItsOwnResult: many concurrent callers, batches handed
// from leader to leader; each caller gets the result of its own request,
// every request runs exactly once, and batches hold several requests.
func TestEveryCallerGetsItsOwnResult(t *testing.T) {
	var batches, runs atomic.Int64
	b := New(func(_ context.Context, ins []int) []int {
		batches.Add(1)
		runs.Add(int64(len(ins)))
		time.Sleep(time.Millisecond) // a round trip, during which callers queue
		outs := make([]int, len(ins))
		for i, in := range ins {
			outs[i] = in * 2
		}
		return outs
	})
	const callers = 300
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got := b.Do(context.Background(), i); got != 2*i {
				t.Errorf("caller %d got %d, want %d", i, got, 2*i)
			}
		}()
	}
	wg.Wait()
	if runs.Load() != callers {
		t.Errorf("%d requests ran, want %d (each exactly once)", runs.Load(), callers)
	}
	if batches.Load() >= callers {
		t.Errorf("%d batches for %d concurrent callers: nothing was coalesced", batches.Load(), callers)
	}
	if b.Waiting() != 0 {
		t.Errorf("%d requests still waiting", b.Waiting())
	}
}

// TestCanceledCallerDoesNotFailOthers: the leader's context is cancelled;
// the batch still runs with a live context.
func TestCanceledCallerDoesNotFailOthers(t *testing.T) {
	b := New(func(ctx context.Context, ins []string) []error {
		outs := make([]error, len(ins))
		for i := range ins {
			outs[i] = ctx.Err()
		}
		return outs
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Do(ctx, "x"); err != nil {
		t.Errorf("batch ran with the caller's cancelled context: %v", err)
	}
}
