// Package client is Parley's Go SDK, used by the CLI, the benchmark and the
// tests. It speaks the wire protocol (docs/design.md §6) over one
// WebSocket at /v1/ws and adds what every application would otherwise write
// itself:
//
//   - requests carry frame ids and wait for their reply (Send, Sync,
//     History, Ping), bounded by ctx and Options.RequestTimeout;
//   - Send makes a client_msg_id and retries with the same id after timeout,
//     unavailable or a lost connection, which is safe because sends are
//     idempotent per (conversation, sender, client_msg_id);
//   - MessageEvents are exactly once per (conversation_id, seq) and in seq
//     order per conversation: the client keeps a cursor per conversation,
//     drops duplicates and pulls gaps with History(after=cursor);
//   - the connection is re-established with jittered exponential backoff
//     after a network error, a close code in the reconnect range
//     (wire.ShouldReconnect) or a Reconnect frame, and then the client syncs
//     from its cursors and emits what it missed;
//   - on token_expired it asks Options.TokenSource once for a fresh token and
//     stops for good if that fails or is rejected too: it never loops.
//
// A REST helper (REST) covers the operations only the REST API offers
// (groups, membership, inbox, receipts, presence queries).
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// Defaults for Options' zero fields.
const (
	// DefaultEventBuffer bounds the events waiting for the application.
	DefaultEventBuffer = 1024
	// DefaultRequestTimeout bounds one attempt of a request (the gateway
	// answers timeout after 10s by default, so this is a backstop for a
	// reply that never comes).
	DefaultRequestTimeout = 30 * time.Second
	// DefaultHandshakeTimeout bounds a dial including the wait for Welcome.
	DefaultHandshakeTimeout = 10 * time.Second
)

const (
	// defaultHeartbeat is used when Welcome announces no interval.
	defaultHeartbeat = 30 * time.Second
	// writeTimeout is the deadline of one frame write.
	writeTimeout = 10 * time.Second
	// ackDelay coalesces delivered acks: a burst of messages costs one ack
	// per conversation. Decision: 200 ms, below what a person notices of a
	// delivered tick, and a busy group's member acks at most 5 times a
	// second (at 50 ms, acks of a 500-member group at 100 messages/s were a
	// quarter of the CPU of server and clients together, docs/benchmarks.md).
	ackDelay = 200 * time.Millisecond
	// gapGrace is how long a gap may stay open before it is pulled with
	// History: pushes overtaken by a later frame usually land well within
	// it (in `parley bench dm`, pulling at once made History a quarter of
	// the server's CPU for messages that were on their way).
	gapGrace = 250 * time.Millisecond
	// stableAfter: a connection that stayed up this long resets the backoff;
	// one that failed sooner keeps growing it, so a server that accepts and
	// then drops at once is not hammered at the minimum delay.
	stableAfter = 10 * time.Second
	// maxPendingPerConv bounds the early messages kept per conversation
	// while a gap below them is pulled; more are pulled again later.
	maxPendingPerConv = 256
	// maxServerFrame bounds one server frame (a sync result can hold many
	// pages), bytes.
	maxServerFrame = 32 << 20
	// maxFillStalls is how many pulls in a row may show nothing above a
	// conversation's cursor before the client stops waiting for the missing
	// seqs (see tracker.skip). With the backoff between them (250 ms
	// doubling) that is about a minute: long enough for a lagging
	// datacenter of a multi-region deployment to receive what its home
	// stored during a partition (docs/multi-region.md).
	maxFillStalls = 8
	// eventsChanCap is the buffer of the Events channel, on top of the queue.
	eventsChanCap = 64
	// tokenSourceTimeout bounds one call of Options.TokenSource.
	tokenSourceTimeout = 30 * time.Second
)

var (
	// ErrClosed is returned by calls on a client that has stopped (after
	// Close or a terminal close). When the client stopped for a reason
	// other than Close, the error also wraps that cause.
	ErrClosed = errors.New("parley client: closed")
	// ErrConnectionLost is returned when the connection ended before a
	// request's reply arrived: the outcome is unknown. Send retries on it by
	// itself.
	ErrConnectionLost = errors.New("parley client: connection lost before the reply")
)

// CloseError is a connection closed by the server with a WebSocket close
// code (wire.Close*) and reason.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("connection closed by the server: code %d %q", e.Code, e.Reason)
}

