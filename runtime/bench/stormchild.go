package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/runtime/chat/rules"
	"github.com/parleychat/parley/runtime/client"
)

// StormPerProcess is the default number of SDK clients in one storm child
// process: an SDK client costs far more than an idle connection, and a few
// children spread the client work over the cores.
const StormPerProcess = 5000

// StormChild is the work of one process of storm clients.
type StormChild struct {
	// N clients for the users UserPrefix<Offset>..UserPrefix<Offset+N-1>,
	// paired into DMs (Offset+2k, Offset+2k+1): N and Offset are even.
	N, Offset  int
	UserPrefix string
	// Missed is how many pulled messages a client needs after it
	// reconnected to count as re-synced (0 against an external server).
	Missed int
	// Timeout bounds the wait for every client to re-sync, from the drain
	// signal.
	Timeout time.Duration
}

// StormStats is what one process of storm clients reports. A child prints
// it as one JSON line per phase: "progress" about once a second,
// "connected" once its clients are connected and have exchanged one
// warm-up message per DM, and "synced" once every client re-synced after
// the drain or the timeout passed.
type StormStats struct {
	Phase          string           `json:"phase"`
	Connected      int64            `json:"connected"`
	Failed         int64            `json:"failed"`
	FailureReasons map[string]int64 `json:"failure_reasons,omitempty"`
	// WarmupErrors counts failed warm-up sends; Live counts warm-up
	// messages received live (one per DM when all went well).
	WarmupErrors int64 `json:"warmup_errors"`
	Live         int64 `json:"live"`
	// Reconnected counts ReconnectedEvents; Resynced the clients that
	// reconnected and pulled at least Missed messages.
	Reconnected    int64 `json:"reconnected"`
	Resynced       int64 `json:"resynced"`
	LastSyncUnixNs int64 `json:"last_sync_unix_ns"`
	MaxPulled      int64 `json:"max_pulled"`
	PulledTotal    int64 `json:"pulled_total"`
}

// RunStormChild is the body of `parley bench storm --child`: it runs the
// clients of c against t, writes StormStats lines to w, and starts waiting
// for the re-sync when a line arrives on r (the parent writes one when the
// drain has started). EOF on r before that line means the parent is gone:
// the clients are closed and an error returned.
func RunStormChild(ctx context.Context, t *Target, c StormChild, r io.Reader, w io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	drain := make(chan struct{})
	var orphaned atomic.Bool
	go func() {
		if _, err := bufio.NewReader(r).ReadString('\n'); err != nil {
			orphaned.Store(true)
			cancel()
			return
		}
		close(drain)
	}()
	enc := json.NewEncoder(w)
	err := runStormClients(ctx, t, c, drain, func(st StormStats) { _ = enc.Encode(st) })
	if orphaned.Load() {
		return errors.New("stdin closed before the drain signal: the parent is gone")
	}
	return err
}

// runStormClients connects c's clients, warms each DM up, reports
// "connected", waits for drain, then for every client to reconnect and pull
// c.Missed messages (at most c.Timeout), reports "synced" and closes the
// clients. report is called from several goroutines, never at once.
func runStormClients(ctx context.Context, t *Target, c StormChild, drain <-chan struct{}, report func(StormStats)) error {
	ids := make([]string, c.N)
	for i := range ids {
		ids[i] = c.UserPrefix + strconv.Itoa(c.Offset+i)
	}
	var (
		self        = make([]atomic.Pointer[string], c.N)
		reconnected = make([]atomic.Bool, c.N)
		pulled      = make([]atomic.Int64, c.N)
		connected   atomic.Int64
		nReconn     atomic.Int64
		nSynced     atomic.Int64
		lastSync    atomic.Int64 // unix ns of the last client to re-sync
		live        atomic.Int64 // warm-up messages received live
	)
	synced := func(i int) {
		if reconnected[i].Load() && pulled[i].Load() >= int64(c.Missed) {
			if reconnected[i].CompareAndSwap(true, false) { // count once
				nSynced.Add(1)
				lastSync.Store(time.Now().UnixNano())
			}
		}
	}
	var mu sync.Mutex // serialises the per-client check
	onEvent := func(i int, ev client.Event) {
		switch e := ev.(type) {
		case client.ReconnectedEvent:
			nReconn.Add(1)
			mu.Lock()
			reconnected[i].Store(true)
			synced(i)
			mu.Unlock()
		case client.MessageEvent:
			if id := self[i].Load(); id != nil && !e.Pulled && e.Message.GetSenderId() != *id {
				live.Add(1)
			}
			if e.Pulled { // the missed messages, own ones (sent over REST) included
				mu.Lock()
				pulled[i].Add(1)
				synced(i)
				mu.Unlock()
			}
		}
	}
	var reportMu sync.Mutex
	send := func(st StormStats) {
		reportMu.Lock()
		defer reportMu.Unlock()
		report(st)
	}
	stats := func(phase string) StormStats {
		return StormStats{Phase: phase, Connected: connected.Load(), Live: live.Load(),
			Reconnected: nReconn.Load(), Resynced: nSynced.Load(), LastSyncUnixNs: lastSync.Load()}
	}
	stopProgress := tick(ctx, time.Second, func() { send(stats("progress")) })
	defer stopProgress()

	fast := func(o *client.Options) {
		o.Backoff = client.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
		o.Logger = discardLogger // thousands of clients each log every reconnect
	}
	users, failures := dialEach(ctx, t, ids, self, onEvent, fast, &connected)
	defer closeUsers(users)
	if err := ctx.Err(); err != nil {
		return err
	}
	// Warm up: one message per DM, so both clients know the conversation and
	// resume it from a cursor after the storm.
	s := newSender(dialConcurrency * 4)
	var pairs int64
	for p := range c.N / 2 {
		a, b := users[2*p], users[2*p+1]
		if a == nil || b == nil {
			continue
		}
		pairs++
		for s.skipped.Load() > 0 || len(s.sem) == cap(s.sem) {
			s.skipped.Store(0)
			time.Sleep(time.Millisecond)
		}
		s.send(ctx, a.c, rules.DMID(a.id, b.id), "warm up", time.Now())
	}
	s.wg.Wait()
	waitFor(ctx, 30*time.Second, func() bool { return live.Load() >= pairs })
	st := stats("connected")
	for _, n := range failures {
		st.Failed += n
	}
	st.FailureReasons, st.WarmupErrors = failures, s.errs.total()
	send(st)

	select {
	case <-drain:
	case <-ctx.Done():
		return ctx.Err()
	}
	waitFor(ctx, c.Timeout, func() bool { return nSynced.Load() >= connected.Load() })
	stopProgress()
	st = stats("synced")
	for i := range pulled {
		st.MaxPulled = max(st.MaxPulled, pulled[i].Load())
		st.PulledTotal += pulled[i].Load()
	}
	send(st)
	return ctx.Err()
}

