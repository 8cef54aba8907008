package client_test

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	"github.com/parleychat/parley/runtime/client/internal/fakegw"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

const dmAB = "dm:alice:bob"

// recorder collects a client's events from its Events channel.
type recorder struct {
	mu     sync.Mutex
	events []client.Event
	done   chan struct{}
}

func record(t *testing.T, c *client.Client) *recorder {
	t.Helper()
	r := &recorder{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range c.Events() {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = c.Close()
		<-r.done
	})
	return r
}

func (r *recorder) all() []client.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// seqs returns the seqs of the MessageEvents of conv, in arrival order.
func (r *recorder) seqs(conv string) []uint64 {
	var out []uint64
	for _, ev := range r.all() {
		if m, ok := ev.(client.MessageEvent); ok && m.Message.GetConversationId() == conv {
			out = append(out, m.Message.GetSeq())
		}
	}
	return out
}

func (r *recorder) count(match func(client.Event) bool) int {
	n := 0
	for _, ev := range r.all() {
		if match(ev) {
			n++
		}
	}
	return n
}

func (r *recorder) closed() (client.ClosedEvent, bool) {
	for _, ev := range r.all() {
		if c, ok := ev.(client.ClosedEvent); ok {
			return c, true
		}
	}
	return client.ClosedEvent{}, false
}