// Options configures Dial.
type Options struct {
	// URL of the gateway: "ws://host:port" or "wss://host:port" (http and
	// https are accepted, and so is a bare "host:port"). The path /v1/ws is
	// appended when the URL has none.
	URL string
	// Token is the JWT sent as "Authorization: Bearer <token>".
	Token string
	// TokenSource supplies a token when Token is empty, and a fresh token
	// after the server reports token_expired (at dial or as close code
	// wire.CloseTokenExpired). It is called once per expiry: if it fails,
	// returns the same token, or its token is rejected as well, the client
	// stops with a ClosedEvent instead of trying again.
	TokenSource func(ctx context.Context) (string, error)
	// Subprotocol is wire.SubprotocolProto (default) or wire.SubprotocolJSON.
	Subprotocol string
	// Header holds extra handshake headers; Authorization is set from the token.
	Header http.Header
	// NoReconnect turns automatic reconnection off: the first lost
	// connection stops the client.
	NoReconnect bool
	// Backoff bounds the delay between reconnect attempts (250ms..30s).
	Backoff Backoff
	// OnEvent, when set, receives every event in order, on one goroutine
	// owned by the client, and Events returns nil. It must not call Close
	// (Close waits for it). While it blocks, later events wait: the queue
	// fills, ephemeral events are dropped and messages are left to be pulled
	// later, as described at Events.
	OnEvent func(Event)
	// EventBuffer bounds the events queued for the application, default
	// 1024.
	EventBuffer int
	// Cursors resumes a previous session: conversation id -> the highest
	// seq the application already has. Messages after them are emitted at
	// Dial. Without them (and for conversations not listed) the client starts
	// at each conversation's current head: older messages are for History.
	Cursors map[string]uint64
	// NoAutoAck stops the client from acknowledging delivered messages by
	// itself (cumulative Ack per conversation, coalesced); call Ack then.
	NoAutoAck bool
	// RequestTimeout bounds one attempt of a request, default 30s; ctx bounds
	// the whole call.
	RequestTimeout time.Duration
	// HandshakeTimeout bounds a dial up to Welcome, default 10s.
	HandshakeTimeout time.Duration
	// Dialer, when set, is copied for every dial (its Subprotocols and
	// HandshakeTimeout are overridden).
	Dialer *websocket.Dialer
	// Logger receives diagnostics, default slog.Default().
	Logger *slog.Logger
}

// Stats counts what the client did, for tests and benchmarks.
type Stats struct {
	// Reconnects counts successful reconnections.
	Reconnects uint64
	// Pulled counts messages emitted from sync or history pulls.
	Pulled uint64
	// Duplicates counts messages discarded as already emitted.
	Duplicates uint64
	// DroppedEvents counts receipt, presence, typing, error and
	// reconnecting events dropped because the queue was full.
	DroppedEvents uint64
}

// Client is a connection to a Parley gateway that survives reconnects.
// Its methods are safe for concurrent use. Close it when done.
type Client struct {
	opts   Options
	url    string
	codec  wire.Codec
	dialer websocket.Dialer
	bo     Backoff
	log    *slog.Logger
	cap    int

	// ctx ends at Close; runCtx ends at Close or when the client stops for
	// good. Network activity follows runCtx; handing queued events to the
	// application follows ctx, so a terminal ClosedEvent is still delivered.
	ctx     context.Context
	cancel  context.CancelFunc
	runCtx  context.Context
	stopRun context.CancelFunc
	done    chan struct{}

	nextID atomic.Uint64

	closeOnce sync.Once
	doneOnce  sync.Once
	wg        sync.WaitGroup
	events    chan Event
	// roomCh is signalled when the dispatcher takes an event off the queue.
	roomCh chan struct{}

	mu        sync.Mutex
	token     string
	refreshed bool // token came from TokenSource and no server has accepted it yet
	cur       *conn
	connCh    chan struct{} // closed while cur != nil
	welcome   *parleyv1.Welcome
	pending   map[uint64]*call
	tr        *tracker
	holding   bool // the baseline sync is in flight: pushes wait in held
	held      []*parleyv1.Message
	queue     []Event
	final     bool // ClosedEvent queued: nothing follows it
	delivered bool // ClosedEvent handed to the application (channel closed)
	// dispatching and filling: the on-demand goroutines are running. An idle
	// client runs one goroutine (the reader), as a benchmark holding
	// thousands of clients needs.
	dispatching bool
	filling     bool
	ackTimer    *time.Timer
	ackDirty    map[string]struct{}
	presenceSub []string
	closing     bool  // Close was called
	stopped     bool  // the client stopped for good
	err         error // why it stopped
	stats       Stats
}

