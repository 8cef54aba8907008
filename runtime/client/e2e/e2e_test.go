// Package e2e runs the client SDK against the real embedded server
// (runtime/server): a gateway, the chat role, Pebble and the in-memory bus in
// one process, reached over real sockets.
package e2e

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/client"
	"github.com/parleychat/parley/runtime/client/cli"
	"github.com/parleychat/parley/runtime/presence"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/server"
	"github.com/parleychat/parley/runtime/wire"
)

func TestMain(m *testing.M) {
	// The server logs through slog's default; keep test output to warnings.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}

type env struct {
	t      *testing.T
	srv    *server.Server
	addr   string // host:port of the server
	secret []byte // the dev signing secret
	issuer interface {
		Issue(userID, deviceID string, ttl time.Duration) (string, error)
	}
}

func start(t *testing.T) *env {
	t.Helper()
	cfg := server.Config{
		DataDir:     t.TempDir(),
		Presence:    presence.Config{Heartbeat: time.Second, TTL: 3 * time.Second, Grace: 100 * time.Millisecond},
		DrainWindow: 100 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("server.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("server.Run: %v", err)
		}
	})
	if s.DevIssuer == nil {
		t.Fatal("the embedded server is not in dev auth mode")
	}
	secret, err := auth.LoadOrCreateDevSecret(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: s, addr: ln.Addr().String(), secret: secret, issuer: s.DevIssuer}
}

// expiringToken mints a dev token that the gateway treats as expired after
// about validFor: its exp lies auth.Leeway in the past, plus validFor.
func (e *env) expiringToken(user string, validFor time.Duration) string {
	e.t.Helper()
	now := time.Now()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": auth.DevIssuerName, "aud": auth.DevAudience, "sub": user, "did": "dev-" + user,
		"iat": now.Add(-time.Hour).Unix(), "nbf": now.Add(-time.Hour).Unix(),
		"exp": now.Add(-auth.Leeway + validFor).Unix(),
	}).SignedString(e.secret)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) token(user string, ttl time.Duration) string {
	e.t.Helper()
	tok, err := e.issuer.Issue(user, "dev-"+user, ttl)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

func (e *env) dial(addr, user string, mod func(*client.Options)) (*client.Client, *recorder) {
	e.t.Helper()
	opts := client.Options{URL: "ws://" + addr, Token: e.token(user, time.Hour),
		Backoff: client.Backoff{Min: 10 * time.Millisecond, Max: 200 * time.Millisecond},
		Logger:  slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, opts)
	if err != nil {
		e.t.Fatalf("dial as %s: %v", user, err)
	}
	r := &recorder{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range c.Events() {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		}
	}()
	e.t.Cleanup(func() {
		_ = c.Close()
		<-r.done
	})
	return c, r
}

type recorder struct {
	mu     sync.Mutex
	events []client.Event
	done   chan struct{}
}

func (r *recorder) texts(conv string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ev := range r.events {
		if m, ok := ev.(client.MessageEvent); ok && m.Message.GetConversationId() == conv && m.Message.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_TEXT {
			out = append(out, m.Message.GetText())
		}
	}
	return out
}

func (r *recorder) seqs(conv string) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []uint64
	for _, ev := range r.events {
		if m, ok := ev.(client.MessageEvent); ok && m.Message.GetConversationId() == conv {
			out = append(out, m.Message.GetSeq())
		}
	}
	return out
}

func (r *recorder) has(match func(client.Event) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.events, match)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dense(seqs []uint64) bool {
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			return false
		}
	}
	return true
}

