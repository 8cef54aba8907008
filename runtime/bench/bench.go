// Package bench is Parley's load generator: the scenarios behind `parley
// bench SCENARIO` (issue 5; docs/benchmarks.md).
//
//   - Idle: N authenticated, idle WebSocket connections held with pings;
//     connect rate, failures, server RSS per connection.
//   - DM: P pairs of users exchanging messages at a target total rate;
//     sends/s, deliveries/s, send→deliver latency percentiles.
//   - Fanout: G groups of M members, all online; send→each member and
//     send→last member latency, deliveries/s.
//   - Storm: N clients reconnect at once after the server drains; time
//     until all have re-synced, peak memory, largest catch-up burst.
//
// Every scenario runs against a Target: an embedded server started in this
// process on a temp data dir (Embedded), or an external server (External).
// Scenarios return a *Result: a flat, JSON-friendly set of figures that the
// command prints as a table. Tests run each scenario at a tiny size.
package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gorilla/websocket"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/client"
	"github.com/parleychat/parley/runtime/server"
	"github.com/parleychat/parley/runtime/wire"
)

// Target is the server under test.
type Target struct {
	// URL is the server root, "ws://host:port" (the SDK appends /v1/ws).
	URL string
	// URLs are the roots of every gateway when there are several (URL is
	// the first); idle spreads its child processes over them in turn.
	URLs []string
	// Tokens mints the token of user id (dev secret); nil when the target
	// takes tokens from a file (FileTokens).
	Tokens *auth.DevIssuer
	// FileTokens are tokens read from --token-file, used in order; the user
	// ids come from each connection's Welcome.
	FileTokens []string
	// ServerPIDs are the processes whose RSS together is the server's
	// memory: os.Getpid() for an embedded server, the gateway processes of a
	// fleet, none when unknown.
	ServerPIDs []int
	// DataDir is the embedded server's data dir ("" for an external one).
	DataDir string
	// Embedded is the in-process server, nil for an external one.
	Embedded *EmbeddedServer

	next atomic.Int64 // next FileTokens index
}

// Token returns a token for user (minted), or the next file token.
func (t *Target) Token(user string, ttl time.Duration) (string, error) {
	if t.Tokens != nil {
		return t.Tokens.Issue(user, "bench", ttl)
	}
	i := int(t.next.Add(1) - 1)
	if i >= len(t.FileTokens) {
		return "", fmt.Errorf("--token-file holds %d tokens; the scenario needs more", len(t.FileTokens))
	}
	return t.FileTokens[i], nil
}

// EmbeddedServer is a Parley server (embedded mode) run by this process.
type EmbeddedServer struct {
	Server *server.Server
	Addr   string
	Config server.Config
	cancel context.CancelFunc
	done   chan error
}

// StartEmbedded starts an embedded server on cfg (DataDir required; Addr
// default 127.0.0.1:0) and waits until it serves.
func StartEmbedded(ctx context.Context, cfg server.Config) (*EmbeddedServer, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	ln, err := listen(ctx, cfg.Addr)
	if err != nil {
		return nil, err
	}
	return startOn(ctx, cfg, ln)
}

