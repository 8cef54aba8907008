package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// conn is one WebSocket connection, from Welcome until it ends.
type conn struct {
	ws      *websocket.Conn
	codec   wire.Codec
	msgType int
	welcome *parleyv1.Welcome
	hb      time.Duration // ping interval
	idle    time.Duration // read deadline: no frame at all for this long means the link is dead
	started time.Time
	// gone is closed once the reader is done with the connection.
	gone chan struct{}
	wmu  sync.Mutex
	// drained: the server sent Reconnect, so the next dial needs no backoff.
	drained atomic.Bool
	// lastCode is the code of the last error frame that answered no request
	// (a gateway may say token_expired before it closes).
	lastCode atomic.Pointer[string]
	// timers, guarded by Client.mu.
	hbTimer *time.Timer
	reTimer *time.Timer
}

// write sends one frame. A failed write closes the connection (the reader
// then ends it) and returns an error wrapping ErrConnectionLost.
func (cn *conn) write(f *parleyv1.ClientFrame) error {
	b, err := cn.codec.EncodeClient(f)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	cn.wmu.Lock()
	defer cn.wmu.Unlock()
	_ = cn.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := cn.ws.WriteMessage(cn.msgType, b); err != nil {
		_ = cn.ws.Close()
		return fmt.Errorf("%w: write: %v", ErrConnectionLost, err)
	}
	return nil
}

// closeWith sends a close frame (best effort) and closes the socket.
func (cn *conn) closeWith(code int, text string) {
	_ = cn.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
	_ = cn.ws.Close()
}

func (cn *conn) lastErrorCode() string {
	if p := cn.lastCode.Load(); p != nil {
		return *p
	}
	return ""
}

// connect dials the gateway with token and waits for Welcome. A refused
// token comes back as a *wire.Error (from the HTTP error body of the refused
// upgrade, an Error frame, or close code 4500/4501).
func (c *Client) connect(ctx context.Context, token string) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.HandshakeTimeout)
	defer cancel()
	h := http.Header{}
	for k, v := range c.opts.Header {
		h[k] = append([]string(nil), v...)
	}
	h.Set("Authorization", "Bearer "+token)
	ws, resp, err := c.dialer.DialContext(ctx, c.url, h)
	if err != nil {
		if resp != nil {
			if we := responseError(resp); we != nil {
				return nil, we
			}
			return nil, fmt.Errorf("dial %s: HTTP %d: %w", c.url, resp.StatusCode, err)
		}
		return nil, fmt.Errorf("dial %s: %w", c.url, err)
	}
	codec, ok := wire.CodecFor(ws.Subprotocol())
	if !ok {
		codec = c.codec // the server did not name one: speak the requested one
	}
	ws.SetReadLimit(maxServerFrame)
	if dl, ok := ctx.Deadline(); ok {
		_ = ws.SetReadDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = ws.Close() })
	welcome, err := readWelcome(ws, codec)
	if !stop() {
		_ = ws.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("waiting for welcome: %w", err)
	}
	if err != nil {
		_ = ws.Close()
		return nil, err
	}
	hb := time.Duration(welcome.GetHeartbeatMs()) * time.Millisecond
	if hb <= 0 {
		hb = defaultHeartbeat
	}
	cn := &conn{
		ws:      ws,
		codec:   codec,
		msgType: websocket.TextMessage,
		welcome: welcome,
		hb:      hb,
		// The server answers every ping, so silence for 2.5 intervals (the
		// server's own idle limit) plus slack for a loaded machine means the
		// link is dead even if TCP has not noticed.
		idle:    hb*5/2 + 2*time.Second,
		started: time.Now(),
		gone:    make(chan struct{}),
	}
	if codec.Binary {
		cn.msgType = websocket.BinaryMessage
	}
	return cn, nil
}

