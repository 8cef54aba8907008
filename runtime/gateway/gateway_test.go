package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleychat/parley/runtime/auth"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// fixedVerifier accepts every token as claims (tests of token expiry).
type fixedVerifier struct{ claims auth.Claims }

func (v fixedVerifier) Verify(context.Context, string) (auth.Claims, error) { return v.claims, nil }

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func TestUpgradeRefused(t *testing.T) {
	h := newHarness(t)
	wsHeaders := func(h http.Header) {
		h.Set("Connection", "Upgrade")
		h.Set("Upgrade", "websocket")
		h.Set("Sec-WebSocket-Version", "13")
		h.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	}
	tests := []struct {
		name     string
		method   string
		path     string
		header   func(http.Header)
		status   int
		code     string
		contains string
	}{
		{"wrong path", "GET", "/v1/other", nil, 404, wire.CodeNotFound, "/v1/ws"},
		{"POST", "POST", Path, nil, 405, wire.CodeInvalid, "GET"},
		{"no upgrade", "GET", Path, func(hd http.Header) { hd.Set("Authorization", "Bearer "+h.token("alice", "d")) }, 400, wire.CodeInvalid, "WebSocket upgrade"},
		{"no subprotocol", "GET", Path, func(hd http.Header) {
			wsHeaders(hd)
			hd.Set("Authorization", "Bearer "+h.token("alice", "d"))
		}, 400, wire.CodeInvalid, "parley.v1.proto, parley.v1.json"},
		{"unknown subprotocol", "GET", Path, func(hd http.Header) {
			wsHeaders(hd)
			hd.Set("Sec-WebSocket-Protocol", "chat, superchat")
			hd.Set("Authorization", "Bearer "+h.token("alice", "d"))
		}, 400, wire.CodeInvalid, "supported: parley.v1.proto, parley.v1.json"},
		{"no token", "GET", Path, func(hd http.Header) {
			wsHeaders(hd)
			hd.Set("Sec-WebSocket-Protocol", wire.SubprotocolJSON)
		}, 401, wire.CodeUnauthenticated, "token"},
		{"forged token", "GET", Path, func(hd http.Header) {
			wsHeaders(hd)
			hd.Set("Sec-WebSocket-Protocol", wire.SubprotocolJSON)
			tok, _ := auth.NewDevIssuer([]byte(strings.Repeat("x", auth.DevSecretBytes))).Issue("alice", "d", time.Hour)
			hd.Set("Authorization", "Bearer "+tok)
		}, 401, wire.CodeUnauthenticated, "signature"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, h.srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.header != nil {
				tc.header(req.Header)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body errorBody
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("body is not a JSON error: %v", err)
			}
			if resp.StatusCode != tc.status || body.Error.Code != tc.code || !strings.Contains(body.Error.Message, tc.contains) {
				t.Fatalf("got %d %+v, want %d %s mentioning %q", resp.StatusCode, body.Error, tc.status, tc.code, tc.contains)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("content type %q", ct)
			}
		})
	}
	if got := h.g.Connections(); got != 0 {
		t.Fatalf("%d connections after refused upgrades", got)
	}
}

func TestTokenExpiredRefusedBeforeUpgrade(t *testing.T) {
	dev := auth.NewHMACVerifier([]byte(strings.Repeat("k", auth.DevSecretBytes)))
	v := verifierFunc(func(ctx context.Context, tok string) (auth.Claims, error) {
		if tok == "expired" {
			return auth.Claims{}, wire.Errorf(wire.CodeTokenExpired, "token expired at 2020-01-01T00:00:00Z")
		}
		return dev.Verify(ctx, tok)
	})
	h := newHarness(t, func(o *harnessOpts) { o.verifier = v })
	d := websocket.Dialer{Subprotocols: []string{wire.SubprotocolProto}}
	_, resp, err := d.Dial(h.url+"?access_token=expired", nil)
	if err == nil {
		t.Fatal("upgrade with an expired token succeeded")
	}
	defer resp.Body.Close()
	var body errorBody
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusUnauthorized || body.Error.Code != wire.CodeTokenExpired {
		t.Fatalf("got %d %+v, want 401 token_expired", resp.StatusCode, body.Error)
	}
}

