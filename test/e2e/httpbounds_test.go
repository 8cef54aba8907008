package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/wire"
)

// TestHTTPConnectionsAreBounded (issue 14): an idle keep-alive connection
// is closed after --http-idle-timeout; a request that declares a body and
// stalls is cut off after --http-read-timeout; a body declared over the
// limit is refused at once with too_large, before a byte of it is read; a
// WebSocket connection outlives both timeouts (its heartbeats keep it).
func TestHTTPConnectionsAreBounded(t *testing.T) {
	p := startServer(t, "", "--http-read-timeout", "1s", "--http-idle-timeout", "1s", "--heartbeat", "500ms")
	tok := p.token("alice", "curl", time.Hour)
	dial := func() (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	// closedWithin waits for the server to close c (EOF or reset).
	closedWithin := func(what string, c net.Conn, r *bufio.Reader, d time.Duration) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, r)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("%s: the server kept the connection open for %v", what, d)
		}
	}

	// Idle keep-alive.
	c, r := dial()
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	closedWithin("an idle keep-alive connection", c, r, 5*time.Second)

	// A stalled body.
	c, r = dial()
	fmt.Fprintf(c, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"co", tok)
	closedWithin("a request whose body stalls", c, r, 5*time.Second)

	// A body declared far over the limit: refused before it is sent.
	c, r = dial()
	start := time.Now()
	fmt.Fprintf(c, "POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{", tok)
	resp, err = http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("declared 10 GB: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), wire.CodeTooLarge) {
		t.Fatalf("declared 10 GB: %s %s, want 413 too_large", resp.Status, body)
	}
	if waited := time.Since(start); waited > 900*time.Millisecond {
		t.Errorf("declared 10 GB: answered after %v, want at once (before the read timeout)", waited)
	}

	// A WebSocket connection lives past both timeouts.
	d := connect(t, p, "bob", "phone")
	time.Sleep(2500 * time.Millisecond)
	ctx := ctxT(t, 10*time.Second)
	if _, err := d.Send(ctx, "dm:bob:carol", "still connected"); err != nil {
		t.Fatalf("send on a WebSocket 2.5 s old, past the 1 s HTTP timeouts: %v", err)
	}
	if n := d.Reconnects(); n != 0 {
		t.Errorf("the WebSocket connection reconnected %d times, want 0", n)
	}
}