func TestDirectMessages(t *testing.T) {
	for _, sub := range []string{wire.SubprotocolProto, wire.SubprotocolJSON} {
		t.Run(sub, func(t *testing.T) {
			e := start(t)
			alice, ra := e.dial(e.addr, "alice", func(o *client.Options) { o.Subprotocol = sub })
			bob, rb := e.dial(e.addr, "bob", func(o *client.Options) { o.Subprotocol = sub })
			const dm = "dm:alice:bob"
			want := []string{"hi bob", "hi alice", "how are you?"}
			var first uint64
			for i, text := range want {
				from := alice
				if i == 1 {
					from = bob
				}
				ok, err := from.Send(ctxT(t), dm, text)
				if err != nil {
					t.Fatalf("send %q: %v", text, err)
				}
				if i == 0 {
					first = ok.GetSeq()
				}
				if ok.GetSeq() != first+uint64(i) {
					t.Fatalf("send_ok seq %d, want %d (dense seqs)", ok.GetSeq(), first+uint64(i))
				}
			}
			for name, r := range map[string]*recorder{"alice": ra, "bob": rb} {
				waitFor(t, name+" to see the conversation", func() bool { return len(r.texts(dm)) >= len(want) })
				if got := r.texts(dm); !slices.Equal(got, want) {
					t.Fatalf("%s saw %q, want %q exactly once each", name, got, want)
				}
			}
			// Bob reads alice's last message; alice gets the read receipt.
			// (Bob's own send moved his read pointer to first+1 already.)
			if err := bob.Read(ctxT(t), dm, first+2); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "alice to get bob's read receipt", func() bool {
				return ra.has(func(ev client.Event) bool {
					r, ok := ev.(client.ReceiptEvent)
					return ok && r.Receipt.GetUserId() == "bob" && r.Receipt.GetKind() == parleyv1.ReceiptKind_RECEIPT_KIND_READ && r.Receipt.GetSeq() == first+2
				})
			})
			h, err := alice.History(ctxT(t), dm, 0, 0, 10)
			if err != nil || len(h.GetMessages()) < 3 || h.GetMessages()[0].GetSeq() != first+2 {
				t.Fatalf("history = %v, %v; want the newest page, newest first", h, err)
			}
		})
	}
}

func TestGroupsOverREST(t *testing.T) {
	e := start(t)
	alice, ra := e.dial(e.addr, "alice", nil)
	_, rb := e.dial(e.addr, "bob", nil)
	_, rc := e.dial(e.addr, "carol", nil)
	rest := client.NewREST("http://"+e.addr, e.token("alice", time.Hour))
	g, err := rest.CreateGroup(ctxT(t), "team", []string{"bob"})
	if err != nil {
		t.Fatalf("create group: %v", err)
	}
	if _, err := alice.Send(ctxT(t), g, "before carol"); err != nil {
		t.Fatal(err)
	}
	if _, err := rest.AddMembers(ctxT(t), g, []string{"carol"}); err != nil {
		t.Fatalf("add carol: %v", err)
	}
	if _, err := alice.Send(ctxT(t), g, "with carol"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob to see both", func() bool { return len(rb.texts(g)) == 2 })
	waitFor(t, "carol to see the second", func() bool { return len(rc.texts(g)) == 1 })
	if got := rc.texts(g); !slices.Equal(got, []string{"with carol"}) {
		t.Fatalf("carol saw %q: a member sees the group from the seq it joined at", got)
	}
	waitFor(t, "alice's own messages", func() bool { return len(ra.texts(g)) == 2 })
	for name, r := range map[string]*recorder{"alice": ra, "bob": rb, "carol": rc} {
		if s := r.seqs(g); !dense(s) {
			t.Fatalf("%s saw seqs %v with a gap or a duplicate", name, s)
		}
	}
	inbox, err := rest.Inbox(ctxT(t))
	if err != nil || !slices.ContainsFunc(inbox, func(s *parleyv1.ConversationState) bool { return s.GetConversationId() == g }) {
		t.Fatalf("inbox %v, %v; want %s in it", inbox, err, g)
	}
	_, err = client.NewREST("http://"+e.addr, "not-a-token").Inbox(ctxT(t))
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeUnauthenticated {
		t.Fatalf("inbox with a bad token: %v, want unauthenticated", err)
	}
}

func TestCatchUpAfterConnectionLoss(t *testing.T) {
	e := start(t)
	p := newProxy(t, e.addr)
	alice, _ := e.dial(e.addr, "alice", nil)
	bob, rb := e.dial(p.addr(), "bob", nil)
	const dm = "dm:alice:bob"
	if _, err := alice.Send(ctxT(t), dm, "m1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob to see m1", func() bool { return len(rb.texts(dm)) == 1 })

	p.cut() // bob's network goes away
	waitFor(t, "bob to notice", func() bool { return !bob.Connected() })
	var want = []string{"m1"}
	for _, text := range []string{"m2", "m3", "m4"} {
		if _, err := alice.Send(ctxT(t), dm, text); err != nil {
			t.Fatal(err)
		}
		want = append(want, text)
	}
	rest := client.NewREST("http://"+e.addr, e.token("alice", time.Hour))
	g, err := rest.CreateGroup(ctxT(t), "while bob was away", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctxT(t), g, "welcome bob"); err != nil {
		t.Fatal(err)
	}
	p.restore()
	waitFor(t, "bob to catch up", func() bool { return len(rb.texts(dm)) == len(want) && len(rb.texts(g)) == 1 })
	if got := rb.texts(dm); !slices.Equal(got, want) {
		t.Fatalf("bob saw %q, want %q", got, want)
	}
	if s := rb.seqs(g); !slices.Equal(s, []uint64{1, 2}) {
		t.Fatalf("bob saw seqs %v of the new group, want [1 2] (created, welcome)", s)
	}
	// Sends keep working on the new connection.
	if _, err := bob.Send(ctxT(t), dm, "back"); err != nil {
		t.Fatal(err)
	}
}

func TestExpiredTokenIsRefreshedOnce(t *testing.T) {
	e := start(t)
	var calls atomic.Int32
	alice, ra := e.dial(e.addr, "alice", func(o *client.Options) {
		o.Token = e.expiringToken("alice", 2*time.Second)
		o.TokenSource = func(context.Context) (string, error) {
			calls.Add(1)
			return e.token("alice", time.Hour), nil
		}
	})
	waitFor(t, "the reconnect with a fresh token", func() bool {
		return ra.has(func(ev client.Event) bool { _, ok := ev.(client.ReconnectedEvent); return ok })
	})
	if n := calls.Load(); n != 1 {
		t.Fatalf("token source called %d times, want 1", n)
	}
	if _, err := alice.Send(ctxT(t), "dm:alice:bob", "still here"); err != nil {
		t.Fatalf("send after refresh: %v", err)
	}
}

func TestExpiredTokenWithoutSourceStops(t *testing.T) {
	e := start(t)
	alice, ra := e.dial(e.addr, "alice", func(o *client.Options) { o.Token = e.expiringToken("alice", 2*time.Second) })
	waitFor(t, "the ClosedEvent", func() bool {
		return ra.has(func(ev client.Event) bool { _, ok := ev.(client.ClosedEvent); return ok })
	})
	<-alice.Done()
	var we *wire.Error
	if err := alice.Err(); !errors.As(err, &we) || we.Code != wire.CodeTokenExpired {
		t.Fatalf("Err() = %v, want a token_expired *wire.Error", err)
	}
}

// proxy forwards TCP to the server and can cut every connection.
type proxy struct {
	t    *testing.T
	ln   net.Listener
	to   string
	mu   sync.Mutex
	down bool
	open map[net.Conn]struct{}
}

func newProxy(t *testing.T, to string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, to: to, open: map[net.Conn]struct{}{}}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			s, err := net.Dial("tcp", to)
			if err != nil {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			p.open[c], p.open[s] = struct{}{}, struct{}{}
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(s, c); _ = s.Close(); _ = c.Close() }()
			go func() { defer wg.Done(); _, _ = io.Copy(c, s); _ = s.Close(); _ = c.Close() }()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		p.cut()
		wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

// cut drops every connection and refuses new ones until restore.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.open {
		_ = c.Close()
		delete(p.open, c)
	}
}

