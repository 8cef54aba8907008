package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// MaxConnsPerProcess is the most connections one load-generator process
// opens: one process may hold 20,000 open files on the reference machine,
// and it needs some for itself.
const MaxConnsPerProcess = 18_000

// IdleOptions configures the idle scenario.
type IdleOptions struct {
	Options
	// N connections (default 1000).
	N int
	// UserPrefix names the users PREFIX0..PREFIX{N-1} (default a fresh
	// "bi<run>-").
	UserPrefix string
	// Sources spreads connections over 127.0.0.1..127.0.0.Sources when the
	// server is on loopback (default 16).
	Sources int
	// Concurrency is the parallel dials per process (default 32).
	Concurrency int
	// Ping sends a heartbeat on every connection this often, from one
	// shared ticker, so no idle timeout fires (default 20s).
	Ping time.Duration
	// WSPing makes the heartbeat a WebSocket ping control frame, as a thin
	// WebSocket client would send, instead of the protocol's Ping frame
	// that the SDK and the web client send.
	WSPing bool
	// PerProcess caps the connections of one child process (default and
	// at most MaxConnsPerProcess).
	PerProcess int
	// Spawn, when set, runs the connections in child processes of at most
	// PerProcess each (child k is the one at offset k·PerProcess): it returns the (unstarted) command of a child
	// opening n connections for users offset..offset+n-1, which prints
	// IdleStats lines as RunIdleChild does. Without it the connections are
	// opened in this process (then, with an embedded server, the RSS figure
	// includes the clients).
	Spawn func(ctx context.Context, n, offset int, prefix string) *exec.Cmd
}

// IdleStats is what one process of connections reports. A child prints it
// as one JSON line after connecting (Phase "connected") and one at the end
// (Phase "done").
type IdleStats struct {
	Phase          string           `json:"phase"`
	Connected      int64            `json:"connected"`
	Failed         int64            `json:"failed"`
	FailureReasons map[string]int64 `json:"failure_reasons,omitempty"`
	ConnectSeconds float64          `json:"connect_seconds"`
	Dropped        int64            `json:"dropped"`
	DropReasons    map[string]int64 `json:"drop_reasons,omitempty"`
	OpenAtEnd      int64            `json:"open_at_end"`
	PingsSent      int64            `json:"pings_sent"`
	PingErrors     int64            `json:"ping_errors"`
}