func readWelcome(ws *websocket.Conn, codec wire.Codec) (*parleyv1.Welcome, error) {
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			return nil, fmt.Errorf("waiting for welcome: %w", closeCause(err))
		}
		f, err := codec.DecodeServer(b)
		if err != nil {
			return nil, fmt.Errorf("waiting for welcome: %w", err)
		}
		switch {
		case f.GetWelcome() != nil:
			return f.GetWelcome(), nil
		case f.GetError() != nil:
			return nil, wireErr(f.GetError())
		}
		// Nothing else is expected before Welcome; a message pushed that
		// early would be pulled again as a gap, so skipping it loses nothing.
	}
}

// closeCause turns a read error into the error a caller can act on: close
// codes 4500 and 4501 become *wire.Error unauthenticated and token_expired,
// other application close codes a *CloseError.
func closeCause(err error) error {
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		return err
	}
	switch ce.Code {
	case wire.CloseUnauthenticated:
		return &wire.Error{Code: wire.CodeUnauthenticated, Message: ce.Text}
	case wire.CloseTokenExpired:
		return &wire.Error{Code: wire.CodeTokenExpired, Message: ce.Text}
	}
	return &CloseError{Code: ce.Code, Reason: ce.Text}
}

// responseError reads the JSON error body of a refused upgrade.
func responseError(resp *http.Response) *wire.Error {
	var body struct {
		Error struct {
			Code         string `json:"code"`
			Message      string `json:"message"`
			RetryAfterMs uint32 `json:"retry_after_ms"`
		} `json:"error"`
	}
	if resp.Body != nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &body) == nil && body.Error.Code != "" {
			return &wire.Error{Code: body.Error.Code, Message: body.Error.Message, RetryAfterMs: body.Error.RetryAfterMs}
		}
	}
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return wire.Errorf(wire.CodeUnauthenticated, "the gateway refused the token (HTTP 401)")
	case http.StatusServiceUnavailable:
		return wire.Errorf(wire.CodeUnavailable, "the gateway is unavailable (HTTP 503)")
	}
	return nil
}

// attach makes cn the current connection.
func (c *Client) attach(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur = cn
	c.welcome = cn.welcome
	c.refreshed = false // the server accepted the token
	close(c.connCh)
	cn.hbTimer = time.AfterFunc(cn.hb, func() { c.heartbeat(cn) })
}

// detach ends cn: requests waiting on it get ErrConnectionLost.
func (c *Client) detach(cn *conn) {
	c.mu.Lock()
	if c.cur == cn {
		c.cur = nil
		c.connCh = make(chan struct{})
	}
	if cn.hbTimer != nil {
		cn.hbTimer.Stop()
	}
	if cn.reTimer != nil {
		cn.reTimer.Stop()
	}
	c.mu.Unlock()
	close(cn.gone)
	_ = cn.ws.Close()
}

// heartbeat pings at the interval Welcome announced: the gateway closes
// connections it hears nothing from, and the pong keeps the read deadline
// of a healthy link from firing.
func (c *Client) heartbeat(cn *conn) {
	if !c.enter() {
		return
	}
	defer c.wg.Done()
	select {
	case <-cn.gone:
		return
	default:
	}
	_ = cn.write(&parleyv1.ClientFrame{Id: c.nextID.Add(1), Body: &parleyv1.ClientFrame_Ping{Ping: &parleyv1.Ping{}}})
	c.mu.Lock()
	if c.cur == cn && cn.hbTimer != nil {
		cn.hbTimer.Reset(cn.hb)
	}
	c.mu.Unlock()
}

// waitConn returns the current connection, waiting for a reconnect if needed.
func (c *Client) waitConn(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		if c.stopped || c.closing {
			c.mu.Unlock()
			return nil, c.stopErr()
		}
		if c.cur != nil {
			cn := c.cur
			c.mu.Unlock()
			return cn, nil
		}
		ch := c.connCh
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.runCtx.Done():
			return nil, c.stopErr()
		}
	}
}