type verifierFunc func(context.Context, string) (auth.Claims, error)

func (f verifierFunc) Verify(ctx context.Context, tok string) (auth.Claims, error) {
	return f(ctx, tok)
}

func TestWelcomeBothSubprotocols(t *testing.T) {
	h := newHarness(t, func(o *harnessOpts) { o.cfg.MaxMessageBytes = 1000 })
	for _, sub := range []string{wire.SubprotocolProto, wire.SubprotocolJSON} {
		t.Run(sub, func(t *testing.T) {
			c := h.dial("alice", "phone", sub)
			w := c.welcome
			if w.UserId != "alice" || w.DeviceId != "phone" || w.SessionId == "" || w.GatewayId != "gateway-0" ||
				w.HeartbeatMs != 1000 || w.MaxMessageBytes != 1000 {
				t.Fatalf("welcome %v", w)
			}
			if before := c.roundTrip(); len(before) != 0 {
				t.Fatalf("unexpected frames %v", before)
			}
		})
	}
}

func TestQueryParamTokenAndOrigin(t *testing.T) {
	h := newHarness(t)
	d := websocket.Dialer{Subprotocols: []string{"other", wire.SubprotocolJSON}}
	hdr := http.Header{"Origin": {"https://elsewhere.example"}}
	conn, _, err := d.Dial(h.url+"?access_token="+h.token("bob", "web"), hdr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	if conn.Subprotocol() != wire.SubprotocolJSON {
		t.Fatalf("negotiated %q", conn.Subprotocol())
	}
	mt, data, err := conn.ReadMessage()
	if err != nil || mt != websocket.TextMessage {
		t.Fatalf("read: %v type %d", err, mt)
	}
	f, err := wire.Codec{}.DecodeServer(data)
	if err != nil || f.GetWelcome().GetUserId() != "bob" {
		t.Fatalf("welcome %v, %v", f, err)
	}
}

func TestBadFrames(t *testing.T) {
	h := newHarness(t)
	t.Run("wrong frame type, undecodable, no body: answered, connection stays", func(t *testing.T) {
		c := h.dial("alice", "d1", wire.SubprotocolProto)
		c.writeRaw(websocket.TextMessage, []byte(`{"ping":{}}`))
		if e := c.next().GetError(); e.GetCode() != wire.CodeInvalid || !strings.Contains(e.GetMessage(), "binary") {
			t.Fatalf("error %v", e)
		}
		c.writeRaw(websocket.BinaryMessage, []byte{0xff, 0xff, 0xff})
		if e := c.next().GetError(); e.GetCode() != wire.CodeInvalid || !strings.Contains(e.GetMessage(), "undecodable") {
			t.Fatalf("error %v", e)
		}
		c.sendFrame(&parleyv1.ClientFrame{Id: 42})
		f := c.next()
		if f.GetId() != 42 || f.GetError().GetCode() != wire.CodeInvalid || !strings.Contains(f.GetError().GetMessage(), "no known body") {
			t.Fatalf("frame %v", f)
		}
		c.roundTrip()
	})
	t.Run("json unknown field", func(t *testing.T) {
		c := h.dial("alice", "d2", wire.SubprotocolJSON)
		c.writeRaw(websocket.TextMessage, []byte(`{"id":"3","shout":{}}`))
		if e := c.next().GetError(); e.GetCode() != wire.CodeInvalid || !strings.Contains(e.GetMessage(), "shout") {
			t.Fatalf("error %v", e)
		}
		c.writeRaw(websocket.BinaryMessage, []byte(`{"ping":{}}`))
		if e := c.next().GetError(); e.GetCode() != wire.CodeInvalid || !strings.Contains(e.GetMessage(), "text") {
			t.Fatalf("error %v", e)
		}
		c.roundTrip()
	})
	t.Run("too many in a row", func(t *testing.T) {
		c := h.dial("alice", "d3", wire.SubprotocolJSON)
		for range MaxInvalidFrames + 1 {
			c.writeRaw(websocket.TextMessage, []byte(`not json`))
		}
		code, frames := c.closed()
		if code != wire.ClosePolicyViolation || len(frames) != MaxInvalidFrames+1 {
			t.Fatalf("close %d after %d frames, want %d after %d", code, len(frames), wire.ClosePolicyViolation, MaxInvalidFrames+1)
		}
	})
	t.Run("valid frames reset the run", func(t *testing.T) {
		c := h.dial("alice", "d4", wire.SubprotocolJSON)
		for range 3 {
			for range MaxInvalidFrames {
				c.writeRaw(websocket.TextMessage, []byte(`not json`))
			}
			c.roundTrip()
		}
	})
	if got := counter(h.m.Errors.WithLabelValues(wire.CodeInvalid)); got < 2*MaxInvalidFrames {
		t.Fatalf("invalid errors counted %v", got)
	}
}

func TestReadLimit(t *testing.T) {
	h := newHarness(t)
	c := h.dial("alice", "d", wire.SubprotocolProto)
	c.writeRaw(websocket.BinaryMessage, bytes.Repeat([]byte{0}, wire.MaxFrameBytes+1))
	// Issue 14: the client is told why before the close, as for any refused
	// request: a too_large error frame (id 0: the frame was never read).
	if f := c.next(); f.GetError().GetCode() != wire.CodeTooLarge || f.GetId() != 0 {
		t.Fatalf("frame before the close: %v, want a too_large error with id 0", f)
	}
	if code, _ := c.closed(); code != websocket.CloseMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	eventually(t, "too_large counted", func() bool { return counter(h.m.Errors.WithLabelValues(wire.CodeTooLarge)) == 1 })
	// A frame at the limit is read (and answered, here as undecodable).
	c = h.dial("alice", "d2", wire.SubprotocolProto)
	c.writeRaw(websocket.BinaryMessage, bytes.Repeat([]byte{0xff}, wire.MaxFrameBytes))
	if e := c.next().GetError(); e.GetCode() != wire.CodeInvalid {
		t.Fatalf("error %v", e)
	}
}

func TestIdleTimeout(t *testing.T) {
	h := newHarness(t, func(o *harnessOpts) { o.cfg.Heartbeat = 40 * time.Millisecond })
	active := h.dial("alice", "active", wire.SubprotocolProto)
	idle := h.dial("alice", "idle", wire.SubprotocolProto)
	// Pinging keeps active open well past the idle timeout of idle.
	stop := make(chan struct{})
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				_ = active.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second))
			}
		}
	}()
	code, _ := idle.closed()
	if code != wire.CloseHeartbeatTimeout {
		t.Fatalf("close code %d, want %d", code, wire.CloseHeartbeatTimeout)
	}
	// The shared ticker keeps refreshing the active session in the registry
	// (presence TTL is 3 heartbeats here).
	connected := time.Now()
	eventually(t, "presence heartbeat", func() bool {
		live, err := h.ps.Registry().Sessions(context.Background(), []string{"alice"})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range live["alice"] {
			if s.SessionID == active.welcome.SessionId && s.Expires.After(connected.Add(3*40*time.Millisecond)) {
				return true
			}
		}
		return false
	})
	close(stop)
	<-pinged
	if before := active.roundTrip(); len(before) != 0 {
		t.Fatalf("active session got %v", before)
	}
}

