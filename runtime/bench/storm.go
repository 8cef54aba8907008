package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/parleychat/parley/runtime/chat/rules"
	"github.com/parleychat/parley/runtime/client"
)

// StormOptions configures the storm scenario.
type StormOptions struct {
	Options
	// N clients (default 1000), paired into N/2 DM conversations.
	N int
	// Missed is how many messages each DM gets while its clients are
	// disconnected, which they must pull when they reconnect (embedded
	// target only; default 1).
	Missed int
	// Window is the drain window of an external server (default 0: all at
	// once). An embedded server drains over its own Config.DrainWindow.
	Window time.Duration
	// AdminToken drains an external server through POST /v1/admin/drain.
	AdminToken string
	// Timeout bounds the wait for every client to re-sync once the server is
	// back (embedded) or the drain was asked (external); default 2m.
	Timeout time.Duration
	// UserPrefix names the users PREFIX0..PREFIX{N-1} (default a fresh
	// "bs<run>-").
	UserPrefix string
	// PerProcess is the SDK clients of one child process (default
	// StormPerProcess, at most MaxConnsPerProcess, rounded down to even so
	// both users of a DM are in the same child).
	PerProcess int
	// Spawn, when set, runs the clients in child processes of at most
	// PerProcess each (child k at offset k·PerProcess): it returns the
	// (unstarted) command of a child running RunStormChild for c. Without
	// it the clients run in this process (then, with an embedded server, the
	// peak RSS figure includes the clients).
	Spawn func(ctx context.Context, c StormChild) *exec.Cmd
}

func (o *StormOptions) defaults(t *Target) error {
	if o.N < 2 {
		o.N = 1000
	}
	o.N -= o.N % 2
	if o.Missed < 0 {
		o.Missed = 0
	} else if o.Missed == 0 {
		o.Missed = 1
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.PerProcess <= 0 {
		o.PerProcess = StormPerProcess
	}
	o.PerProcess = max(min(o.PerProcess, MaxConnsPerProcess)&^1, 2)
	if o.UserPrefix == "" {
		o.UserPrefix = "bs" + runID() + "-"
	}
	if t.Embedded == nil {
		if o.AdminToken == "" {
			return errors.New("storm against --url needs --admin-token-file (POST /v1/admin/drain)")
		}
		o.Missed = 0
		return nil
	}
	sockets := o.N // the server's ends
	if o.Spawn == nil {
		sockets *= 2 // and the clients'
	}
	return checkFileRoom(sockets)
}

// serverFileReserve is the files an embedded server needs besides its
// client sockets: the store (Pebble keeps tables open), listeners, the REST
// connections of the restart. A server-only process had ~20 open at 4,000
// clients.
const serverFileReserve = 256

// checkFileRoom fails early when this process, which runs the embedded
// server, has no room for that many more open files: past its open-file
// limit the server stops accepting and the store cannot write, and the run
// would fail late and confusingly.
func checkFileRoom(sockets int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil // unknown: let the run find out
	}
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	if room := int(lim.Cur) - len(open) - serverFileReserve; sockets > room {
		return fmt.Errorf("embedded server: %d client sockets in its process, at most %d fit (open-file limit %d, %d open, %d kept for the store and listeners); one server process holds fewer clients than its open-file limit",
			sockets, room, lim.Cur, len(open), serverFileReserve)
	}
	return nil
}

