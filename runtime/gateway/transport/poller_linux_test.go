package transport

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// parkServer is echoServer that also hands each server-side Conn to the
// test, once it has been upgraded and is being served.
func parkServer(t *testing.T, n int) (url string, conns <-chan *Conn, ended <-chan error) {
	t.Helper()
	cc := make(chan *Conn, n)
	ec := make(chan error, n)
	up := websocket.Upgrader{ReadBufferSize: 512}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Upgrade(&up, w, r, 1<<16)
		if err != nil {
			return
		}
		if c.token == 0 {
			t.Error("the connection was not registered with the poller: it would wait on a goroutine")
		}
		go c.Serve(&echo{c: c, ended: ec})
		cc <- c
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http"), cc, ec
}

func echoOnce(t *testing.T, ws *websocket.Conn, msg string) {
	t.Helper()
	if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second)) // a hang guard
	if _, data, err := ws.ReadMessage(); err != nil || string(data) != msg {
		t.Fatalf("echo of %q: %q, %v", msg, data, err)
	}
}

// TestParkedConnectionsHoldNoGoroutine: connections that have exchanged a
// message and gone idle hold no goroutine on the server (each used to hold
// one, parked in a read), and each one's next message still wakes it and is
// answered; a client's close still ends its Serve.
func TestParkedConnectionsHoldNoGoroutine(t *testing.T) {
	const n = 200
	url, _, ended := parkServer(t, n)
	base := runtime.NumGoroutine()
	clients := make([]*websocket.Conn, n)
	for i := range clients {
		ws, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		clients[i] = ws
		echoOnce(t, ws, "hello")
	}
	// The clients hold no goroutine either (nothing reads them between
	// calls), so n idle connections are n goroutines at most if parking is
	// lost. A few of the server's may still be on their way out.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+n/10 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines with %d idle connections, %d before them: idle connections hold goroutines", runtime.NumGoroutine(), n, base)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, ws := range clients {
		echoOnce(t, ws, "again")
	}
	for _, ws := range clients {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		if err := ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		select {
		case err := <-ended:
			if !errors.Is(err, ErrPeerClosed) {
				t.Fatalf("Serve ended with %v, want ErrPeerClosed", err)
			}
		case <-time.After(30 * time.Second): // a hang guard
			t.Fatal("a parked connection's Serve did not end when its client closed")
		}
	}
}

// TestParkedConnectionEnds: a parked connection closed from another
// goroutine (Close) reports its end to the handler, and one whose closing
// handshake the peer never answers (WriteClose) ends at the grace's
// timeout, although no goroutine was reading either when it happened.
func TestParkedConnectionEnds(t *testing.T) {
	url, conns, ended := parkServer(t, 2)
	dial := func() (*websocket.Conn, *Conn) {
		ws, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		echoOnce(t, ws, "park me")
		c := <-conns
		waitParked(t, c)
		return ws, c
	}
	wait := func(what string) error {
		select {
		case err := <-ended:
			return err
		case <-time.After(30 * time.Second): // a hang guard
			t.Fatalf("%s: Serve did not end", what)
			return nil
		}
	}

	_, c := dial()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := wait("Close"); err == nil || errors.Is(err, ErrPeerClosed) {
		t.Fatalf("Close: Serve ended with %v, want the closed socket's error", err)
	}

	ws, c := dial()
	start := time.Now()
	if err := c.WriteClose(websocket.CloseGoingAway, "bye"); err != nil {
		t.Fatal(err)
	}
	// The client reads the close frame and never answers it.
	ws.SetCloseHandler(func(int, string) error { return nil })
	if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("client read %v, want close 1001", err)
	}
	err := wait("WriteClose")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("WriteClose unanswered: Serve ended with %v, want the grace's timeout", err)
	}
	if d := time.Since(start); d < defaultCloseGrace/2 {
		t.Fatalf("WriteClose unanswered: Serve ended after %v, before the %v grace", d, defaultCloseGrace)
	}
}

// TestWriteCloseWhileWarm: a connection whose reader is still waiting on
// its goroutine after a frame (waitWarm, not parked yet) and whose closing
// handshake the peer never answers ends at the grace's timeout: the warm
// wait does not lose WriteClose's read deadline.
func TestWriteCloseWhileWarm(t *testing.T) {
	url, conns, ended := parkServer(t, 1)
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	echoOnce(t, ws, "warm")
	c := <-conns
	if c.parked.Load() {
		t.Fatal("parked right after a frame: want a warm wait first")
	}
	ws.SetCloseHandler(func(int, string) error { return nil }) // never answers
	if err := c.WriteClose(websocket.CloseGoingAway, "bye"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("Serve ended with %v, want the grace's timeout", err)
		}
	case <-time.After(30 * time.Second): // a hang guard
		t.Fatal("Serve did not end after an unanswered WriteClose")
	}
}

// waitParked waits until c's reader has parked it (no goroutine reads it).
func waitParked(t *testing.T, c *Conn) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !c.parked.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the idle connection was never parked")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPingsAnsweredParked: a client that sends WebSocket pings and nothing
// else gets its pongs, counts as active (LastRead), and its connection
// parks again after each ping instead of keeping a reader waiting inside
// gorilla for a data frame.
func TestPingsAnsweredParked(t *testing.T) {
	const n = 20
	url, conns, _ := parkServer(t, n)
	clients := make([]*websocket.Conn, n)
	servers := make([]*Conn, n)
	var pongs atomic.Int64
	for i := range clients {
		ws, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.SetPongHandler(func(data string) error {
			if data == "are you there" {
				pongs.Add(1)
			}
			return nil
		})
		clients[i] = ws
		echoOnce(t, ws, "hello")
		servers[i] = <-conns
	}
	for _, c := range servers {
		waitParked(t, c)
	}
	before := make([]int64, n)
	for i, ws := range clients {
		before[i] = servers[i].LastRead()
		if err := ws.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range servers {
		deadline := time.Now().Add(10 * time.Second)
		for c.LastRead() == before[i] || !c.parked.Load() {
			if time.Now().After(deadline) {
				t.Fatalf("connection %d: after a ping, read %v and parked %v; want both", i, c.LastRead() != before[i], c.parked.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
	// The pongs came before the echoes of these messages.
	for _, ws := range clients {
		echoOnce(t, ws, "still here")
	}
	if got := pongs.Load(); got != n {
		t.Fatalf("%d pongs for %d pings", got, n)
	}
}