func TestTokenExpiryClosesConnection(t *testing.T) {
	exp := time.Now().Add(-auth.Leeway + 150*time.Millisecond)
	h := newHarness(t, func(o *harnessOpts) {
		o.verifier = fixedVerifier{auth.Claims{UserID: "alice", DeviceID: "d", ExpiresAt: exp}}
	})
	c := h.dial("alice", "d", wire.SubprotocolJSON)
	code, frames := c.closed()
	if code != wire.CloseTokenExpired {
		t.Fatalf("close code %d, want %d", code, wire.CloseTokenExpired)
	}
	if len(frames) == 0 || frames[len(frames)-1].GetError().GetCode() != wire.CodeTokenExpired {
		t.Fatalf("frames before close %v, want a token_expired error last", frames)
	}
	if wire.ShouldReconnect(code) {
		t.Fatal("token expiry must not say reconnect")
	}
}

func TestDrain(t *testing.T) {
	h := newHarness(t)
	var clients []*wsClient
	for i, sub := range []string{wire.SubprotocolProto, wire.SubprotocolJSON, wire.SubprotocolProto} {
		clients = append(clients, h.dial("alice", fmt.Sprintf("d%d", i), sub))
	}
	h.waitConnections(len(clients))
	if got := counter(h.m.Connections); got != float64(len(clients)) {
		t.Fatalf("connections gauge %v", got)
	}
	window := 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- h.g.Drain(ctx, window) }()
	eventually(t, "draining", h.g.Draining)

	// New connections are refused while draining.
	d := websocket.Dialer{Subprotocols: []string{wire.SubprotocolProto}}
	_, resp, err := d.Dial(h.url, http.Header{"Authorization": {"Bearer " + h.token("bob", "d")}})
	if err == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("dial while draining: %v %v", err, resp)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), wire.CodeUnavailable) {
		t.Fatalf("body %s", body)
	}

	for _, c := range clients {
		code, frames := c.closed()
		if code != wire.CloseDrain || !wire.ShouldReconnect(code) {
			t.Fatalf("close code %d, want %d", code, wire.CloseDrain)
		}
		if len(frames) != 1 || frames[0].GetReconnect().GetReason() != DrainReason ||
			time.Duration(frames[0].GetReconnect().GetAfterMs())*time.Millisecond >= window {
			t.Fatalf("frames before close %v, want one reconnect within the window", frames)
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("drain: %v", err)
	}
	if n := h.g.Connections(); n != 0 || counter(h.m.Connections) != 0 {
		t.Fatalf("%d connections (gauge %v) after drain", n, counter(h.m.Connections))
	}
}