// Idle opens N idle authenticated connections, holds them for Duration and
// reports connect rate, failures and (when Target.ServerPID is known) the
// server's RSS growth per connection, sampled 2 s after the last connect and
// at the end of the hold.
func Idle(ctx context.Context, t *Target, o IdleOptions) (*Result, error) {
	o.defaults()
	r := newResult("idle", t)
	r.Params["n"], r.Params["duration"], r.Params["sources"], r.Params["ping"] = o.N, o.Duration.String(), o.Sources, o.Ping.String()
	r.Params["heartbeat"] = "protocol Ping frame"
	if o.WSPing {
		r.Params["heartbeat"] = "WebSocket ping"
	}

	var rssBefore int64
	if len(t.ServerPIDs) > 0 {
		if t.inProcess() {
			runtime.GC()
		}
		rssBefore, _, _ = t.serverMem()
		r.Figures["server_rss_before_mib"] = round3(float64(rssBefore) / (1 << 20))
		r.Params["server_processes"] = len(t.ServerPIDs)
	}
	sample := func(name string, connected int64) {
		if len(t.ServerPIDs) == 0 || connected == 0 {
			return
		}
		rss, hwm, err := t.serverMem()
		if err != nil {
			r.Errors["read server rss: "+errCode(err)]++
			return
		}
		r.Figures["server_rss_"+name+"_mib"] = round3(float64(rss) / (1 << 20))
		r.Figures["server_rss_per_conn_"+name+"_kib"] = round3(float64(rss-rssBefore) / float64(connected) / 1024)
		r.Figures["server_peak_rss_mib"] = round3(float64(hwm) / (1 << 20))
	}

	var procs []*idleProc
	if o.Spawn == nil {
		if o.N > o.PerProcess {
			return nil, fmt.Errorf("%d connections need child processes (at most %d per process)", o.N, o.PerProcess)
		}
		procs = append(procs, startInProc(ctx, t, o))
		if t.inProcess() {
			r.Notes = append(r.Notes, "clients ran in the server's process: RSS per connection includes the client side")
		}
	} else {
		for off := 0; off < o.N; off += o.PerProcess {
			n := min(o.PerProcess, o.N-off)
			p, err := startChild(o.Spawn(ctx, n, off, o.UserPrefix))
			if err != nil {
				for _, p := range procs {
					p.kill()
				}
				return nil, err
			}
			procs = append(procs, p)
		}
		r.Params["processes"] = len(procs)
	}

	start := time.Now()
	var connected atomic.Int64
	stop := progress(ctx, o.Progress, start, func() string {
		return fmt.Sprintf("idle: %d processes, %d connected so far", len(procs), connected.Load())
	})
	// Connect phase: wait for every process's "connected" report.
	agg := IdleStats{FailureReasons: map[string]int64{}, DropReasons: map[string]int64{}}
	var maxConnect float64
	for _, p := range procs {
		st, err := p.next("connected")
		if err != nil {
			stop()
			for _, p := range procs {
				p.kill()
			}
			return nil, err
		}
		connected.Add(st.Connected)
		agg.Connected += st.Connected
		agg.Failed += st.Failed
		maxConnect = max(maxConnect, st.ConnectSeconds)
		for k, v := range st.FailureReasons {
			agg.FailureReasons[k] += v
		}
	}
	connectDur := time.Since(start)
	time.Sleep(2 * time.Second) // let the server finish registering sessions
	sample("connected", agg.Connected)
	// Once more near the end of the hold (the children hold o.Duration from
	// their connect report): memory after heartbeats and GC cycles ran.
	if hold := o.Duration - 3*time.Second; hold > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(hold):
			sample("held", agg.Connected)
		}
	}
	for _, p := range procs {
		st, err := p.next("done")
		if err != nil {
			r.Errors["child: "+errCode(err)]++
			continue
		}
		agg.Dropped += st.Dropped
		agg.OpenAtEnd += st.OpenAtEnd
		agg.PingsSent += st.PingsSent
		agg.PingErrors += st.PingErrors
		for k, v := range st.DropReasons {
			agg.DropReasons[k] += v
		}
	}
	stop()
	for _, p := range procs {
		if err := p.wait(); err != nil {
			r.Errors["child exit: "+errCode(err)]++
		}
	}
	r.Figures["connected"] = float64(agg.Connected)
	r.Figures["failed"] = float64(agg.Failed)
	r.Figures["connect_seconds"] = round3(connectDur.Seconds())
	r.Figures["connect_rate_per_sec"] = rate(agg.Connected, connectDur)
	r.Figures["dropped_during_hold"] = float64(agg.Dropped)
	r.Figures["open_at_end"] = float64(agg.OpenAtEnd)
	r.Figures["pings_sent"] = float64(agg.PingsSent)
	r.Figures["ping_errors"] = float64(agg.PingErrors)
	for k, v := range agg.FailureReasons {
		r.Errors["connect: "+k] += v
	}
	for k, v := range agg.DropReasons {
		r.Errors["drop: "+k] += v
	}
	if len(t.ServerPIDs) > 0 {
		r.Notes = append(r.Notes, "server_rss_per_conn_connected = (RSS 2 s after the last connect - RSS before) / connected; _held: 1 s before the hold ends")
		if len(t.ServerPIDs) > 1 {
			r.Notes = append(r.Notes, fmt.Sprintf("RSS is the sum over %d server processes", len(t.ServerPIDs)))
		}
	}
	return r, nil
}

