package e2e

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	"github.com/parleychat/parley/runtime/wire"
)

// expiringSoon is the exp of a token that is still accepted (the server
// allows auth.Leeway = 30s of clock skew past exp) but expires on an open
// connection a few seconds after it is minted.
func expiringSoon() time.Time { return time.Now().Add(-25 * time.Second) }

// TestTokenExpiresOnOpenConnection: a connection whose token expires gets an
// error frame token_expired and close code 4501, and the same token is then
// refused at the upgrade.
func TestTokenExpiresOnOpenConnection(t *testing.T) {
	p := startServer(t, "")
	secret := p.devSecret()
	for _, sub := range []string{wire.SubprotocolProto, wire.SubprotocolJSON} {
		t.Run(sub, func(t *testing.T) {
			t.Parallel()
			tok := mint(t, secret, "alice", "laptop", expiringSoon())
			c := openRaw(t, p, tok, sub)
			if c.welcome.GetUserId() != "alice" {
				t.Fatalf("welcome for %q, want alice", c.welcome.GetUserId())
			}
			// The connection works until the token expires.
			if f := c.reply(c.write(pingFrame())); f.GetPong() == nil {
				t.Fatalf("ping: %v, want pong", f)
			}
			deadline := time.Now().Add(60 * time.Second)
			var sawError bool
			for {
				f, err := c.next(time.Until(deadline))
				if err != nil {
					code := closeCodeOf(err)
					if !sawError {
						t.Fatalf("connection ended (%v) without an error frame token_expired", err)
					}
					if code != wire.CloseTokenExpired {
						t.Fatalf("connection ended with %v (close code %d), want close %d", err, code, wire.CloseTokenExpired)
					}
					break
				}
				if e := f.GetError(); e != nil {
					if e.GetCode() != wire.CodeTokenExpired || f.GetId() != 0 {
						t.Fatalf("error frame %v, want token_expired pushed with id 0", f)
					}
					sawError = true
				}
			}
			// The expired token no longer opens a connection.
			_, resp, err := dialRaw(p, tok, []string{sub}, nil)
			if err == nil || resp == nil {
				t.Fatalf("upgrade with the expired token: %v, want HTTP 401 token_expired", err)
			}
			if code, msg := errorBody(readErrBody(t, resp)); resp.StatusCode != http.StatusUnauthorized || code != wire.CodeTokenExpired {
				t.Fatalf("upgrade with the expired token: HTTP %d %q (%s), want 401 token_expired", resp.StatusCode, code, msg)
			}
		})
	}
}

// TestTokenRefreshOnExpiry: an SDK client whose token expires asks its
// TokenSource once, reconnects with the fresh token and keeps working.
func TestTokenRefreshOnExpiry(t *testing.T) {
	p := startServer(t, "")
	secret := p.devSecret()
	ctx := ctxT(t, 3*time.Minute)
	dm := "dm:alice:bob"
	bob, bobEvents := dialSDK(t, p, p.token("bob", "phone", time.Hour), wire.SubprotocolJSON, nil)
	// The DM exists before alice connects, so her baseline knows it.
	if _, err := bob.Send(ctx, dm, "before"); err != nil {
		t.Fatalf("bob sends: %v", err)
	}

	var calls atomic.Int32
	fresh := p.token("alice", "laptop", time.Hour)
	alice, aliceEvents := dialSDK(t, p, mint(t, secret, "alice", "laptop", expiringSoon()), wire.SubprotocolProto, func(o *client.Options) {
		o.TokenSource = func(context.Context) (string, error) {
			calls.Add(1)
			return fresh, nil
		}
	})
	waitFor(t, 60*time.Second, "alice to reconnect with a fresh token", func() bool {
		return aliceEvents.has(func(ev client.Event) bool { _, ok := ev.(client.ReconnectedEvent); return ok })
	})
	if n := calls.Load(); n != 1 {
		t.Fatalf("TokenSource called %d times, want once", n)
	}
	if ce := aliceEvents.closedEvent(); ce != nil {
		t.Fatalf("alice's client stopped: %+v", ce)
	}

	// Both directions still work on the new connection.
	ok, err := alice.Send(ctx, dm, "after refresh")
	if err != nil {
		t.Fatalf("alice sends after the refresh: %v", err)
	}
	waitFor(t, 60*time.Second, "bob to receive alice's message", func() bool { return bobEvents.times(dm, ok.GetSeq()) == 1 })
	if m := bobEvents.message(dm, ok.GetSeq()); m.GetText() != "after refresh" || m.GetSenderId() != "alice" {
		t.Fatalf("bob got %q from %q, want %q from alice", m.GetText(), m.GetSenderId(), "after refresh")
	}
	ok2, err := bob.Send(ctx, dm, "welcome back")
	if err != nil {
		t.Fatalf("bob sends: %v", err)
	}
	waitFor(t, 60*time.Second, "alice to receive bob's message", func() bool { return aliceEvents.times(dm, ok2.GetSeq()) == 1 })
	if calls.Load() != 1 {
		t.Fatalf("TokenSource called %d times, want once", calls.Load())
	}
}

// TestTokenRefreshRefusedStops: an SDK client whose TokenSource cannot give
// a usable token stops with a ClosedEvent and does not loop.
func TestTokenRefreshRefusedStops(t *testing.T) {
	p := startServer(t, "")
	secret := p.devSecret()
	expired := mint(t, secret, "alice", "laptop", time.Now().Add(-time.Hour))
	cases := []struct {
		name string
		// source returns the token to offer given the (expiring) original.
		source func(orig string) string
	}{
		{"same expired token", func(orig string) string { return orig }},
		{"another expired token", func(string) string { return expired }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			orig := mint(t, secret, "alice", "laptop", expiringSoon())
			var mu sync.Mutex
			var calls int
			c, events := dialSDK(t, p, orig, wire.SubprotocolProto, func(o *client.Options) {
				o.TokenSource = func(context.Context) (string, error) {
					mu.Lock()
					calls++
					mu.Unlock()
					return tc.source(orig), nil
				}
			})
			select {
			case <-c.Done():
			case <-time.After(90 * time.Second):
				t.Fatal("the client did not stop within 90s of its token expiring")
			}
			// The events channel closes after the ClosedEvent: nothing follows.
			select {
			case <-events.done:
			case <-time.After(30 * time.Second):
				t.Fatal("the events channel was not closed after the client stopped")
			}
			ce, ok := events.last().(client.ClosedEvent)
			if !ok {
				t.Fatalf("last event is %T, want ClosedEvent", events.last())
			}
			if ce.Code != wire.CloseTokenExpired && errCode(ce.Err) != wire.CodeTokenExpired {
				t.Fatalf("ClosedEvent %+v, want close %d or token_expired", ce, wire.CloseTokenExpired)
			}
			if errCode(c.Err()) != wire.CodeTokenExpired {
				t.Fatalf("client error %v, want token_expired", c.Err())
			}
			if c.Connected() {
				t.Fatal("stopped client reports a connection")
			}
			// Once stopped nothing can call TokenSource again, so this is
			// the final count.
			mu.Lock()
			n := calls
			mu.Unlock()
			if n < 1 || n > 2 {
				t.Fatalf("TokenSource called %d times, want once (at most twice)", n)
			}
			if got := c.Stats().Reconnects; got != 0 {
				t.Fatalf("client reconnected %d times with a refused token", got)
			}
		})
	}
}