func isReconnected(ev client.Event) bool { _, ok := ev.(client.ReconnectedEvent); return ok }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func upTo(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func newServer(t *testing.T) *fakegw.Server {
	srv := fakegw.New(t)
	srv.AddToken("ta", "alice")
	srv.AddToken("tb", "bob")
	return srv
}

func dial(t *testing.T, srv *fakegw.Server, token string, mod func(*client.Options)) *client.Client {
	t.Helper()
	opts := client.Options{URL: srv.URL, Token: token, Backoff: client.Backoff{Min: 5 * time.Millisecond, Max: 50 * time.Millisecond},
		Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, opts)
	if err != nil {
		t.Fatalf("dial as %s: %v", token, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSendAndReceiveBothSubprotocols(t *testing.T) {
	for _, sub := range []string{wire.SubprotocolProto, wire.SubprotocolJSON} {
		t.Run(sub, func(t *testing.T) {
			srv := newServer(t)
			alice := dial(t, srv, "ta", func(o *client.Options) { o.Subprotocol = sub })
			bob := dial(t, srv, "tb", func(o *client.Options) { o.Subprotocol = sub })
			ra, rb := record(t, alice), record(t, bob)
			if alice.UserID() != "alice" {
				t.Fatalf("UserID %q, want alice", alice.UserID())
			}
			for i, text := range []string{"hi bob", "how are you"} {
				ok, err := alice.Send(ctxT(t), dmAB, text)
				if err != nil {
					t.Fatalf("send %q: %v", text, err)
				}
				if ok.GetSeq() != uint64(i+1) || ok.GetConversationId() != dmAB {
					t.Fatalf("send_ok %v, want seq %d in %s", ok, i+1, dmAB)
				}
			}
			waitFor(t, "bob to get both messages", func() bool { return len(rb.seqs(dmAB)) == 2 })
			// The sender sees its own messages once, although the fake also
			// pushes them back to the sending connection.
			waitFor(t, "alice to see her own messages", func() bool { return len(ra.seqs(dmAB)) == 2 })
			for _, ev := range rb.all() {
				if m, ok := ev.(client.MessageEvent); ok && (m.Message.GetSenderId() != "alice" || m.Message.GetText() == "") {
					t.Fatalf("bob got %v, want alice's text", m.Message)
				}
			}
			if err := alice.Ping(ctxT(t)); err != nil {
				t.Fatalf("ping: %v", err)
			}
			if got := ra.seqs(dmAB); !slices.Equal(got, []uint64{1, 2}) {
				t.Fatalf("alice saw %v, want [1 2] exactly once", got)
			}
			if got := rb.seqs(dmAB); !slices.Equal(got, []uint64{1, 2}) {
				t.Fatalf("bob saw %v, want [1 2]", got)
			}
		})
	}
}

func TestDialRefusedToken(t *testing.T) {
	srv := newServer(t)
	_, err := client.Dial(ctxT(t), client.Options{URL: srv.URL, Token: "forged"})
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeUnauthenticated {
		t.Fatalf("dial with a forged token: %v, want *wire.Error unauthenticated", err)
	}
	_, err = client.Dial(ctxT(t), client.Options{URL: srv.URL})
	if !errors.As(err, &we) || we.Code != wire.CodeUnauthenticated {
		t.Fatalf("dial without a token: %v, want *wire.Error unauthenticated", err)
	}
}

func TestDialRefreshesAnExpiredTokenOnce(t *testing.T) {
	srv := newServer(t)
	srv.AddToken("old", "alice")
	srv.ExpireToken("old")
	var calls atomic.Int32
	c := dial(t, srv, "old", func(o *client.Options) {
		o.TokenSource = func(context.Context) (string, error) { calls.Add(1); return "ta", nil }
	})
	if c.UserID() != "alice" || calls.Load() != 1 {
		t.Fatalf("user %q after %d token source calls, want alice after 1", c.UserID(), calls.Load())
	}
}

func TestGapIsPulled(t *testing.T) {
	srv := newServer(t)
	srv.Lock()
	srv.DropPush = func(m *parleyv1.Message, user string) bool { return user == "bob" && m.Seq == 2 }
	srv.Unlock()
	bob := dial(t, srv, "tb", nil)
	rb := record(t, bob)
	for _, text := range []string{"one", "two", "three"} {
		srv.Post(dmAB, "alice", text)
	}
	waitFor(t, "bob to get 1..3", func() bool { return len(rb.seqs(dmAB)) >= 3 })
	if got := rb.seqs(dmAB); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("bob saw %v, want [1 2 3]", got)
	}
	if bob.Stats().Pulled == 0 {
		t.Fatal("Stats.Pulled is 0: the lost push was not pulled")
	}
	waitFor(t, "bob to ack up to 3", func() bool {
		for _, f := range srv.Frames("bob") {
			if a := f.GetAck(); a != nil && a.GetConversationId() == dmAB && a.GetSeq() == 3 {
				return true
			}
		}
		return false
	})
}

func TestReconnectSyncsMissedMessages(t *testing.T) {
	srv := newServer(t)
	srv.Post(dmAB, "alice", "before bob connects") // baseline: bob starts after it
	bob := dial(t, srv, "tb", nil)
	rb := record(t, bob)
	if err := bob.SubscribePresence(ctxT(t), []string{"alice"}); err != nil {
		t.Fatal(err)
	}
	// A frame written just before a drop can be lost with the connection
	// (which is why the client renews the subscription); make sure this one
	// arrived, so the count below is exact.
	if err := bob.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	srv.Lock()
	srv.DropPush = func(*parleyv1.Message, string) bool { return true } // bob is cut off
	srv.Unlock()
	for _, text := range []string{"a", "b", "c"} {
		srv.Post(dmAB, "alice", text)
	}
	// And a group bob was added to meanwhile: all of it is new to him.
	srv.AddMembers("g:1", "alice", "bob")
	srv.Post("g:1", "alice", "welcome")
	srv.Lock()
	srv.DropPush = nil
	srv.Unlock()
	srv.CloseAll(wire.CloseDrain, "drain")

	waitFor(t, "bob to reconnect and catch up", func() bool {
		return len(rb.seqs(dmAB)) == 3 && len(rb.seqs("g:1")) == 2
	})
	if got := rb.seqs(dmAB); !slices.Equal(got, []uint64{2, 3, 4}) {
		t.Fatalf("bob saw %v in %s, want [2 3 4] (1 predates his baseline)", got, dmAB)
	}
	if got := rb.seqs("g:1"); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("bob saw %v in g:1, want [1 2]", got)
	}
	if n := rb.count(isReconnected); n != 1 {
		t.Fatalf("%d ReconnectedEvents, want 1", n)
	}
	if rb.count(func(ev client.Event) bool { _, ok := ev.(client.ReconnectingEvent); return ok }) == 0 {
		t.Fatal("no ReconnectingEvent")
	}
	waitFor(t, "the presence subscription to be renewed", func() bool {
		n := 0
		for _, f := range srv.Frames("bob") {
			if f.GetPresenceSub() != nil {
				n++
			}
		}
		if n > 2 {
			t.Fatalf("%d presence_sub frames, want 2", n)
		}
		return n == 2
	})
	if bob.Stats().Reconnects != 1 {
		t.Fatalf("Stats.Reconnects %d, want 1", bob.Stats().Reconnects)
	}
}

func TestResumeFromCursors(t *testing.T) {
	srv := newServer(t)
	for _, text := range []string{"1", "2", "3"} {
		srv.Post(dmAB, "alice", text)
	}
	bob := dial(t, srv, "tb", func(o *client.Options) { o.Cursors = map[string]uint64{dmAB: 1} })
	rb := record(t, bob)
	waitFor(t, "messages after the cursor", func() bool { return len(rb.seqs(dmAB)) == 2 })
	for _, ev := range rb.all() {
		if m, ok := ev.(client.MessageEvent); ok && !m.Pulled {
			t.Fatalf("resumed message %d not marked Pulled", m.Message.GetSeq())
		}
	}
	if got := bob.Cursors()[dmAB]; got != 3 {
		t.Fatalf("cursor %d, want 3", got)
	}
}

func TestSendRetriesWithTheSameClientMsgID(t *testing.T) {
	cases := []struct {
		name string
		fail *wire.Error
	}{
		{"timeout", wire.Errorf(wire.CodeTimeout, "outcome unknown")},
		{"unavailable", &wire.Error{Code: wire.CodeUnavailable, Message: "not enqueued", RetryAfterMs: 5}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t)
			var calls atomic.Int32
			srv.Lock()
			srv.OnSend = func(string, *parleyv1.Send) *wire.Error {
				if calls.Add(1) <= 2 {
					return tc.fail
				}
				return nil
			}
			srv.Unlock()
			alice := dial(t, srv, "ta", nil)
			record(t, alice)
			ok, err := alice.Send(ctxT(t), dmAB, "hello")
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			assertOneSend(t, srv, ok, 3)
		})
	}
}

