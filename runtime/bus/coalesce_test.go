package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// gatedBus records PublishAll calls; the first blocks until release is
// closed, and messages whose value is "bad" fail.
type gatedBus struct {
	Bus
	release chan struct{}

	mu    sync.Mutex
	calls [][]Message
}

func (g *gatedBus) PublishAll(_ context.Context, msgs []Message) []error {
	g.mu.Lock()
	first := len(g.calls) == 0
	g.calls = append(g.calls, msgs)
	g.mu.Unlock()
	if first {
		<-g.release
	}
	var errs []error
	for i, m := range msgs {
		if string(m.Value) == "bad" {
			if errs == nil {
				errs = make([]error, len(msgs))
			}
			errs[i] = errors.New("refused")
		}
	}
	return errs
}

func TestCoalescerBatchesWaitingCallers(t *testing.T) {
	g := &gatedBus{release: make(chan struct{})}
	c := NewCoalescer(g)
	const waiters = 9
	results := make([][]error, waiters+1)
	var wg sync.WaitGroup
	publish := func(i int, vals ...string) {
		defer wg.Done()
		var msgs []Message
		for _, v := range vals {
			msgs = append(msgs, Message{Topic: "t", Partition: 0, Value: []byte(v)})
		}
		results[i] = c.Publish(context.Background(), msgs)
	}
	wg.Add(1)
	go publish(0, "first")
	waitFor(t, func() bool { g.mu.Lock(); defer g.mu.Unlock(); return len(g.calls) == 1 })
	for i := 1; i <= waiters; i++ {
		wg.Add(1)
		if i == 5 {
			go publish(i, "ok", "bad", "ok")
		} else {
			go publish(i, fmt.Sprintf("w%d", i))
		}
	}
	waitFor(t, func() bool { return c.batch.Waiting() == waiters })
	close(g.release)
	wg.Wait()

	if len(g.calls) != 2 {
		t.Fatalf("PublishAll called %d times, want 2 (the first caller, then the %d waiters together)", len(g.calls), waiters)
	}
	if n := len(g.calls[1]); n != waiters+2 {
		t.Errorf("second PublishAll carried %d messages, want %d", n, waiters+2)
	}
	for i, errs := range results {
		switch {
		case i == 5:
			if len(errs) != 3 || errs[0] != nil || errs[1] == nil || errs[2] != nil {
				t.Errorf("caller 5 (ok, bad, ok): errors %v, want only the second", errs)
			}
		case errs != nil:
			t.Errorf("caller %d: errors %v, want none", i, errs)
		}
	}
	// The lead was given up: a lone caller publishes at once.
	if errs := c.Publish(context.Background(), []Message{{Topic: "t", Value: []byte("later")}}); errs != nil || len(g.calls) != 3 {
		t.Errorf("a later lone publish: errors %v, %d calls, want none and 3", errs, len(g.calls))
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