type call struct {
	conn *conn
	ch   chan *parleyv1.ServerFrame
}

// Dial connects to the gateway, waits for its Welcome, takes a baseline of
// the user's conversations (a Sync: each conversation's head, plus the
// messages after Options.Cursors), and returns a client that keeps the
// connection up until Close. A token the server refuses is returned as a
// *wire.Error (unauthenticated or token_expired); Dial does not retry
// network errors: the application decides whether to try again.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	u, err := wsURL(opts.URL)
	if err != nil {
		return nil, err
	}
	if opts.Subprotocol == "" {
		opts.Subprotocol = wire.SubprotocolProto
	}
	codec, ok := wire.CodecFor(opts.Subprotocol)
	if !ok {
		return nil, fmt.Errorf("unknown subprotocol %q: use %s or %s", opts.Subprotocol, wire.SubprotocolProto, wire.SubprotocolJSON)
	}
	if opts.EventBuffer <= 0 {
		opts.EventBuffer = DefaultEventBuffer
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Client{
		opts:     opts,
		url:      u,
		codec:    codec,
		bo:       opts.Backoff.withDefaults(),
		log:      opts.Logger.With("component", "parley-client"),
		cap:      opts.EventBuffer,
		done:     make(chan struct{}),
		roomCh:   make(chan struct{}, 1),
		connCh:   make(chan struct{}),
		pending:  map[uint64]*call{},
		tr:       newTracker(maxPendingPerConv),
		ackDirty: map[string]struct{}{},
	}
	if opts.Dialer != nil {
		c.dialer = *opts.Dialer
	} else {
		c.dialer = *websocket.DefaultDialer
	}
	c.dialer.Subprotocols = []string{opts.Subprotocol}
	c.dialer.HandshakeTimeout = opts.HandshakeTimeout
	if opts.OnEvent == nil {
		c.events = make(chan Event, eventsChanCap)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.runCtx, c.stopRun = context.WithCancel(c.ctx)

	cn, err := c.dialFirst(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.mu.Lock()
	c.holding = true
	for conv, seq := range opts.Cursors {
		c.tr.setCursor(conv, seq)
	}
	c.mu.Unlock()
	c.attach(cn)
	c.wg.Add(1)
	go c.run(cn)
	if err := c.baseline(ctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("initial sync: %w", err)
	}
	return c, nil
}

// dialFirst makes the first connection, refreshing an expired token once.
func (c *Client) dialFirst(ctx context.Context) (*conn, error) {
	tok := c.opts.Token
	if tok == "" {
		if c.opts.TokenSource == nil {
			return nil, wire.Errorf(wire.CodeUnauthenticated, "no token: set Options.Token or Options.TokenSource")
		}
		var err error
		if tok, err = c.opts.TokenSource(ctx); err != nil {
			return nil, fmt.Errorf("token source: %w", err)
		}
	}
	cn, err := c.connect(ctx, tok)
	if hasCode(err, wire.CodeTokenExpired) && c.opts.TokenSource != nil {
		fresh, terr := c.opts.TokenSource(ctx)
		switch {
		case terr != nil:
			return nil, errors.Join(err, fmt.Errorf("token source: %w", terr))
		case fresh == "" || fresh == tok:
			return nil, fmt.Errorf("token source returned the expired token again: %w", err)
		}
		tok = fresh
		cn, err = c.connect(ctx, tok)
	}
	if err != nil {
		return nil, err
	}
	c.token = tok
	return cn, nil
}

// wsURL normalizes a gateway address to ws(s)://host[:port]/path.
func wsURL(raw string) (string, error) {
	if raw == "" {
		return "", errors.New("parley client: Options.URL is empty (want ws://host:port)")
	}
	if !strings.Contains(raw, "://") {
		raw = "ws://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("parley client: bad URL %q: %w", raw, err)
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("parley client: URL %q: scheme must be ws, wss, http or https", raw)
	}
	if u.Host == "" {
		return "", fmt.Errorf("parley client: URL %q has no host", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/ws"
	}
	return u.String(), nil
}

// Events returns the events channel, or nil when Options.OnEvent is set.
// Events arrive in order; the channel is closed after the ClosedEvent (or
// at Close, when the application stopped reading).
//
// When the application does not keep up, events wait in a queue bounded by
// Options.EventBuffer. Once it is full: receipt, presence, typing, error and
// reconnecting events are dropped (they are ephemeral or superseded by the
// next one; Stats counts them), and messages are never dropped but not taken
// in either: the client remembers that they exist and pulls them with
// History when the application has caught up. Memory stays bounded, the
// connection is never blocked by a slow reader, and every message still
// arrives once and in order.
func (c *Client) Events() <-chan Event { return c.events }

// Done is closed when the client has stopped (Close or a terminal close).
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client stopped (nil while it runs): ErrClosed after
// Close, otherwise the cause carried by the ClosedEvent.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Welcome returns the Welcome of the current (or last) connection.
func (c *Client) Welcome() *parleyv1.Welcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.welcome
}

// UserID returns the authenticated user, the subject of the token.
func (c *Client) UserID() string { return c.Welcome().GetUserId() }

// Connected reports whether a connection is up right now.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur != nil
}

// Cursors returns, per conversation, the highest seq handed to the
// application so far; pass it as Options.Cursors to resume later.
func (c *Client) Cursors() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.tr.convs))
	for conv, s := range c.tr.convs {
		out[conv] = s.cursor
	}
	return out
}