// assertOneSend checks that attempts send frames all carried one
// client_msg_id and that one message was stored.
func assertOneSend(t *testing.T, srv *fakegw.Server, ok *parleyv1.SendOk, attempts int) {
	t.Helper()
	var ids []string
	for _, f := range srv.Frames("alice") {
		if s := f.GetSend(); s != nil {
			ids = append(ids, s.GetClientMsgId())
		}
	}
	if len(ids) != attempts {
		t.Fatalf("%d send frames, want %d", len(ids), attempts)
	}
	for _, id := range ids {
		if id != ids[0] || len(id) != 32 {
			t.Fatalf("client_msg_ids %v: want one 32-hex-digit id on every attempt", ids)
		}
	}
	if log := srv.Log(dmAB); len(log) != 1 || ok.GetSeq() != 1 || ok.GetClientMsgId() != ids[0] {
		t.Fatalf("stored %d messages, send_ok %v; want one message at seq 1", len(log), ok)
	}
}

func TestSendRetriesAfterConnectionLoss(t *testing.T) {
	srv := newServer(t)
	var calls atomic.Int32
	srv.Lock()
	srv.AfterSend = func(user string, _ *parleyv1.Send, _ *parleyv1.SendOk) bool {
		if calls.Add(1) > 1 {
			return false
		}
		// Stored, but the reply is lost with the connection.
		go func() {
			for _, c := range srv.Conns(user) {
				c.Drop()
			}
		}()
		return true
	}
	srv.Unlock()
	alice := dial(t, srv, "ta", nil)
	ra := record(t, alice)
	ok, err := alice.Send(ctxT(t), dmAB, "once")
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	assertOneSend(t, srv, ok, 2)
	waitFor(t, "alice's own message", func() bool { return len(ra.seqs(dmAB)) == 1 })
}