// stormProc is one process of storm clients, this one or a child, seen from
// the parent.
type stormProc struct {
	reports chan StormStats // "connected" and "synced"
	last    atomic.Pointer[StormStats]
	done    chan struct{} // closed when the clients ended (child exited)
	err     error         // why, once done is closed
	drained sync.Once
	signal  func()     // tells the clients the drain has started
	child   *childProc // nil for clients in this process
}

func newStormProc() *stormProc {
	p := &stormProc{reports: make(chan StormStats, 4), done: make(chan struct{})}
	p.last.Store(&StormStats{})
	return p
}

// route keeps progress reports as the latest and queues phase reports
// without ever blocking the reporter.
func (p *stormProc) route(st StormStats) {
	switch st.Phase {
	case "":
		return // not a report
	case "progress":
		p.last.Store(&st)
		return
	}
	select {
	case p.reports <- st:
	default: // a misbehaving child: more phase reports than read
	}
}

// startStormInProc runs c's clients in this process.
func startStormInProc(ctx context.Context, t *Target, c StormChild) *stormProc {
	p := newStormProc()
	drain := make(chan struct{})
	p.signal = func() { close(drain) }
	go func() {
		defer close(p.done)
		p.err = runStormClients(ctx, t, c, drain, p.route)
	}()
	return p
}

// startStormChild starts cmd (RunStormChild in a child process).
func startStormChild(cmd *exec.Cmd) (*stormProc, error) {
	p := newStormProc()
	child, err := startChildProc(cmd, p.route)
	if err != nil {
		return nil, err
	}
	p.child = child
	p.signal = func() {
		_, _ = io.WriteString(child.in, "drain\n")
		_ = child.in.Close()
	}
	go func() {
		<-child.done
		p.err = child.err
		close(p.done)
	}()
	return p, nil
}

// next returns the report of phase, or why it did not come.
func (p *stormProc) next(phase string) (StormStats, error) {
	select {
	case st := <-p.reports:
		if st.Phase != phase {
			return st, fmt.Errorf("storm clients reported %q, want %q", st.Phase, phase)
		}
		return st, nil
	case <-p.done:
		select { // reported just before the end
		case st := <-p.reports:
			if st.Phase == phase {
				return st, nil
			}
		default:
		}
		if p.err != nil {
			return StormStats{}, fmt.Errorf("storm clients ended before reporting %q: %w", phase, p.err)
		}
		return StormStats{}, fmt.Errorf("storm clients ended before reporting %q", phase)
	}
}

// drain tells the clients the drain has started (once).
func (p *stormProc) drain() { p.drained.Do(p.signal) }

// wait waits until the clients ended and returns why.
func (p *stormProc) wait() error {
	<-p.done
	return p.err
}

// kill stops a child and waits for it; in-process clients end with the
// context their caller cancels.
func (p *stormProc) kill() {
	if p.child != nil {
		p.child.kill()
	}
	<-p.done
}