// Storm connects N clients, drains the server so all of them reconnect at
// once, and reports the time until every client has reconnected and pulled
// the messages it missed.
//
// Embedded target: draining is final, so the embedded server is stopped
// (drain over its DrainWindow, store closed) and a new one is started on the
// same data dir and the same address — a single-node restart, what a
// one-process deployment goes through. While the new server is reachable
// only on a side listener, each DM gets Missed messages over REST; then it
// also accepts on the old address and the clients, backing off as the SDK
// does, come back. "down" is drain start → new server accepting; "resync
// after up" is from then until the last client has its missed messages.
//
// External target: POST /v1/admin/drain?window=W and the clients reconnect
// to the same URL (a load balancer in front of other gateways); re-synced
// is the last ReconnectedEvent.
//
// The clients run in this process, or in child processes with o.Spawn,
// which report to this one as RunStormChild describes.
func Storm(ctx context.Context, t *Target, o StormOptions) (*Result, error) {
	if err := o.defaults(t); err != nil {
		return nil, err
	}
	r := newResult("storm", t)
	r.Params["n"], r.Params["missed_per_dm"] = o.N, o.Missed
	ids := make([]string, o.N)
	for i := range ids {
		ids[i] = o.UserPrefix + strconv.Itoa(i)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	procs, err := startStormProcs(ctx, t, o)
	if err != nil {
		return nil, err
	}
	// On every return: in-process clients end with ctx, children are
	// killed unless they already exited.
	defer func() {
		cancel()
		for _, p := range procs {
			p.kill()
		}
	}()
	if o.Spawn != nil {
		r.Params["processes"], r.Params["per_process"] = len(procs), o.PerProcess
	}
	sum := func(f func(*StormStats) int64) (n int64) {
		for _, p := range procs {
			n += f(p.last.Load())
		}
		return n
	}

	// Connect and warm up (one message per DM, so both clients know the
	// conversation and resume it from a cursor after the storm).
	stop := progress(ctx, o.Progress, time.Now(), func() string {
		return fmt.Sprintf("storm: connected %d of %d", sum(func(s *StormStats) int64 { return s.Connected }), o.N)
	})
	agg := StormStats{FailureReasons: map[string]int64{}}
	for _, p := range procs {
		st, err := p.next("connected")
		if err != nil {
			stop()
			return nil, err
		}
		agg.Connected += st.Connected
		agg.Failed += st.Failed
		agg.WarmupErrors += st.WarmupErrors
		agg.Live += st.Live
		for k, v := range st.FailureReasons {
			agg.FailureReasons[k] += v
		}
	}
	stop()
	if agg.Failed > 0 {
		return nil, fmt.Errorf("connect: %d of %d clients failed: %v", agg.Failed, o.N, agg.FailureReasons)
	}
	if agg.WarmupErrors > 0 {
		return nil, fmt.Errorf("warm-up sends: %d failed", agg.WarmupErrors)
	}
	if agg.Live < int64(o.N/2) {
		return nil, fmt.Errorf("warm-up: %d of %d messages delivered", agg.Live, o.N/2)
	}

	start := time.Now()
	stop = progress(ctx, o.Progress, start, func() string {
		return fmt.Sprintf("storm: reconnected %d, re-synced %d of %d",
			sum(func(s *StormStats) int64 { return s.Reconnected }), sum(func(s *StormStats) int64 { return s.Resynced }), o.N)
	})
	defer stop()
	var up time.Time
	if t.Embedded != nil {
		if up, err = restartEmbedded(ctx, t, ids, o.Missed); err != nil {
			return nil, err
		}
		r.Figures["server_down_seconds"] = round3(up.Sub(start).Seconds())
		r.Notes = append(r.Notes, "embedded: drain, stop, and restart on the same data dir and address (see Storm doc); clients back off 100ms..2s")
	} else if err := adminDrain(ctx, t.URL, o.AdminToken, o.Window); err != nil {
		return nil, err
	}
	for _, p := range procs {
		p.drain()
	}
	var res StormStats
	for _, p := range procs {
		st, err := p.next("synced")
		if err != nil {
			r.Errors["storm clients: "+errCode(err)]++
			continue
		}
		res.Reconnected += st.Reconnected
		res.Resynced += st.Resynced
		res.LastSyncUnixNs = max(res.LastSyncUnixNs, st.LastSyncUnixNs)
		res.MaxPulled = max(res.MaxPulled, st.MaxPulled)
		res.PulledTotal += st.PulledTotal
	}
	stop()
	for _, p := range procs {
		if err := p.wait(); err != nil {
			r.Errors["storm clients exit: "+errCode(err)]++
		}
	}
	if lt := res.LastSyncUnixNs; lt > 0 {
		r.Figures["all_resynced_seconds"] = round3(time.Unix(0, lt).Sub(start).Seconds())
		if !up.IsZero() {
			r.Figures["resync_after_up_seconds"] = round3(time.Unix(0, lt).Sub(up).Seconds())
		}
	}
	if res.Resynced < int64(o.N) {
		r.Errors["not re-synced before timeout"] = int64(o.N) - res.Resynced
	}
	r.Figures["reconnected"] = float64(res.Reconnected)
	r.Figures["resynced"] = float64(res.Resynced)
	r.Figures["max_pulled_by_one_client"] = float64(res.MaxPulled)
	r.Figures["pulled_total"] = float64(res.PulledTotal)
	if len(t.ServerPIDs) > 0 {
		if _, hwm, err := t.serverMem(); err == nil {
			r.Figures["peak_rss_mib"] = round3(float64(hwm) / (1 << 20))
			switch {
			case t.inProcess() && o.Spawn == nil:
				r.Notes = append(r.Notes, "peak RSS is this process's: server and clients together")
			case t.inProcess():
				r.Notes = append(r.Notes, "peak RSS is this process's: the server only (the clients ran in child processes)")
			}
		}
	}
	return r, nil
}

// startStormProcs starts o's clients: in this process without o.Spawn,
// else in children of at most o.PerProcess clients each.
func startStormProcs(ctx context.Context, t *Target, o StormOptions) ([]*stormProc, error) {
	c := StormChild{N: o.N, UserPrefix: o.UserPrefix, Missed: o.Missed, Timeout: o.Timeout}
	if o.Spawn == nil {
		return []*stormProc{startStormInProc(ctx, t, c)}, nil
	}
	var procs []*stormProc
	for off := 0; off < o.N; off += o.PerProcess {
		c.N, c.Offset = min(o.PerProcess, o.N-off), off
		p, err := startStormChild(o.Spawn(ctx, c))
		if err != nil {
			for _, p := range procs {
				p.kill()
			}
			return nil, err
		}
		procs = append(procs, p)
	}
	return procs, nil
}

// restartEmbedded stops t's embedded server, starts a new one on its data
// dir, sends missed messages to each DM of ids (pairs 2k, 2k+1) through a
// side listener, then serves the old address too. It returns when the old
// address accepts.
func restartEmbedded(ctx context.Context, t *Target, ids []string, missed int) (time.Time, error) {
	old := t.Embedded
	if err := old.Stop(); err != nil {
		return time.Time{}, fmt.Errorf("stop embedded server: %w", err)
	}
	side, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return time.Time{}, err
	}
	ml := newMultiListener(side)
	cfg := old.Config
	e, err := startOn(ctx, cfg, ml)
	if err != nil {
		_ = ml.Close()
		return time.Time{}, err
	}
	e.Addr = old.Addr
	t.Embedded = e
	sideURL := "http://" + side.Addr().String()
	var wg sync.WaitGroup
	var next atomic.Int64
	var first error
	var mu sync.Mutex
	for range dialConcurrency {
		wg.Go(func() {
			for {
				p := int(next.Add(1) - 1)
				if 2*p+1 >= len(ids) {
					return
				}
				tok, err := t.Token(ids[2*p], tokenTTL)
				if err == nil {
					rest := client.NewREST(sideURL, tok)
					for k := range missed {
						if _, err = rest.Send(ctx, rules.DMID(ids[2*p], ids[2*p+1]), client.NewClientMsgID(), fmt.Sprintf("missed %d", k)); err != nil {
							break
						}
					}
				}
				if err != nil {
					mu.Lock()
					first = cmpErr(first, fmt.Errorf("send missed messages: %w", err))
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return time.Time{}, first
	}
	ln, err := listen(ctx, old.Addr)
	if err != nil {
		return time.Time{}, fmt.Errorf("listen again on %s: %w", old.Addr, err)
	}
	ml.add(ln)
	return time.Now(), nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// adminDrain asks an external server to drain over window.
func adminDrain(ctx context.Context, rawURL, token string, window time.Duration) error {
	base := client.NewREST(rawURL, "").BaseURL
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("%s/v1/admin/drain?window=%s", base, window), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("drain: %s answered %s", base, resp.Status)
	}
	return nil
}

// multiListener accepts from several listeners, added over time.
type multiListener struct {
	first net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	lns   []net.Listener
}

func newMultiListener(ln net.Listener) *multiListener {
	m := &multiListener{first: ln, conns: make(chan net.Conn), done: make(chan struct{})}
	m.add(ln)
	return m
}

func (m *multiListener) add(ln net.Listener) {
	m.mu.Lock()
	m.lns = append(m.lns, ln)
	m.mu.Unlock()
	go func() {
		var delay time.Duration
		for {
			c, err := ln.Accept()
			if err != nil {
				// Out of files (EMFILE) passes: back off as net/http does
				// instead of never accepting on ln again.
				var errno syscall.Errno
				if !errors.As(err, &errno) || !(errno == syscall.EMFILE || errno == syscall.ENFILE) {
					return
				}
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
					continue
				case <-m.done:
					return
				}
			}
			delay = 0
			select {
			case m.conns <- c:
			case <-m.done:
				_ = c.Close()
				return
			}
		}
	}()
}

func (m *multiListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case <-m.done:
		return nil, net.ErrClosed
	}
}

func (m *multiListener) Close() error {
	m.once.Do(func() {
		close(m.done)
		m.mu.Lock()
		for _, ln := range m.lns {
			_ = ln.Close()
		}
		m.mu.Unlock()
	})
	return nil
}

func (m *multiListener) Addr() net.Addr { return m.first.Addr() }