func TestSendErrorsAreWireErrors(t *testing.T) {
	srv := newServer(t)
	alice := dial(t, srv, "ta", nil)
	record(t, alice)
	_, err := alice.Send(ctxT(t), "g:unknown", "hi")
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeNotMember {
		t.Fatalf("send to a group alice is not in: %v, want *wire.Error not_member", err)
	}
	// A deadline while the server keeps timing out: the error says both.
	srv.Lock()
	srv.OnSend = func(string, *parleyv1.Send) *wire.Error { return wire.Errorf(wire.CodeTimeout, "slow") }
	srv.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = alice.Send(ctx, dmAB, "hi")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &we) || we.Code != wire.CodeTimeout {
		t.Fatalf("send past its deadline: %v, want DeadlineExceeded and *wire.Error timeout", err)
	}
}

func TestTerminalCloseStops(t *testing.T) {
	for _, code := range []int{wire.CloseUnauthenticated, wire.ClosePolicyViolation} {
		srv := newServer(t)
		alice := dial(t, srv, "ta", nil)
		ra := record(t, alice)
		srv.CloseAll(code, "go away")
		waitFor(t, "the ClosedEvent", func() bool { _, ok := ra.closed(); return ok })
		ev, _ := ra.closed()
		if ev.Code != code {
			t.Fatalf("ClosedEvent code %d, want %d (%v)", ev.Code, code, ev.Err)
		}
		<-alice.Done()
		if _, err := alice.Send(ctxT(t), dmAB, "hi"); !errors.Is(err, client.ErrClosed) {
			t.Fatalf("send after a terminal close: %v, want ErrClosed", err)
		}
		if n := srv.Dials(); n != 1 {
			t.Fatalf("%d dials after close code %d, want 1 (no reconnect)", n, code)
		}
	}
}

func TestTokenExpiredRefreshesOnce(t *testing.T) {
	srv := newServer(t)
	srv.AddToken("t1", "alice")
	srv.AddToken("t2", "alice")
	var calls atomic.Int32
	alice := dial(t, srv, "t1", func(o *client.Options) {
		o.TokenSource = func(context.Context) (string, error) { calls.Add(1); return "t2", nil }
	})
	ra := record(t, alice)
	srv.ExpireToken("t1")
	srv.CloseAll(wire.CloseTokenExpired, "token expired")
	waitFor(t, "the reconnect with the fresh token", func() bool { return ra.count(isReconnected) == 1 })
	if calls.Load() != 1 {
		t.Fatalf("token source called %d times, want 1", calls.Load())
	}
	if _, err := alice.Send(ctxT(t), dmAB, "still here"); err != nil {
		t.Fatalf("send after the refresh: %v", err)
	}
}

