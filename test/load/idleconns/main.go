// Command idleconns opens many authenticated, idle WebSocket connections to
// a Parley gateway (or any WebSocket server) and holds them, so that the
// server's memory per idle connection can be measured (test/load/idle-mem.sh;
// docs/benchmarks.md). It is a load tool, not part of the product.
//
// Each connection has one goroutine, which reads and discards whatever the
// server sends (the Welcome frame, pongs); the client answers nothing. One
// shared ticker sends a WebSocket ping on every connection each --ping
// interval, so the server's idle timeout (2.5× its heartbeat) never fires
// during a long hold. Read buffers are small and write buffers pooled, so the
// client's own footprint stays small.
//
// Connections are spread over --sources loopback source addresses
// (127.0.0.1, 127.0.0.2, ...) so ephemeral ports do not run out. One process
// may hold at most as many sockets as its open-file limit (20,000 here), so N
// is capped at 19,000.
//
// When the hold ends (--hold elapsed, SIGINT or SIGTERM) every connection is
// closed and one JSON result is printed on stdout. Progress goes to stderr.
//
//	idleconns --url ws://127.0.0.1:8080/v1/ws --n 10000 --secret-dir DATA --hold 5m --sources 4
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/wire"
)

// maxConns keeps the client under the 20,000 open-file limit of one process,
// with room for its other descriptors.
const maxConns = 19_000

type options struct {
	url         string
	n           int
	tokenFile   string
	secretDir   string
	userPrefix  string
	hold        time.Duration
	sources     int
	concurrency int
	ping        time.Duration
	subprotocol string
	timeout     time.Duration
}