func (o *IdleOptions) defaults() {
	if o.PerProcess <= 0 || o.PerProcess > MaxConnsPerProcess {
		o.PerProcess = MaxConnsPerProcess
	}
	if o.N <= 0 {
		o.N = 1000
	}
	if o.UserPrefix == "" {
		o.UserPrefix = "bi" + runID() + "-"
	}
	if o.Sources <= 0 {
		o.Sources = 16
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	if o.Ping <= 0 {
		o.Ping = 20 * time.Second
	}
	if o.Duration <= 0 {
		o.Duration = 10 * time.Second
	}
}

// idleProc is one process of connections (this one or a child) reporting
// IdleStats in phases.
type idleProc struct {
	reports chan IdleStats // closed when the process ended
	errc    chan error
	child   *childProc // nil for connections in this process
}

func (p *idleProc) next(phase string) (IdleStats, error) {
	select {
	case st, ok := <-p.reports:
		if !ok {
			return IdleStats{}, fmt.Errorf("connection process ended before reporting %q", phase)
		}
		if st.Phase != phase {
			return st, fmt.Errorf("connection process reported %q, want %q", st.Phase, phase)
		}
		return st, nil
	case err := <-p.errc:
		return IdleStats{}, fmt.Errorf("connection process failed before reporting %q: %w", phase, err)
	}
}

func (p *idleProc) wait() error {
	if p.child == nil {
		return nil
	}
	<-p.child.done
	return p.child.err
}

func (p *idleProc) kill() {
	if p.child != nil {
		p.child.kill()
	}
}

func startInProc(ctx context.Context, t *Target, o IdleOptions) *idleProc {
	p := &idleProc{reports: make(chan IdleStats, 2), errc: make(chan error, 1)}
	go func() {
		defer close(p.reports)
		err := RunIdleConns(ctx, t, o, o.N, 0, func(st IdleStats) { p.reports <- st })
		if err != nil {
			p.errc <- err
		}
	}()
	return p
}

func startChild(cmd *exec.Cmd) (*idleProc, error) {
	p := &idleProc{reports: make(chan IdleStats, 2), errc: make(chan error, 1)}
	child, err := startChildProc(cmd, func(st IdleStats) {
		select {
		case p.reports <- st:
		default: // a misbehaving child: more reports than the two read
		}
	})
	if err != nil {
		return nil, err
	}
	p.child = child
	go func() {
		<-child.done
		close(p.reports)
	}()
	return p, nil
}

// RunIdleChild is the body of `parley bench idle --child`: it opens n
// connections for users PREFIX<offset>.., holds them for o.Duration and
// writes one IdleStats JSON line to w after connecting and one at the end.
func RunIdleChild(ctx context.Context, t *Target, o IdleOptions, n, offset int, w io.Writer) error {
	o.defaults()
	enc := json.NewEncoder(w)
	var mu sync.Mutex
	return RunIdleConns(ctx, t, o, n, offset, func(st IdleStats) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(st)
	})
}