func TestTokenExpiredNeverLoops(t *testing.T) {
	cases := []struct {
		name   string
		source func(srv *fakegw.Server) func(context.Context) (string, error)
		calls  int32
	}{
		{"no token source", func(*fakegw.Server) func(context.Context) (string, error) { return nil }, 0},
		{"token source fails", func(*fakegw.Server) func(context.Context) (string, error) {
			return func(context.Context) (string, error) { return "", errors.New("identity provider down") }
		}, 1},
		{"fresh token expired too", func(srv *fakegw.Server) func(context.Context) (string, error) {
			srv.AddToken("t2", "alice")
			srv.ExpireToken("t2")
			return func(context.Context) (string, error) { return "t2", nil }
		}, 1},
		{"same token again", func(*fakegw.Server) func(context.Context) (string, error) {
			return func(context.Context) (string, error) { return "t1", nil }
		}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t)
			srv.AddToken("t1", "alice")
			src := tc.source(srv)
			var calls atomic.Int32
			var wrapped func(context.Context) (string, error)
			if src != nil {
				wrapped = func(ctx context.Context) (string, error) { calls.Add(1); return src(ctx) }
			}
			alice := dial(t, srv, "t1", func(o *client.Options) { o.TokenSource = wrapped })
			ra := record(t, alice)
			srv.ExpireToken("t1")
			srv.CloseAll(wire.CloseTokenExpired, "token expired")
			waitFor(t, "the ClosedEvent", func() bool { _, ok := ra.closed(); return ok })
			ev, _ := ra.closed()
			var we *wire.Error
			if ev.Code != wire.CloseTokenExpired || !errors.As(ev.Err, &we) || we.Code != wire.CodeTokenExpired {
				t.Fatalf("ClosedEvent %+v, want code %d and a token_expired *wire.Error", ev, wire.CloseTokenExpired)
			}
			if calls.Load() != tc.calls {
				t.Fatalf("token source called %d times, want %d", calls.Load(), tc.calls)
			}
			if n := srv.Dials(); n > 2 {
				t.Fatalf("%d dials: the client looped", n)
			}
		})
	}
}

func TestReconnectFrame(t *testing.T) {
	srv := newServer(t)
	alice := dial(t, srv, "ta", nil)
	ra := record(t, alice)
	srv.Push("alice", &parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Reconnect{Reconnect: &parleyv1.Reconnect{AfterMs: 10, Reason: "drain"}}})
	waitFor(t, "the reconnect", func() bool { return ra.count(isReconnected) == 1 })
	if _, closed := ra.closed(); closed {
		t.Fatal("ClosedEvent after a Reconnect frame")
	}
	for _, ev := range ra.all() {
		if r, ok := ev.(client.ReconnectingEvent); ok && r.Delay != 0 {
			t.Fatalf("reconnect after a Reconnect frame waited %v more; the frame's delay is the jitter", r.Delay)
		}
	}
	if _, err := alice.Send(ctxT(t), dmAB, "after drain"); err != nil {
		t.Fatalf("send after reconnect: %v", err)
	}
}

func TestSlowReaderLosesNothing(t *testing.T) {
	srv := newServer(t)
	bob := dial(t, srv, "tb", func(o *client.Options) { o.EventBuffer = 4 })
	// More than the queue, the channel and the early-message buffer hold.
	const n = 400
	for i := range n {
		srv.Post(dmAB, "alice", "m")
		if i%50 == 0 {
			srv.Push("bob", &parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Typing{Typing: &parleyv1.Typing{ConversationId: dmAB, UserId: "alice"}}})
		}
	}
	// The fake writes pushes before Post returns, so once the pong is read
	// every push has been processed. Only then does the application read.
	if err := bob.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	rb := record(t, bob)
	waitFor(t, "every message", func() bool { return len(rb.seqs(dmAB)) >= n })
	if got := rb.seqs(dmAB); !slices.Equal(got, upTo(1, n)) {
		t.Fatalf("bob saw %d messages %v, want 1..%d once each in order", len(got), got, n)
	}
	if bob.Stats().Pulled == 0 {
		t.Fatal("nothing was pulled although the queue overflowed")
	}
}