// startOn starts an embedded server on cfg serving ln.
func startOn(ctx context.Context, cfg server.Config, ln net.Listener) (*EmbeddedServer, error) {
	srv, err := server.New(ctx, cfg)
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e := &EmbeddedServer{Server: srv, Addr: ln.Addr().String(), Config: cfg, cancel: cancel, done: make(chan error, 1)}
	go func() { e.done <- srv.Run(runCtx, ln) }()
	// Ready once /readyz answers; Run serves only after the sequencer joined.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", e.Addr, time.Second)
		if err == nil {
			_ = c.Close()
			if ok, _ := httpOK("http://" + e.Addr + "/readyz"); ok {
				return e, nil
			}
		}
		select {
		case err := <-e.done:
			return nil, fmt.Errorf("embedded server stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			_ = e.Stop()
			return nil, errors.New("embedded server not ready after 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listen retries briefly: a restarted server may find its address in
// TIME_WAIT or just released.
func listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := lc.Listen(ctx, "tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return ln, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop drains and stops the server (its drain window) and waits for it.
func (e *EmbeddedServer) Stop() error {
	e.cancel()
	return <-e.done
}

// Options are the settings every scenario shares.
type Options struct {
	// Duration of the measured phase.
	Duration time.Duration
	// Progress receives one line per second while a scenario runs; nil
	// turns progress off.
	Progress io.Writer
	// Logger for diagnostics (default: discard).
	Logger *slog.Logger
	// Procs are processes whose CPU time over the send phase the dm and
	// fanout scenarios report, per process and per 1,000 sends (the roles
	// of a fleet, Kafka, Cassandra, Redis; "bench" for the load generator).
	Procs []Proc
}

// discardLogger drops everything.
var discardLogger = slog.New(slog.DiscardHandler)

// Result is what a scenario measured: parameters and figures, flat, so
// that the command prints it as a table and writes it as JSON.
type Result struct {
	Scenario string             `json:"scenario"`
	Target   string             `json:"target"`
	Params   map[string]any     `json:"params"`
	Figures  map[string]float64 `json:"figures"`
	// Latency holds percentile summaries in milliseconds, by name.
	Latency map[string]Percentiles `json:"latency_ms,omitempty"`
	// Errors counts failures by wire error code (or a short cause).
	Errors map[string]int64 `json:"errors,omitempty"`
	// Notes say what the figures include (same-process clients, ...).
	Notes []string `json:"notes,omitempty"`
}

func newResult(scenario string, t *Target) *Result {
	target := t.URL
	if t.Embedded != nil {
		target = "embedded in-process server at " + t.URL
	}
	return &Result{Scenario: scenario, Target: target, Params: map[string]any{}, Figures: map[string]float64{},
		Latency: map[string]Percentiles{}, Errors: map[string]int64{}}
}

// Percentiles summarises a latency histogram, milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

// Histogram is a concurrency-safe HdrHistogram of durations (1µs..5min, 3
// significant digits).
type Histogram struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	return &Histogram{h: hdrhistogram.New(1, int64(5*time.Minute/time.Microsecond), 3)}
}

// Record adds d (clamped to the histogram's range).
func (h *Histogram) Record(d time.Duration) {
	us := max(d.Microseconds(), 1)
	h.mu.Lock()
	if err := h.h.RecordValue(us); err != nil {
		_ = h.h.RecordValue(h.h.HighestTrackableValue())
	}
	h.mu.Unlock()
}

// Summary returns the percentiles in milliseconds.
func (h *Histogram) Summary() Percentiles {
	h.mu.Lock()
	defer h.mu.Unlock()
	ms := func(q float64) float64 { return round3(float64(h.h.ValueAtQuantile(q)) / 1000) }
	return Percentiles{Count: h.h.TotalCount(), P50: ms(50), P90: ms(90), P99: ms(99), P999: ms(99.9),
		Max: round3(float64(h.h.Max()) / 1000)}
}

// errCounter counts errors by code.
type errCounter struct {
	mu sync.Mutex
	m  map[string]int64
}

func (e *errCounter) add(err error) {
	code := errCode(err)
	e.mu.Lock()
	if e.m == nil {
		e.m = map[string]int64{}
	}
	e.m[code]++
	e.mu.Unlock()
}

func (e *errCounter) into(dst map[string]int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, v := range e.m {
		dst[k] += v
	}
}

func (e *errCounter) total() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var n int64
	for _, v := range e.m {
		n += v
	}
	return n
}

// errCode names err by its wire code, else a short cause, so errors group.
func errCode(err error) string {
	var we *wire.Error
	if errors.As(err, &we) {
		return we.Code
	}
	var ce *client.CloseError
	if errors.As(err, &ce) {
		return fmt.Sprintf("close %d", ce.Code)
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	case errors.Is(err, client.ErrClosed):
		return "client closed"
	case errors.Is(err, client.ErrConnectionLost):
		return "connection lost"
	}
	s := err.Error()
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// progress prints line() once per second to w until ctx ends or the
// returned stop is called.
func progress(ctx context.Context, w io.Writer, start time.Time, line func() string) func() {
	if w == nil {
		return func() {}
	}
	return tick(ctx, time.Second, func() {
		fmt.Fprintf(w, "[%5.1fs] %s\n", time.Since(start).Seconds(), line())
	})
}

// tick calls f every d until ctx ends or the returned stop is called; stop
// waits for a running f.
func tick(ctx context.Context, d time.Duration, f func()) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				f()
			}
		}
	}()
	return func() { cancel(); <-done }
}

