package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/runtime/client"
)

// FanoutOptions configures the fanout scenario.
type FanoutOptions struct {
	Options
	// Groups and Members per group (defaults 1 and 500, the group cap).
	Groups, Members int
	// Rate is the total target sends per second over all groups (default
	// 100, i.e. 50,000 deliveries/s at 500 members). The members of a group
	// take turns sending, so no user nears the per-user send limit.
	Rate float64
	// MaxInFlight bounds concurrent unanswered sends (default 1024).
	MaxInFlight int
}

// fanMsg tracks one sent message until every other member has it.
type fanMsg struct {
	sent time.Time
	got  atomic.Int64
}

// Fanout creates G groups of M members, connects every member and sends at
// Rate for Duration; each message's deliveries to the other M-1 members are
// timed, and so is the last one (send→last member).
func Fanout(ctx context.Context, t *Target, o FanoutOptions) (*Result, error) {
	if o.Groups <= 0 {
		o.Groups = 1
	}
	if o.Members <= 1 {
		o.Members = 500
	}
	if o.Rate <= 0 {
		o.Rate = 100
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 1024
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
	r := newResult("fanout", t)
	r.Params["groups"], r.Params["members"], r.Params["rate_per_sec"], r.Params["duration"] = o.Groups, o.Members, o.Rate, o.Duration.String()

	run := runID()
	n := o.Groups * o.Members
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("bf%s-%d-%d", run, i/o.Members, i%o.Members)
	}
	var (
		msgs      sync.Map // key -> *fanMsg
		each      = NewHistogram()
		last      = NewHistogram()
		delivered atomic.Int64
		complete  atomic.Int64
		foreign   atomic.Int64
		self      = make([]atomic.Pointer[string], n)
	)
	expect := int64(o.Members - 1)
	onEvent := func(i int, ev client.Event) {
		me, ok := ev.(client.MessageEvent)
		if !ok {
			return
		}
		if id := self[i].Load(); id == nil || me.Message.GetSenderId() == *id {
			return
		}
		sent, key, ok := parseBench(me.Message.GetText())
		if !ok {
			foreign.Add(1) // member-added events and the like
			return
		}
		now := time.Now()
		each.Record(now.Sub(sent))
		delivered.Add(1)
		if v, ok := msgs.Load(key); ok {
			if v.(*fanMsg).got.Add(1) == expect {
				last.Record(now.Sub(sent))
				complete.Add(1)
				msgs.Delete(key)
			}
		}
	}

	// Groups first, so a member connected afterwards knows its group from
	// the baseline sync. Creating them needs the user ids up front, which
	// only minted tokens give (file tokens reveal theirs at Welcome).
	if t.Tokens == nil {
		return nil, fmt.Errorf("fanout needs --secret-dir (user ids must be known before connecting)")
	}
	convs := make([]string, o.Groups)
	setupStart := time.Now()
	for g := range o.Groups {
		owner := ids[g*o.Members]
		tok, err := t.Token(owner, tokenTTL)
		if err != nil {
			return nil, err
		}
		conv, err := client.NewREST(t.URL, tok).CreateGroup(ctx, "bench "+run, ids[g*o.Members+1:(g+1)*o.Members])
		if err != nil {
			return nil, fmt.Errorf("create group %d: %w", g, err)
		}
		convs[g] = conv
	}
	users, err := connectUsers(ctx, t, ids, self, onEvent, nil)
	if err != nil {
		return nil, err
	}
	defer closeUsers(users)
	r.Figures["setup_seconds"] = round3(time.Since(setupStart).Seconds())

	s := newSender(o.MaxInFlight)
	cpu := sampleCPU(o.Procs)
	start := time.Now()
	stop := progress(ctx, o.Progress, start, func() string {
		return fmt.Sprintf("fanout: sent %d ok, deliveries %d, complete %d, errors %d, skipped %d",
			s.ok.Load(), delivered.Load(), complete.Load(), s.errs.total(), s.skipped.Load())
	})
	sendCtx, cancel := context.WithTimeout(ctx, o.Duration)
	due := pacer(sendCtx, o.Rate, func(seq int64) {
		g := int(seq % int64(o.Groups))
		// Rotate the sender within the group: member (seq/G) mod M.
		m := int((seq / int64(o.Groups)) % int64(o.Members))
		now := time.Now()
		msgs.Store(seq, &fanMsg{sent: now})
		s.send(ctx, users[g*o.Members+m].c, convs[g], benchText(now, seq), now)
	})
	cancel()
	sendDur := time.Since(start)
	s.wg.Wait()
	cpu.into(r, "sends", s.ok.Load())
	waitFor(ctx, 15*time.Second, func() bool { return complete.Load() >= s.ok.Load() })
	stop()

	r.Figures["sends_due"] = float64(due)
	r.Figures["sends_ok"] = float64(s.ok.Load())
	r.Figures["sends_skipped"] = float64(s.skipped.Load())
	r.Figures["deliveries"] = float64(delivered.Load())
	r.Figures["deliveries_expected"] = float64(s.ok.Load() * expect)
	r.Figures["messages_fully_delivered"] = float64(complete.Load())
	r.Figures["sends_per_sec"] = rate(s.ok.Load(), sendDur)
	r.Figures["deliveries_per_sec"] = rate(delivered.Load(), sendDur)
	r.Latency["send_to_each_member"] = each.Summary()
	r.Latency["send_to_last_member"] = last.Summary()
	r.Latency["send_to_send_ok"] = s.sendOkHi.Summary()
	s.errs.into(r.Errors)
	if n := foreign.Load(); n > 0 {
		r.Figures["non_bench_messages"] = float64(n)
	}
	if t.Embedded != nil {
		r.Notes = append(r.Notes, "all members are SDK clients in the server's process, competing with it for CPU")
	}
	return r, nil
}