// result is the JSON printed at the end. Durations are seconds.
type result struct {
	URL            string         `json:"url"`
	N              int            `json:"n"`
	Connected      int64          `json:"connected"`
	Failed         int64          `json:"failed"`
	FailureReasons map[string]int `json:"failure_reasons,omitempty"`
	ConnectSeconds float64        `json:"connect_seconds"`
	ConnectRate    float64        `json:"connect_rate_per_sec"`
	HeldSeconds    float64        `json:"held_seconds"`
	// Dropped counts connections that ended during the hold (server closed
	// them or the socket failed); DropReasons groups them by cause.
	Dropped        int64          `json:"dropped_during_hold"`
	DropReasons    map[string]int `json:"drop_reasons,omitempty"`
	OpenAtEnd      int64          `json:"open_at_end"`
	FramesReceived int64          `json:"frames_received"`
	PingsSent      int64          `json:"pings_sent"`
	PingErrors     int64          `json:"ping_errors"`
	Sources        int            `json:"sources"`
	Concurrency    int            `json:"concurrency"`
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", "ws://127.0.0.1:8080/v1/ws", "WebSocket URL")
	flag.IntVar(&o.n, "n", 1000, fmt.Sprintf("connections to open (at most %d)", maxConns))
	flag.StringVar(&o.tokenFile, "token-file", "", "file of bearer tokens, one a line; connection i uses line i mod count")
	flag.StringVar(&o.secretDir, "secret-dir", "", "dev data dir holding dev-secret: mint an HS256 dev token per user (PREFIX0..PREFIX{n-1})")
	flag.StringVar(&o.userPrefix, "user-prefix", "u", "user id prefix for --secret-dir tokens")
	flag.DurationVar(&o.hold, "hold", time.Minute, "how long to hold the connections once all are attempted (SIGINT/SIGTERM end it early)")
	flag.IntVar(&o.sources, "sources", 4, "spread connections over this many source addresses 127.0.0.1..127.0.0.N (1..254)")
	flag.IntVar(&o.concurrency, "concurrency", 32, "parallel dials")
	flag.DurationVar(&o.ping, "ping", 20*time.Second, "send a WebSocket ping on every connection this often from one shared ticker (0: never)")
	flag.StringVar(&o.subprotocol, "subprotocol", wire.SubprotocolProto, "Sec-WebSocket-Protocol to offer (empty: none)")
	flag.DurationVar(&o.timeout, "dial-timeout", 15*time.Second, "timeout of one dial + handshake")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.n < 1 || o.n > maxConns {
		return fmt.Errorf("--n %d is outside 1..%d (one process holds at most 20,000 files)", o.n, maxConns)
	}
	if o.sources < 1 || o.sources > 254 {
		return fmt.Errorf("--sources %d is outside 1..254", o.sources)
	}
	if o.concurrency < 1 {
		o.concurrency = 1
	}
	if _, err := url.Parse(o.url); err != nil {
		return fmt.Errorf("--url: %w", err)
	}
	tokens, err := loadTokens(o)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	c := &client{o: o, tokens: tokens, conns: make([]*websocket.Conn, o.n), failures: map[string]int{}, drops: map[string]int{}}
	c.dialer = make([]*websocket.Dialer, o.sources)
	pool := &sync.Pool{} // shared write buffers: an idle connection holds none
	for i := range c.dialer {
		nd := &net.Dialer{Timeout: o.timeout, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))}}
		d := &websocket.Dialer{
			NetDialContext:   nd.DialContext,
			HandshakeTimeout: o.timeout,
			ReadBufferSize:   512,
			WriteBufferSize:  256,
			WriteBufferPool:  pool,
		}
		if o.subprotocol != "" {
			d.Subprotocols = []string{o.subprotocol}
		}
		c.dialer[i] = d
	}

	start := time.Now()
	c.connectAll(ctx)
	connectDur := time.Since(start)
	fmt.Fprintf(os.Stderr, "idleconns: connected %d of %d in %.1fs (%d failed); holding for %s\n",
		c.connected.Load(), o.n, connectDur.Seconds(), c.failed.Load(), o.hold)

	holdStart := time.Now()
	c.hold(ctx)
	held := time.Since(holdStart)
	open := c.open.Load()
	c.closeAll()

	res := result{
		URL: o.url, N: o.n, Connected: c.connected.Load(), Failed: c.failed.Load(),
		ConnectSeconds: round(connectDur.Seconds()), HeldSeconds: round(held.Seconds()),
		Dropped: c.dropped.Load(), OpenAtEnd: open, FramesReceived: c.frames.Load(),
		PingsSent: c.pings.Load(), PingErrors: c.pingErrs.Load(), Sources: o.sources, Concurrency: o.concurrency,
	}
	if connectDur > 0 {
		res.ConnectRate = round(float64(res.Connected) / connectDur.Seconds())
	}
	c.mu.Lock()
	res.FailureReasons = topReasons(c.failures, 5)
	res.DropReasons = topReasons(c.drops, 5)
	c.mu.Unlock()
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

// loadTokens returns the tokens to use: one per user from --secret-dir, or
// the lines of --token-file.
func loadTokens(o options) ([]string, error) {
	switch {
	case o.secretDir != "" && o.tokenFile != "":
		return nil, errors.New("give --token-file or --secret-dir, not both")
	case o.secretDir != "":
		// Never create a secret: a new one would sign tokens the server
		// rejects.
		if _, err := os.Stat(filepath.Join(o.secretDir, auth.DevSecretFile)); err != nil {
			return nil, fmt.Errorf("--secret-dir: %w", err)
		}
		secret, err := auth.LoadOrCreateDevSecret(o.secretDir)
		if err != nil {
			return nil, err
		}
		iss := auth.NewDevIssuer(secret)
		// Valid for the whole run, so no session ends by token expiry.
		ttl := o.hold + time.Duration(o.n/100+1)*time.Minute + 10*time.Minute
		tokens := make([]string, o.n)
		for i := range tokens {
			t, err := iss.Issue(fmt.Sprintf("%s%d", o.userPrefix, i), "", ttl)
			if err != nil {
				return nil, err
			}
			tokens[i] = t
		}
		return tokens, nil
	case o.tokenFile != "":
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		var tokens []string
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				tokens = append(tokens, l)
			}
		}
		if len(tokens) == 0 {
			return nil, fmt.Errorf("--token-file %s holds no token", o.tokenFile)
		}
		return tokens, nil
	default:
		return []string{""}, nil // servers without auth (the bare reference)
	}
}

