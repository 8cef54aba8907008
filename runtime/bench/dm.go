package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/runtime/chat/rules"
	"github.com/parleychat/parley/runtime/client"
)

// DMOptions configures the dm scenario.
type DMOptions struct {
	Options
	// Pairs of users, each pair one DM conversation (default 100).
	Pairs int
	// Rate is the total target sends per second over all users (default
	// 1000). Senders take turns, so each user sends Rate/(2·Pairs) per
	// second: keep that under the server's per-user limit (20/s default).
	Rate float64
	// MaxInFlight bounds concurrent unanswered sends (default 4096).
	MaxInFlight int
	// WarmDMs sends each pair's first message (which creates the DM)
	// before the measured phase, so the figures are the steady state.
	// Creating a DM costs more than a send (in a multi-region deployment a
	// cross-region read, docs/multi-region.md) and is 1 in 2·Pairs·rate·s
	// sends otherwise, enough to move a p99.
	WarmDMs bool
}

// DM runs P pairs exchanging messages at a total rate for Duration, then
// waits up to 10 s for the last deliveries. Latency is receive time minus
// the send time carried in the text (same clock: one process).
func DM(ctx context.Context, t *Target, o DMOptions) (*Result, error) {
	if o.Pairs <= 0 {
		o.Pairs = 100
	}
	if o.Rate <= 0 {
		o.Rate = 1000
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 4096
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	r := newResult("dm", t)
	r.Params["pairs"], r.Params["rate_per_sec"], r.Params["duration"] = o.Pairs, o.Rate, o.Duration.String()

	run := runID()
	ids := make([]string, 2*o.Pairs)
	for i := range ids {
		ids[i] = fmt.Sprintf("bd%s-%d", run, i)
	}
	lat := NewHistogram()
	var delivered, foreign atomic.Int64
	self := make([]atomic.Pointer[string], len(ids))
	onEvent := func(i int, ev client.Event) {
		me, ok := ev.(client.MessageEvent)
		if !ok {
			return
		}
		if id := self[i].Load(); id == nil || me.Message.GetSenderId() == *id {
			return // own messages are echoed on send_ok; none is due before Dial returns
		}
		sent, _, ok := parseBench(me.Message.GetText())
		if !ok {
			foreign.Add(1)
			return
		}
		lat.Record(time.Since(sent))
		delivered.Add(1)
	}
	connStart := time.Now()
	users, err := connectUsers(ctx, t, ids, self, onEvent, nil)
	if err != nil {
		return nil, err
	}
	defer closeUsers(users)
	r.Figures["connect_seconds"] = round3(time.Since(connStart).Seconds())
	convs := make([]string, len(users))
	for p := range o.Pairs {
		a, b := users[2*p].id, users[2*p+1].id
		convs[2*p], convs[2*p+1] = rules.DMID(a, b), rules.DMID(a, b)
	}

	if o.WarmDMs {
		r.Params["warm_dms"] = true
		if err := warmDMs(ctx, users, convs); err != nil {
			return nil, err
		}
	}
	s := newSender(o.MaxInFlight)
	cpu := sampleCPU(o.Procs)
	start := time.Now()
	stop := progress(ctx, o.Progress, start, func() string {
		return fmt.Sprintf("dm: sent %d ok, delivered %d, errors %d, skipped %d", s.ok.Load(), delivered.Load(), s.errs.total(), s.skipped.Load())
	})
	sendCtx, cancel := context.WithTimeout(ctx, o.Duration)
	due := pacer(sendCtx, o.Rate, func(seq int64) {
		i := int(seq % int64(len(users)))
		now := time.Now()
		s.send(ctx, users[i].c, convs[i], benchText(now, seq), now)
	})
	cancel()
	sendDur := time.Since(start)
	s.wg.Wait()
	cpu.into(r, "sends", s.ok.Load())
	waitFor(ctx, 10*time.Second, func() bool { return delivered.Load() >= s.ok.Load() })
	stop()

	r.Figures["sends_due"] = float64(due)
	r.Figures["sends_ok"] = float64(s.ok.Load())
	r.Figures["sends_skipped"] = float64(s.skipped.Load())
	r.Figures["deliveries"] = float64(delivered.Load())
	r.Figures["sends_per_sec"] = rate(s.ok.Load(), sendDur)
	r.Figures["deliveries_per_sec"] = rate(delivered.Load(), sendDur)
	r.Figures["missing_deliveries"] = float64(s.ok.Load() - delivered.Load())
	r.Latency["send_to_deliver"] = lat.Summary()
	r.Latency["send_to_send_ok"] = s.sendOkHi.Summary()
	s.errs.into(r.Errors)
	if n := foreign.Load(); n > 0 {
		r.Figures["non_bench_messages"] = float64(n) // e.g. conversation events
	}
	r.Notes = append(r.Notes, "deliveries/s counts messages received by the DM peer")
	if t.Embedded != nil {
		r.Notes = append(r.Notes, "clients run in the server's process, competing with it for CPU")
	}
	return r, nil
}

// warmDMs sends one message in each pair's DM and waits for its send_ok.
func warmDMs(ctx context.Context, users []*user, convs []string) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(users))
	for i := 0; i < len(users); i += 2 {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if _, err := users[i].c.Send(sctx, convs[i], "warm-up"); err != nil {
				errs <- fmt.Errorf("warm-up send in %s: %w", convs[i], err)
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}
