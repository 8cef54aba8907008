package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/runtime/chat"
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
	// Timeout bounds the wait for every client to re-sync (default 2m).
	Timeout time.Duration
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
func Storm(ctx context.Context, t *Target, o StormOptions) (*Result, error) {
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
	if t.Embedded == nil && o.AdminToken == "" {
		return nil, errors.New("storm against --url needs --admin-token-file (POST /v1/admin/drain)")
	}
	if t.Embedded == nil {
		o.Missed = 0
	}
	r := newResult("storm", t)
	r.Params["n"], r.Params["missed_per_dm"] = o.N, o.Missed

	run := runID()
	ids := make([]string, o.N)
	for i := range ids {
		ids[i] = fmt.Sprintf("bs%s-%d", run, i)
	}
	var (
		self        = make([]atomic.Pointer[string], o.N)
		reconnected = make([]atomic.Bool, o.N)
		pulled      = make([]atomic.Int64, o.N)
		nReconn     atomic.Int64
		nSynced     atomic.Int64
		lastSync    atomic.Int64 // unix ns of the last client to re-sync
		live        atomic.Int64 // warm-up messages received live
	)
	synced := func(i int) {
		if reconnected[i].Load() && pulled[i].Load() >= int64(o.Missed) {
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
	fast := func(o *client.Options) { o.Backoff = client.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second} }
	users, err := connectUsers(ctx, t, ids, self, onEvent, fast)
	if err != nil {
		return nil, err
	}
	defer closeUsers(users)
	// Warm up: one message per DM, so both clients know the conversation and
	// resume it from a cursor after the storm.
	s := newSender(dialConcurrency * 4)
	for p := range o.N / 2 {
		for s.skipped.Load() > 0 || len(s.sem) == cap(s.sem) {
			s.skipped.Store(0)
			time.Sleep(time.Millisecond)
		}
		s.send(ctx, users[2*p].c, chat.DMID(users[2*p].id, users[2*p+1].id), "warm up", time.Now())
	}
	s.wg.Wait()
	if n := s.errs.total(); n > 0 {
		return nil, fmt.Errorf("warm-up sends: %d failed", n)
	}
	if !waitFor(ctx, 30*time.Second, func() bool { return live.Load() >= int64(o.N/2) }) {
		return nil, fmt.Errorf("warm-up: %d of %d messages delivered", live.Load(), o.N/2)
	}

	start := time.Now()
	stop := progress(ctx, o.Progress, start, func() string {
		return fmt.Sprintf("storm: reconnected %d, re-synced %d of %d", nReconn.Load(), nSynced.Load(), o.N)
	})
	defer stop()
	if t.Embedded != nil {
		up, err := restartEmbedded(ctx, t, ids, o.Missed)
		if err != nil {
			return nil, err
		}
		r.Figures["server_down_seconds"] = round3(up.Sub(start).Seconds())
		defer func() {
			if lt := lastSync.Load(); lt > 0 {
				r.Figures["resync_after_up_seconds"] = round3(time.Unix(0, lt).Sub(up).Seconds())
			}
		}()
		r.Notes = append(r.Notes, "embedded: drain, stop, and restart on the same data dir and address (see Storm doc); clients back off 100ms..2s")
	} else {
		if err := adminDrain(ctx, t.URL, o.AdminToken, o.Window); err != nil {
			return nil, err
		}
	}
	all := waitFor(ctx, o.Timeout, func() bool { return nSynced.Load() >= int64(o.N) })
	stop()
	if lt := lastSync.Load(); lt > 0 {
		r.Figures["all_resynced_seconds"] = round3(time.Unix(0, lt).Sub(start).Seconds())
	}
	if !all {
		r.Errors["not re-synced before timeout"] = int64(o.N) - nSynced.Load()
	}
	r.Figures["reconnected"] = float64(nReconn.Load())
	r.Figures["resynced"] = float64(nSynced.Load())
	var maxPulled, totalPulled int64
	for i := range pulled {
		maxPulled = max(maxPulled, pulled[i].Load())
		totalPulled += pulled[i].Load()
	}
	r.Figures["max_pulled_by_one_client"] = float64(maxPulled)
	r.Figures["pulled_total"] = float64(totalPulled)
	if len(t.ServerPIDs) > 0 {
		if _, hwm, err := t.serverMem(); err == nil {
			r.Figures["peak_rss_mib"] = round3(float64(hwm) / (1 << 20))
			if t.inProcess() {
				r.Notes = append(r.Notes, "peak RSS is this process's: server and clients together")
			}
		}
	}
	return r, nil
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
		ml.Close()
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
						if _, err = rest.Send(ctx, chat.DMID(ids[2*p], ids[2*p+1]), client.NewClientMsgID(), fmt.Sprintf("missed %d", k)); err != nil {
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
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case m.conns <- c:
			case <-m.done:
				c.Close()
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
			ln.Close()
		}
		m.mu.Unlock()
	})
	return nil
}

func (m *multiListener) Addr() net.Addr { return m.first.Addr() }