type client struct {
	o      options
	tokens []string
	dialer []*websocket.Dialer

	// conns[i] is set once connection i is up; the slice is read by the
	// ping ticker and closeAll after connectAll returns.
	conns []*websocket.Conn
	// closing is set before closeAll, so readers stop counting drops.
	closing atomic.Bool

	connected, failed, open, dropped atomic.Int64
	frames, pings, pingErrs          atomic.Int64
	readers                          sync.WaitGroup

	mu       sync.Mutex
	failures map[string]int
	drops    map[string]int
}

// connectAll dials every connection with o.concurrency workers, stopping
// early when ctx ends.
func (c *client) connectAll(ctx context.Context) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range c.o.concurrency {
		wg.Go(func() {
			for i := range next {
				c.dial(ctx, i)
			}
		})
	}
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
feed:
	for i := range c.o.n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		case <-progress.C:
			fmt.Fprintf(os.Stderr, "idleconns: %d connected, %d failed\n", c.connected.Load(), c.failed.Load())
			select {
			case next <- i:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(next)
	wg.Wait()
}

func (c *client) dial(ctx context.Context, i int) {
	h := http.Header{}
	if tok := c.tokens[i%len(c.tokens)]; tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	conn, resp, err := c.dialer[i%len(c.dialer)].DialContext(ctx, c.o.url, h)
	if err != nil {
		c.failed.Add(1)
		c.count(c.failures, dialReason(resp, err))
		return
	}
	c.conns[i] = conn
	c.connected.Add(1)
	c.open.Add(1)
	c.readers.Go(func() { c.read(conn) })
}

// read discards whatever the server sends until the connection ends.
func (c *client) read(conn *websocket.Conn) {
	for {
		_, r, err := conn.NextReader()
		if err != nil {
			c.open.Add(-1)
			if !c.closing.Load() {
				c.dropped.Add(1)
				c.count(c.drops, dropReason(err))
			}
			return
		}
		c.frames.Add(1)
		if _, err := io.Copy(io.Discard, r); err != nil {
			continue // NextReader reports the error
		}
	}
}

// hold waits for o.hold or ctx, pinging every connection each o.ping.
func (c *client) hold(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	done := time.NewTimer(c.o.hold)
	defer done.Stop()
	var tick <-chan time.Time
	if c.o.ping > 0 {
		t := time.NewTicker(c.o.ping)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-done.C:
			return
		case <-tick:
			deadline := time.Now().Add(5 * time.Second)
			for _, conn := range c.conns {
				if conn == nil {
					continue
				}
				if err := conn.WriteControl(websocket.PingMessage, nil, deadline); err != nil {
					c.pingErrs.Add(1)
				} else {
					c.pings.Add(1)
				}
			}
		}
	}
}

// closeAll sends each connection a close frame (best effort), closes it and
// waits for the readers.
func (c *client) closeAll() {
	c.closing.Store(true)
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	deadline := time.Now().Add(2 * time.Second)
	for _, conn := range c.conns {
		if conn == nil {
			continue
		}
		_ = conn.WriteControl(websocket.CloseMessage, msg, deadline)
		_ = conn.Close()
	}
	c.readers.Wait()
}

func (c *client) count(m map[string]int, reason string) {
	c.mu.Lock()
	m[reason]++
	c.mu.Unlock()
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
	if errors.Is(err, websocket.ErrBadHandshake) {
		return "bad handshake"
	}
	return truncate(err.Error(), 80)
}

func dropReason(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return fmt.Sprintf("close %d %s", ce.Code, truncate(ce.Text, 60))
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "eof"
	}
	return truncate(err.Error(), 80)
}

// topReasons keeps the k most frequent reasons and sums the rest as "other".
func topReasons(m map[string]int, k int) map[string]int {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for r := range m {
		keys = append(keys, r)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
	out := map[string]int{}
	for i, r := range keys {
		if i < k {
			out[r] = m[r]
		} else {
			out["other"] += m[r]
		}
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func round(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