// RunIdleConns opens n raw WebSocket connections (not SDK clients: a
// reader goroutine and a 512 B read buffer each, so thousands fit in one
// process), reports "connected", holds them for o.Duration pinging every
// o.Ping, closes them and reports "done".
func RunIdleConns(ctx context.Context, t *Target, o IdleOptions, n, offset int, report func(IdleStats)) error {
	if n > MaxConnsPerProcess {
		return fmt.Errorf("%d connections exceed %d per process", n, MaxConnsPerProcess)
	}
	ds := dialers(urlHost(t.URL), o.Sources, 15*time.Second)
	for _, d := range ds {
		d.Subprotocols = []string{wire.SubprotocolProto}
	}
	u := wsEndpoint(t.URL)
	var (
		conns               = make([]atomic.Pointer[websocket.Conn], n)
		connected, failed   atomic.Int64
		open, dropped       atomic.Int64
		closing             atomic.Bool
		readers             sync.WaitGroup
		mu                  sync.Mutex
		failures, dropCause = map[string]int64{}, map[string]int64{}
	)
	count := func(m map[string]int64, k string) { mu.Lock(); m[k]++; mu.Unlock() }
	// Pings run from the first connection on, not from the end of the
	// connect phase: connecting many thousands can take longer than the
	// server's heartbeat timeout.
	var pings, pingErrs int64
	// A deadline per heartbeat: one for a whole sweep ran out before the
	// end of a long sweep on a busy machine. Only this goroutine writes
	// data frames, as gorilla requires.
	heartbeat := func(c *websocket.Conn) error {
		if o.WSPing {
			return c.WriteControl(websocket.PingMessage, nil, time.Now().Add(5*time.Second))
		}
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		return c.WriteMessage(websocket.BinaryMessage, protoPing)
	}
	pingCtx, stopPinging := context.WithCancel(ctx)
	pingDone := make(chan struct{})
	go func() {
		defer close(pingDone)
		tick := time.NewTicker(o.Ping)
		defer tick.Stop()
		for {
			select {
			case <-pingCtx.Done():
				return
			case <-tick.C:
				for i := range conns {
					c := conns[i].Load()
					if c == nil || pingCtx.Err() != nil {
						continue
					}
					if err := heartbeat(c); err != nil {
						pingErrs++
						if !errors.Is(err, websocket.ErrCloseSent) && !errors.Is(err, net.ErrClosed) {
							count(dropCause, "ping: "+dropReason(err)) // not a connection already gone
						}
					} else {
						pings++
					}
				}
			}
		}
	}()
	stopPings := func() { stopPinging(); <-pingDone }
	defer stopPings()
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(o.Concurrency, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				tok, err := t.Token(fmt.Sprintf("%s%d", o.UserPrefix, offset+i), tokenTTL)
				if err != nil {
					failed.Add(1)
					count(failures, "token: "+errCode(err))
					continue
				}
				h := http.Header{"Authorization": {"Bearer " + tok}}
				c, resp, err := ds[i%len(ds)].DialContext(ctx, u, h)
				if err != nil {
					failed.Add(1)
					count(failures, dialReason(resp, err))
					continue
				}
				if resp != nil && resp.Body != nil {
					resp.Body.Close()
				}
				conns[i].Store(c)
				connected.Add(1)
				open.Add(1)
				readers.Go(func() {
					for {
						_, r, err := c.NextReader()
						if err != nil {
							open.Add(-1)
							if !closing.Load() {
								dropped.Add(1)
								count(dropCause, dropReason(err))
							}
							return
						}
						_, _ = io.Copy(io.Discard, r)
					}
				})
			}
		})
	}
	wg.Wait()
	snapshot := func(m map[string]int64) map[string]int64 {
		mu.Lock()
		defer mu.Unlock()
		out := make(map[string]int64, len(m))
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	connectSecs := round3(time.Since(start).Seconds())
	report(IdleStats{Phase: "connected", Connected: connected.Load(), Failed: failed.Load(),
		FailureReasons: snapshot(failures), ConnectSeconds: connectSecs})

	hold := time.NewTimer(o.Duration)
	select {
	case <-ctx.Done():
	case <-hold.C:
	}
	hold.Stop()
	stopPings()
	openAtEnd := open.Load()
	closing.Store(true)
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	deadline := time.Now().Add(2 * time.Second)
	for i := range conns {
		if c := conns[i].Load(); c != nil {
			_ = c.WriteControl(websocket.CloseMessage, msg, deadline)
			_ = c.Close()
		}
	}
	readers.Wait()
	report(IdleStats{Phase: "done", Connected: connected.Load(), Failed: failed.Load(), ConnectSeconds: connectSecs,
		Dropped: dropped.Load(), DropReasons: snapshot(dropCause), OpenAtEnd: openAtEnd, PingsSent: pings, PingErrors: pingErrs})
	return nil
}

// protoPing is the protocol's heartbeat, ClientFrame{ping} in
// parley.v1.proto, as the SDK sends it (id 0: the Pong is a push).
var protoPing = func() []byte {
	b, _ := proto.Marshal(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Ping{Ping: &parleyv1.Ping{}}}) // cannot fail
	return b
}()

// wsEndpoint returns the /v1/ws URL of a server root.
func wsEndpoint(u string) string {
	switch {
	case len(u) > 7 && u[:7] == "http://":
		u = "ws://" + u[7:]
	case len(u) > 8 && u[:8] == "https://":
		u = "wss://" + u[8:]
	}
	for len(u) > 0 && u[len(u)-1] == '/' {
		u = u[:len(u)-1]
	}
	if len(u) < 6 || u[len(u)-6:] != "/v1/ws" {
		u += "/v1/ws"
	}
	return u
}

// dialReason names why a dial failed without per-connection detail (ports),
// so that failures group.
func dialReason(resp *http.Response, err error) string {
	if resp != nil {
		return fmt.Sprintf("http %d", resp.StatusCode)
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	return errCode(err)
}

func dropReason(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return fmt.Sprintf("close %d", ce.Code)
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "eof"
	}
	return errCode(err)
}