func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// TestTerminalChat drives the CLI against the real server.
func TestTerminalChat(t *testing.T) {
	e := start(t)
	// The CLI reads the client's Events itself, so it gets a client of its own.
	opts := client.Options{URL: "ws://" + e.addr, Token: e.token("alice", time.Hour), Logger: slog.New(slog.DiscardHandler)}
	c, err := client.Dial(ctxT(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bob, _ := e.dial(e.addr, "bob", nil)

	inR, inW := io.Pipe()
	out := &syncBuffer{}
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		done <- cli.Run(ctx, inR, out, c, client.NewREST("http://"+e.addr, opts.Token), "alice")
	}()
	say := func(line string) {
		t.Helper()
		if _, err := io.WriteString(inW, line+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(want string) {
		t.Helper()
		waitFor(t, "output "+want, func() bool { return strings.Contains(out.String(), want) })
	}
	say("/dm bob")
	expect("--- dm:alice:bob ---")
	say("hello from the terminal")
	expect("[dm:alice:bob] alice: hello from the terminal")
	if _, err := bob.Send(ctxT(t), "dm:alice:bob", "hi terminal"); err != nil {
		t.Fatal(err)
	}
	expect("[dm:alice:bob] bob: hi terminal")
	say(`/group create "the team" bob`)
	expect("created group g:")
	expect(`* alice created the group "the team"`)
	say("/add carol")
	expect("added carol to g:")
	expect("* alice added carol")
	say("/members")
	expect("members of g:")
	expect(": alice (owner), bob, carol")
	say("/inbox")
	expect("dm:alice:bob (with bob)")
	expect(`"the team"`)
	say("/leave")
	expect("left g:")
	say("/quit")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("cli.Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("cli.Run did not return after /quit; output:\n%s", out.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