func TestOnEventCallback(t *testing.T) {
	srv := newServer(t)
	var mu sync.Mutex
	var got []uint64
	var closed int
	bob := dial(t, srv, "tb", func(o *client.Options) {
		o.OnEvent = func(ev client.Event) {
			mu.Lock()
			defer mu.Unlock()
			switch e := ev.(type) {
			case client.MessageEvent:
				got = append(got, e.Message.GetSeq())
			case client.ClosedEvent:
				closed++
			}
		}
	})
	if bob.Events() != nil {
		t.Fatal("Events() is not nil with OnEvent set")
	}
	srv.Post(dmAB, "alice", "x")
	srv.Post(dmAB, "alice", "y")
	waitFor(t, "callbacks", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	_ = bob.Close()
	mu.Lock()
	defer mu.Unlock()
	if closed != 1 {
		t.Fatalf("%d ClosedEvents after Close, want 1", closed)
	}
}

func TestCloseStopsEveryGoroutine(t *testing.T) {
	srv := newServer(t)
	base := runtime.NumGoroutine()
	alice := dial(t, srv, "ta", nil)
	bob := dial(t, srv, "tb", nil)
	ra := record(t, alice)
	if _, err := alice.Send(ctxT(t), dmAB, "hi"); err != nil {
		t.Fatal(err)
	}
	// Bob is stuck reconnecting to a server that refuses him, with a request waiting.
	srv.Lock()
	srv.Refuse = true
	srv.Unlock()
	for _, c := range srv.Conns("bob") {
		c.Drop()
	}
	waitFor(t, "bob to lose his connection", func() bool { return !bob.Connected() })
	errc := make(chan error, 1)
	go func() {
		_, err := bob.Send(context.Background(), dmAB, "queued")
		errc <- err
	}()
	waitFor(t, "a refused reconnect", func() bool { return srv.Dials() >= 4 })
	_ = bob.Close()
	if err := <-errc; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("send pending at Close: %v, want ErrClosed", err)
	}
	_ = alice.Close()
	<-ra.done
	waitFor(t, "the goroutines to end", func() bool { return runtime.NumGoroutine() <= base })
}

func TestTypingReadAndErrorsFromFireAndForgetFrames(t *testing.T) {
	srv := newServer(t)
	alice := dial(t, srv, "ta", nil)
	bob := dial(t, srv, "tb", nil)
	ra, rb := record(t, alice), record(t, bob)
	if _, err := alice.Send(ctxT(t), dmAB, "hi"); err != nil {
		t.Fatal(err)
	}
	if err := alice.Typing(ctxT(t), dmAB); err != nil {
		t.Fatal(err)
	}
	if err := bob.Read(ctxT(t), dmAB, 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob to see alice typing", func() bool {
		return rb.count(func(ev client.Event) bool { _, ok := ev.(client.TypingEvent); return ok }) == 1
	})
	waitFor(t, "alice to get bob's read receipt", func() bool {
		return ra.count(func(ev client.Event) bool {
			r, ok := ev.(client.ReceiptEvent)
			return ok && r.Receipt.GetUserId() == "bob" && r.Receipt.GetKind() == parleyv1.ReceiptKind_RECEIPT_KIND_READ && r.Receipt.GetSeq() == 1
		}) == 1
	})
	// An error frame that answers no request reaches the application.
	srv.Push("alice", wire.ErrorFrame(0, wire.CodeInvalid, "bad ack", 0))
	waitFor(t, "the ErrorEvent", func() bool {
		return ra.count(func(ev client.Event) bool {
			e, ok := ev.(client.ErrorEvent)
			return ok && e.Err.Code == wire.CodeInvalid
		}) == 1
	})
}

func TestHeartbeatDetectsADeadLink(t *testing.T) {
	srv := newServer(t)
	srv.Lock()
	srv.HeartbeatMs = 20
	srv.Unlock()
	alice := dial(t, srv, "ta", nil)
	ra := record(t, alice)
	waitFor(t, "pings at the announced interval", func() bool {
		n := 0
		for _, f := range srv.Frames("alice") {
			if f.GetPing() != nil {
				n++
			}
		}
		return n >= 3
	})
	if ra.count(isReconnected) != 0 {
		t.Fatal("reconnected although the link answered every ping")
	}
	srv.Lock()
	srv.Silent = true
	srv.Unlock()
	waitFor(t, "the client to give up on the silent link", func() bool {
		return ra.count(func(ev client.Event) bool { _, ok := ev.(client.ReconnectingEvent); return ok }) > 0
	})
	srv.Lock()
	srv.Silent = false
	srv.Unlock()
	waitFor(t, "the reconnect", func() bool { return ra.count(isReconnected) >= 1 })
}