// run owns the connection: it reads until the connection ends, then
// reconnects or stops the client.
func (c *Client) run(cn *conn) {
	defer c.wg.Done()
	failures := 0
	for {
		cause := c.serve(cn)
		c.detach(cn)
		if c.ctx.Err() != nil {
			return // Close finishes up
		}
		if time.Since(cn.started) >= stableAfter {
			failures = 0
		}
		next, n, err := c.reconnect(cn, cause, failures)
		if err != nil {
			if c.ctx.Err() == nil {
				c.terminate(err)
			}
			return
		}
		failures = n
		cn = next
	}
}

// keepReadBuffer is the largest read buffer serve keeps between frames.
const keepReadBuffer = 64 << 10

// serve reads and handles frames until the connection fails.
//
// Frames are read into one reused buffer (decoding copies what it keeps),
// so a busy connection does not allocate per frame for its bytes; a buffer
// grown past keepReadBuffer by a large frame (a history page) is let go.
func (c *Client) serve(cn *conn) error {
	var buf bytes.Buffer
	for {
		_ = cn.ws.SetReadDeadline(time.Now().Add(cn.idle))
		_, r, err := cn.ws.NextReader()
		if err != nil {
			return err
		}
		if buf.Cap() > keepReadBuffer {
			buf = bytes.Buffer{}
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return err
		}
		f, err := cn.codec.DecodeServer(buf.Bytes())
		if err != nil {
			c.log.Warn("skipping undecodable server frame", "err", err)
			continue
		}
		c.handle(cn, f)
	}
}

// handle routes one server frame: replies to their waiting request, pushes
// to the tracker and the event queue.
func (c *Client) handle(cn *conn, f *parleyv1.ServerFrame) {
	switch b := f.GetBody().(type) {
	case *parleyv1.ServerFrame_SendOk, *parleyv1.ServerFrame_SyncResult, *parleyv1.ServerFrame_HistoryResult,
		*parleyv1.ServerFrame_Pong, *parleyv1.ServerFrame_Error, *parleyv1.ServerFrame_SendAccepted,
		*parleyv1.ServerFrame_Mute, *parleyv1.ServerFrame_Block:
		if f.GetId() != 0 {
			c.mu.Lock()
			call := c.pending[f.GetId()]
			c.mu.Unlock()
			if call != nil && call.conn == cn {
				select {
				case call.ch <- f:
				default:
				}
				return
			}
		}
		if e := f.GetError(); e != nil {
			code := e.GetCode()
			cn.lastCode.Store(&code)
			c.mu.Lock()
			c.enqueueLocked(ErrorEvent{Err: wireErr(e)})
			c.mu.Unlock()
		}
		// A late reply (its request gave up) or a pong of a heartbeat.
	case *parleyv1.ServerFrame_Message:
		if f.GetId() != 0 {
			// The answer to an edit or delete: its request emits it.
			c.mu.Lock()
			call := c.pending[f.GetId()]
			c.mu.Unlock()
			if call != nil && call.conn == cn {
				select {
				case call.ch <- f:
					return
				default:
				}
			}
		}
		c.onMessage(b.Message)
	case *parleyv1.ServerFrame_Receipt:
		c.emit(ReceiptEvent{Receipt: b.Receipt})
	case *parleyv1.ServerFrame_Presence:
		c.emit(PresenceEvent{Presence: b.Presence})
	case *parleyv1.ServerFrame_Typing:
		c.emit(TypingEvent{Typing: b.Typing})
	case *parleyv1.ServerFrame_Reconnect:
		c.scheduleReconnect(cn, b.Reconnect)
	case *parleyv1.ServerFrame_Welcome:
		// Only the first Welcome of a connection matters.
	}
}

// scheduleReconnect honours a Reconnect frame. The gateway already spreads
// its clients over the drain window (after_ms differs per client) and
// closes with wire.CloseDrain at after_ms, so the client reconnects at once
// when the connection ends, without backoff. It keeps using the connection
// until then, and closes it itself shortly after after_ms if the gateway has
// not (a little jitter so clients told the same after_ms still spread).
func (c *Client) scheduleReconnect(cn *conn, r *parleyv1.Reconnect) {
	after := time.Duration(r.GetAfterMs()) * time.Millisecond
	d := after + time.Duration(rand.Int64N(int64(c.bo.Min)+1))
	c.log.Info("gateway asked to reconnect", "reason", r.GetReason(), "after", after)
	cn.drained.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != cn || cn.reTimer != nil {
		return
	}
	cn.reTimer = time.AfterFunc(d, func() {
		if !c.enter() {
			return
		}
		defer c.wg.Done()
		cn.closeWith(websocket.CloseGoingAway, "reconnecting: "+r.GetReason())
	})
}