// dialers returns n websocket dialers bound to source addresses 127.0.0.1
// .. 127.0.0.n when host is a loopback address (so ephemeral ports do not
// run out past ~28,000 connections), else one default dialer.
func dialers(host string, n int, timeout time.Duration) []*websocket.Dialer {
	pool := &sync.Pool{} // shared write buffers: an idle connection holds none
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() || ip.To4() == nil {
		n = 1
	}
	out := make([]*websocket.Dialer, n)
	for i := range out {
		nd := &net.Dialer{Timeout: timeout}
		if n > 1 {
			nd.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%254))}
		}
		out[i] = &websocket.Dialer{NetDialContext: nd.DialContext, HandshakeTimeout: timeout,
			ReadBufferSize: 512, WriteBufferSize: 512, WriteBufferPool: pool}
	}
	return out
}

// urlHost returns the host of a ws/http URL or host:port.
func urlHost(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		u = u[i+3:]
	}
	if i := strings.IndexByte(u, '/'); i >= 0 {
		u = u[:i]
	}
	h, _, err := net.SplitHostPort(u)
	if err != nil {
		return u
	}
	return h
}

// serverMem sums VmRSS and VmHWM over t's server processes.
func (t *Target) serverMem() (rss, hwm int64, err error) {
	for _, pid := range t.ServerPIDs {
		r, h, err := ProcStatus(pid)
		if err != nil {
			return 0, 0, err
		}
		rss, hwm = rss+r, hwm+h
	}
	return rss, hwm, nil
}

// inProcess reports whether the server runs in this process.
func (t *Target) inProcess() bool {
	return len(t.ServerPIDs) == 1 && t.ServerPIDs[0] == os.Getpid()
}

// ProcStatus returns VmRSS and VmHWM (peak RSS) of pid in bytes, from
// /proc/PID/status (Linux).
func ProcStatus(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = f.Close() }() // read only
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) < 1 {
			continue
		}
		kb, err := strconv.ParseInt(fs[0], 10, 64)
		if err != nil {
			continue
		}
		if k == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	return rss, hwm, sc.Err()
}

// Table renders r as a two-column text table.
func (r *Result) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario  %s\ntarget    %s\n", r.Scenario, r.Target)
	keys := func(m map[string]any) []string {
		ks := make([]string, 0, len(m))
		for k := range m {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		return ks
	}
	for _, k := range keys(r.Params) {
		fmt.Fprintf(&b, "  %-32s %v\n", k, r.Params[k])
	}
	b.WriteString("figures\n")
	fk := make([]string, 0, len(r.Figures))
	for k := range r.Figures {
		fk = append(fk, k)
	}
	sort.Strings(fk)
	for _, k := range fk {
		fmt.Fprintf(&b, "  %-32s %s\n", k, strconv.FormatFloat(r.Figures[k], 'f', -1, 64))
	}
	if len(r.Latency) > 0 {
		fmt.Fprintf(&b, "latency (ms)%22s %9s %9s %9s %9s %9s %9s\n", "", "count", "p50", "p90", "p99", "p99.9", "max")
		lk := make([]string, 0, len(r.Latency))
		for k := range r.Latency {
			lk = append(lk, k)
		}
		sort.Strings(lk)
		for _, k := range lk {
			p := r.Latency[k]
			fmt.Fprintf(&b, "  %-32s %9d %9.3f %9.3f %9.3f %9.3f %9.3f\n", k, p.Count, p.P50, p.P90, p.P99, p.P999, p.Max)
		}
	}
	if len(r.Errors) > 0 {
		b.WriteString("errors\n")
		ek := make([]string, 0, len(r.Errors))
		for k := range r.Errors {
			ek = append(ek, k)
		}
		sort.Strings(ek)
		for _, k := range ek {
			fmt.Fprintf(&b, "  %-32s %d\n", k, r.Errors[k])
		}
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	return b.String()
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return round3(float64(n) / d.Seconds())
}

// httpOK reports whether GET url answers 200.
func httpOK(url string) (bool, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return false, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}