func TestDrainForcedWhenContextEnds(t *testing.T) {
	h := newHarness(t)
	// A client that never reads cannot answer the close handshake.
	c := h.dialNoRead("alice", "stuck", wire.SubprotocolProto)
	h.waitConnections(1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	// The window is long: the context ends first.
	go func() {
		eventually(t, "draining", h.g.Draining)
		cancel()
	}()
	err := h.g.Drain(ctx, time.Hour)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("drain: %v, want context.Canceled", err)
	}
	h.waitConnections(0)
	c.startReading()
	c.closed()
}

func TestPushesFanOutEncodedOnce(t *testing.T) {
	h := newHarness(t)
	a1 := h.dial("alice", "phone", wire.SubprotocolProto)
	a2 := h.dial("alice", "laptop", wire.SubprotocolJSON)
	b1 := h.dial("bob", "phone", wire.SubprotocolJSON)
	c1 := h.dial("carol", "phone", wire.SubprotocolProto)
	msg := &parleyv1.Message{ConversationId: "g:7", Seq: 3, MessageId: 99, SenderId: "alice", Text: "hi", CreatedAt: time.Now().UnixMilli()}
	n := h.g.deliver(&parleyv1.Delivery{
		UserIds:         []string{"alice", "bob", "nobody"},
		ExceptSessionId: a1.welcome.SessionId,
		Body:            &parleyv1.Delivery_Message{Message: msg},
	})
	if n != 2 {
		t.Fatalf("delivered to %d sessions, want 2", n)
	}
	for _, c := range []*wsClient{a2, b1} {
		if got := c.next().GetMessage(); got.GetSeq() != 3 || got.GetText() != "hi" {
			t.Fatalf("got %v", got)
		}
	}
	for _, c := range []*wsClient{a1, c1} {
		if before := c.roundTrip(); len(before) != 0 {
			t.Fatalf("excluded session got %v", before)
		}
	}
	if got := counter(h.m.MessagesDelivered); got != 2 {
		t.Fatalf("messages delivered %v", got)
	}
}