// reconnect decides, after cn ended with cause, whether to connect again,
// and does: with backoff, refreshing the token once on token_expired. It
// returns the new connection and the failure count, or the terminal error.
func (c *Client) reconnect(cn *conn, cause error, failures int) (*conn, int, error) {
	cause = closeCause(cause)
	if code := cn.lastErrorCode(); (code == wire.CodeTokenExpired || code == wire.CodeUnauthenticated) && !hasCode(cause, code) {
		var ce *CloseError
		if !errors.As(cause, &ce) || wire.ShouldReconnect(ce.Code) {
			cause = &wire.Error{Code: code, Message: "the gateway closed the connection after " + code}
		}
	}
	needToken := false
	var ce *CloseError
	switch {
	case hasCode(cause, wire.CodeTokenExpired):
		needToken = true
	case hasCode(cause, wire.CodeUnauthenticated):
		return nil, 0, cause
	case errors.As(cause, &ce) && !wire.ShouldReconnect(ce.Code):
		return nil, 0, cause
	}
	if c.opts.NoReconnect {
		return nil, 0, fmt.Errorf("connection lost and reconnection is off: %w", cause)
	}
	c.log.Info("connection lost; reconnecting", "err", cause)
	immediate := cn.drained.Load()
	for attempt := 1; ; attempt++ {
		if needToken {
			if err := c.refreshToken(cause); err != nil {
				return nil, 0, err
			}
			needToken = false
		}
		var delay time.Duration
		if immediate {
			immediate = false // the gateway spread the Reconnect frames already
		} else {
			failures++
			delay = c.bo.Delay(failures)
		}
		c.emit(ReconnectingEvent{Attempt: attempt, Delay: delay, Err: cause})
		if !sleepCtx(c.runCtx, delay) {
			return nil, 0, ErrClosed
		}
		c.mu.Lock()
		tok := c.token
		c.mu.Unlock()
		next, err := c.connect(c.runCtx, tok)
		if err == nil {
			c.attach(next)
			c.mu.Lock()
			c.stats.Reconnects++
			c.enqueueLocked(ReconnectedEvent{Welcome: next.welcome})
			c.mu.Unlock()
			c.wg.Add(1)
			go c.resync()
			return next, failures, nil
		}
		if c.runCtx.Err() != nil {
			return nil, 0, ErrClosed
		}
		cause = err
		switch {
		case hasCode(err, wire.CodeTokenExpired):
			needToken = true
		case hasCode(err, wire.CodeUnauthenticated):
			return nil, 0, err
		}
		c.log.Debug("reconnect attempt failed", "attempt", attempt, "err", err)
	}
}

// refreshToken asks TokenSource for a fresh token, once per expiry: a token
// that came from it and was never accepted is not refreshed again.
func (c *Client) refreshToken(cause error) error {
	if c.opts.TokenSource == nil {
		return fmt.Errorf("token expired and Options.TokenSource is not set: %w", cause)
	}
	c.mu.Lock()
	already, old := c.refreshed, c.token
	c.mu.Unlock()
	if already {
		return fmt.Errorf("the refreshed token was refused too: %w", cause)
	}
	ctx, cancel := context.WithTimeout(c.runCtx, tokenSourceTimeout)
	defer cancel()
	tok, err := c.opts.TokenSource(ctx)
	if err != nil {
		return errors.Join(cause, fmt.Errorf("token source: %w", err))
	}
	if tok == "" || tok == old {
		return fmt.Errorf("token source returned the expired token again: %w", cause)
	}
	c.mu.Lock()
	c.token, c.refreshed = tok, true
	c.mu.Unlock()
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