// Stats returns counters of the client's activity.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Close closes the connection, stops reconnecting and waits for every
// goroutine of the client to end. Calls in flight return ErrClosed. A
// ClosedEvent (Err ErrClosed) is the last event unless the application has
// stopped reading the Events channel and it is full. Close is idempotent and
// must not be called from OnEvent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		if c.err == nil {
			c.err = ErrClosed
		}
		cn := c.cur
		if c.ackTimer != nil {
			c.ackTimer.Stop()
			c.ackTimer = nil
		}
		c.mu.Unlock()
		c.cancel()
		if cn != nil {
			cn.closeWith(websocket.CloseNormalClosure, "client closed")
		}
		c.wg.Wait()

		c.mu.Lock()
		delivered := c.delivered
		c.delivered = true
		c.queue = nil
		c.mu.Unlock()
		if !delivered {
			ev := ClosedEvent{Err: ErrClosed}
			if c.opts.OnEvent != nil {
				c.opts.OnEvent(ev)
			} else {
				select {
				case c.events <- ev:
				default:
				}
				close(c.events)
			}
		}
		c.markDone()
	})
	return nil
}

func (c *Client) markDone() { c.doneOnce.Do(func() { close(c.done) }) }

// enter registers a timer callback with the wait group unless the client is
// closing; Close's Wait then covers it.
func (c *Client) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false
	}
	c.wg.Add(1)
	return true
}

// stopErr is what calls return once the client has stopped.
func (c *Client) stopErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil || errors.Is(c.err, ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("%w: %w", ErrClosed, c.err)
}

// terminate stops the client for good after a terminal close or error.
func (c *Client) terminate(cause error) {
	ev := ClosedEvent{Err: cause}
	var ce *CloseError
	var we *wire.Error
	switch {
	case errors.As(cause, &ce):
		ev.Code, ev.Reason = ce.Code, ce.Reason
	case errors.As(cause, &we):
		switch we.Code {
		case wire.CodeUnauthenticated:
			ev.Code = wire.CloseUnauthenticated
		case wire.CodeTokenExpired:
			ev.Code = wire.CloseTokenExpired
		}
		ev.Reason = we.Message
	}
	c.log.Info("client stopped", "err", cause)
	c.mu.Lock()
	if c.err == nil {
		c.err = cause
	}
	c.stopped = true
	c.enqueueLocked(ev)
	c.mu.Unlock()
	c.stopRun()
	c.markDone()
}

func hasCode(err error, code string) bool {
	var we *wire.Error
	return errors.As(err, &we) && we.Code == code
}

func wireErr(e *parleyv1.Error) *wire.Error {
	return &wire.Error{Code: e.GetCode(), Message: e.GetMessage(), RetryAfterMs: e.GetRetryAfterMs()}
}