func TestSlowConsumerQueuePolicy(t *testing.T) {
	h := newHarness(t, func(o *harnessOpts) { o.cfg.SendQueue = 4 })
	c := h.dial("alice", "d", wire.SubprotocolProto)
	var s *session
	h.g.hub.sessions("alice", func(x *session) { s = x })
	// Hold the writer back so the queue fills.
	s.mu.Lock()
	if s.writing {
		s.mu.Unlock()
		eventually(t, "writer idle", func() bool { s.mu.Lock(); defer s.mu.Unlock(); return !s.writing })
		s.mu.Lock()
	}
	s.writing = true
	s.mu.Unlock()

	typing := &pushFrame{frame: &parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Typing{Typing: &parleyv1.Typing{ConversationId: "g:1", UserId: "bob"}}}, droppable: true}
	message := func(seq uint64) *pushFrame {
		return &pushFrame{frame: &parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Message{Message: &parleyv1.Message{ConversationId: "g:1", Seq: seq}}}}
	}
	queued := func() (all, droppable int) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, f := range s.queue {
			if f.droppable {
				droppable++
			}
		}
		return len(s.queue), droppable
	}
	for i := range 2 {
		if !typing.push(h.g, s) || !message(uint64(i+1)).push(h.g, s) {
			t.Fatal("not queued below the bound")
		}
	}
	if typing.push(h.g, s) {
		t.Fatal("typing queued over the bound")
	}
	// A message evicts the queued typing frames.
	if !message(3).push(h.g, s) {
		t.Fatal("message not queued after evicting typing")
	}
	if all, drop := queued(); all != 3 || drop != 0 {
		t.Fatalf("queue %d frames, %d droppable; want 3, 0", all, drop)
	}
	if !message(4).push(h.g, s) {
		t.Fatal("message not queued at the bound")
	}
	if message(5).push(h.g, s) {
		t.Fatal("message queued over the bound")
	}
	if got := counter(h.m.SlowConsumers); got != 1 {
		t.Fatalf("slow consumers %v", got)
	}
	// Start the held-back writer: the close is written without the queue.
	s.mu.Lock()
	s.writing = false
	s.mu.Unlock()
	go s.writeLoop()
	code, frames := c.closed()
	if code != wire.CloseSlowConsumer || len(frames) != 0 {
		t.Fatalf("close %d after %v, want %d without the queued frames", code, frames, wire.CloseSlowConsumer)
	}
}

func TestSlowConsumerDisconnected(t *testing.T) {
	h := newHarness(t, func(o *harnessOpts) { o.cfg.SendQueue = 8 })
	stalled := h.dialNoRead("alice", "stalled", wire.SubprotocolProto)
	healthy := h.dial("alice", "healthy", wire.SubprotocolJSON)
	h.waitConnections(2)
	big := strings.Repeat("x", 60<<10)
	pushed := 0
	for counter(h.m.SlowConsumers) == 0 {
		if pushed > 10000 {
			t.Fatal("stalled client never overflowed")
		}
		pushed++
		h.g.deliver(&parleyv1.Delivery{UserIds: []string{"alice"}, ExceptSessionId: healthy.welcome.GetSessionId(),
			Body: &parleyv1.Delivery_Message{Message: &parleyv1.Message{ConversationId: "g:1", Seq: uint64(pushed), Text: big}}})
	}
	// Once the client reads again, it gets what was in flight, then the close.
	stalled.startReading()
	code, _ := stalled.closed()
	if code != wire.CloseSlowConsumer || !wire.ShouldReconnect(code) {
		t.Fatalf("close code %d, want %d", code, wire.CloseSlowConsumer)
	}
	h.waitConnections(1)
	if before := healthy.roundTrip(); len(before) != 0 {
		t.Fatalf("healthy session got %d frames", len(before))
	}
}
