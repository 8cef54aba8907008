package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleychat/parley/runtime/client"
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

// TestRESTRefusesWhatWebSocketRefuses (issue 14): REST answers the bytes
// the WebSocket path refuses with the same code, instead of storing U+FFFD
// or a display-reversing override; a body holds exactly one JSON object.
func TestRESTRefusesWhatWebSocketRefuses(t *testing.T) {
	p := startServer(t, "")
	tok := p.token("alice", "curl", time.Hour)
	post := func(path, body string) (int, string) {
		return httpDo(t, http.MethodPost, p.HTTP()+path, "Bearer "+tok, body)
	}
	for _, tc := range []struct{ what, path, body, mention string }{
		{"invalid UTF-8", "/v1/messages", "{\"conversation_id\":\"dm:alice:bob\",\"client_msg_id\":\"u1\",\"text\":\"bad \xff\"}", "UTF-8"},
		{"a lone surrogate", "/v1/messages", `{"conversation_id":"dm:alice:bob","client_msg_id":"u2","text":"x\ud800"}`, "surrogate"},
		{"a right-to-left override", "/v1/messages", `{"conversation_id":"dm:alice:bob","client_msg_id":"u3","text":"abc\u202egnp.exe"}`, "U+202E"},
		{"two JSON objects", "/v1/conversations/dm:alice:bob/read", `{"seq":3}{"seq":1}`, "more than one"},
	} {
		code, body := post(tc.path, tc.body)
		if code != http.StatusBadRequest || !strings.Contains(body, `"invalid"`) || !strings.Contains(body, tc.mention) {
			t.Errorf("%s: %d %s, want 400 invalid mentioning %q", tc.what, code, body, tc.mention)
		}
	}
	// Nothing was stored: the DM does not even exist.
	if code, body := post("/v1/messages", `{"conversation_id":"dm:alice:bob","client_msg_id":"ok","text":"fine \u2067עברית\u2069"}`); code != http.StatusOK {
		t.Fatalf("a clean send with isolates: %d %s", code, body)
	}
	h, err := client.NewREST(p.HTTP(), tok).History(ctxT(t, 10*time.Second), "dm:alice:bob", 0, 0, 50)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range h.Messages {
		if strings.ContainsAny(m.Text, "\ufffd\u202e") {
			t.Errorf("stored %q", m.Text)
		}
	}
}

// TestSessionsPerUserCapped (issue 14): past --max-sessions-per-user the
// newest connection of a user is refused with 429 too_many_sessions and
// the older ones keep working; once one closes, a new one is let in. Other
// users are not affected.
func TestSessionsPerUserCapped(t *testing.T) {
	p := startServer(t, "", "--max-sessions-per-user", "2")
	phone := connect(t, p, "alice", "phone")
	laptop := connect(t, p, "alice", "laptop")
	dial := func(user string) (int, string) { return handshake(t, p, user, "") }
	if code, body := dial("alice"); code != http.StatusTooManyRequests || !strings.Contains(body, wire.CodeTooManySessions) {
		t.Fatalf("a third session of alice: %d %s, want 429 %s", code, body, wire.CodeTooManySessions)
	}
	if code, _ := dial("bob"); code != http.StatusSwitchingProtocols {
		t.Fatalf("bob's first session: %d, want it let in", code)
	}
	ctx := ctxT(t, 20*time.Second)
	if _, err := phone.Send(ctx, "dm:alice:bob", "the older sessions keep working"); err != nil {
		t.Fatal(err)
	}
	_ = laptop.Close()
	waitFor(t, 10*time.Second, "a session of alice let in after one closed", func() bool {
		code, _ := dial("alice")
		return code == http.StatusSwitchingProtocols
	})
}

// TestReadsRateLimited (issue 14): history, inbox and sync requests of one
// user share a token bucket (--read-rate, --read-burst); over it REST and
// WebSocket answer rate_limited with retry_after_ms, and another user's
// budget is untouched.
func TestReadsRateLimited(t *testing.T) {
	p := startServer(t, "", "--read-rate", "0.5", "--read-burst", "3")
	ctx := ctxT(t, 20*time.Second)
	alice := client.NewREST(p.HTTP(), p.token("alice", "curl", time.Hour))
	if _, err := alice.Send(ctx, "dm:alice:bob", client.NewClientMsgID(), "hi"); err != nil {
		t.Fatal(err)
	}
	// The WebSocket client's sync on connect takes the burst's first token.
	d := connect(t, p, "alice", "phone")
	for i := range 2 {
		if _, err := alice.History(ctx, "dm:alice:bob", 0, 0, 10); err != nil {
			t.Fatalf("read %d of the burst: %v", i+2, err)
		}
	}
	var we *wire.Error
	if _, err := alice.Inbox(ctx); !errors.As(err, &we) || we.Code != wire.CodeRateLimited || we.RetryAfterMs == 0 {
		t.Fatalf("a 4th read: %v, want rate_limited with retry_after_ms", err)
	}
	// A WebSocket history request of the same user draws on the same budget.
	if _, err := d.History(ctx, "dm:alice:bob", 0, 0, 10); !errors.As(err, &we) || we.Code != wire.CodeRateLimited {
		t.Fatalf("a WebSocket history over the budget: %v, want rate_limited", err)
	}
	bob := client.NewREST(p.HTTP(), p.token("bob", "curl", time.Hour))
	if _, err := bob.Inbox(ctx); err != nil {
		t.Fatalf("bob's own budget: %v", err)
	}
}

// TestReadsRateLimitedByDefault: a server started with no flags budgets
// reads too (20/s, burst 100): 150 history requests in a row are not all
// answered (a new user's tryout found the default unset).
func TestReadsRateLimitedByDefault(t *testing.T) {
	p := startServer(t, "")
	tok := "Bearer " + p.token("carol", "curl", time.Hour)
	limited := 0
	for range 150 {
		if status, body := httpDo(t, http.MethodGet, p.HTTP()+"/v1/history/dm:carol:dave?limit=1", tok, ""); status == http.StatusTooManyRequests && strings.Contains(body, wire.CodeRateLimited) {
			limited++
		}
	}
	if limited == 0 {
		t.Fatalf("150 history requests in a row on a default server: none rate_limited, want the read budget (burst %d) enforced", 100)
	}
}

// handshake opens and closes a WebSocket session of user (JSON, a fresh
// dev token), with an Origin header when origin is set, and returns 101,
// or the refusal's status and body.
func handshake(t *testing.T, p *proc, user, origin string) (int, string) {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + p.token(user, "handshake", time.Hour)}}
	if origin != "" {
		h.Set("Origin", origin)
	}
	d := websocket.Dialer{Subprotocols: []string{wire.SubprotocolJSON}, HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial(p.WS()+"/v1/ws", h)
	if err == nil {
		c.Close()
		return http.StatusSwitchingProtocols, ""
	}
	if resp == nil {
		t.Fatalf("handshake of %s (origin %q): %v", user, origin, err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestSendValidationSameEverywhere (issue 15): a bad send gets the same
// code over REST and over the WebSocket (one rules.ValidateSend), where the
// three entry points used to disagree (an over-long media URL, a zero media
// size, an over-long client_msg_id over REST).
func TestSendValidationSameEverywhere(t *testing.T) {
	p := startServer(t, "")
	tok := p.token("alice", "curl", time.Hour)
	ws, _, err := (&websocket.Dialer{Subprotocols: []string{wire.SubprotocolJSON}, HandshakeTimeout: 5 * time.Second}).
		Dial(p.WS()+"/v1/ws", http.Header{"Authorization": {"Bearer " + tok}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	// wsCode sends a JSON send frame and returns the error code of its answer.
	next := uint64(0)
	wsCode := func(send string) string {
		t.Helper()
		next++
		if err := ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"id":%d,"send":%s}`, next, send))); err != nil {
			t.Fatal(err)
		}
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			var f struct {
				ID    string `json:"id"`
				Error struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			if json.Unmarshal(b, &f) == nil && f.ID == fmt.Sprint(next) {
				return f.Error.Code
			}
		}
	}
	long := strings.Repeat("x", 3000)
	for _, tc := range []struct{ what, send, code string }{
		{"a media URL over 2048 bytes", `{"conversation_id":"dm:alice:bob","client_msg_id":"m1","media":{"url":"https://x/` + long + `","mime":"image/png","size":5}}`, wire.CodeTooLarge},
		{"media of size 0", `{"conversation_id":"dm:alice:bob","client_msg_id":"m2","media":{"url":"https://x/a.png","mime":"image/png","size":0}}`, wire.CodeInvalid},
		{"a client_msg_id over 64 bytes", `{"conversation_id":"dm:alice:bob","client_msg_id":"` + strings.Repeat("c", 65) + `","text":"hi"}`, wire.CodeInvalid},
		{"a control character", `{"conversation_id":"dm:alice:bob","client_msg_id":"m4","text":"bell\u0007"}`, wire.CodeInvalid},
	} {
		if status, body := httpDo(t, http.MethodPost, p.HTTP()+"/v1/messages", "Bearer "+tok, tc.send); !strings.Contains(body, `"code":"`+tc.code+`"`) {
			t.Errorf("%s over REST: %d %s, want %s", tc.what, status, body, tc.code)
		}
		if got := wsCode(tc.send); got != tc.code {
			t.Errorf("%s over the WebSocket: %q, want %s", tc.what, got, tc.code)
		}
	}
}

// httpDo makes one request with an Authorization header (when auth is set)
// and a JSON body (when body is set), and returns the status and body.
func httpDo(t *testing.T, method, url, auth, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestTypingIntervalSetting (issue 14): --typing-interval bounds the typing
// notices one user's typing reaches another member with, whatever the
// typist sends: typing every 20 ms for 1.5 s with an interval of 200 ms,
// alice reaches bob with at most 9 notices (one per interval, the first at
// once) — and with several, where the default 1 s interval would give 2.
func TestTypingIntervalSetting(t *testing.T) {
	p := startServer(t, "", "--typing-interval", "200ms")
	alice, bob := connect(t, p, "alice", "phone"), connect(t, p, "bob", "phone")
	ctx := ctxT(t, 20*time.Second)
	conv := "dm:alice:bob"
	if _, err := alice.Send(ctx, conv, "hi"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for time.Since(start) < 1500*time.Millisecond {
		if err := alice.Typing(ctx, conv); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	typed := time.Since(start)
	time.Sleep(300 * time.Millisecond) // the last one allowed arrives
	bob.mu.Lock()
	n := len(bob.typing)
	bob.mu.Unlock()
	if most := int(typed/(200*time.Millisecond)) + 1; n < 4 || n > most {
		t.Errorf("bob got %d typing notices from %s of alice typing every 20 ms, want 4..%d (one per 200 ms)", n, typed.Round(time.Millisecond), most)
	}
}

// TestHTTPResponseWriteBounded (issue 14): a response still being written
// --http-write-timeout after its request began is cut (the connection
// closes without it); a response within it arrives; WebSocket sessions are
// exempt. A CPU profile of 2 s is the long answer here.
func TestHTTPResponseWriteBounded(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokenFile, []byte("0123456789abcdef-admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServer(t, "", "--admin-token-file", tokenFile, "--http-write-timeout", "1s", "--heartbeat", "500ms")
	get := func(path string) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodGet, p.HTTP()+path, nil)
		req.Header.Set("Authorization", "Bearer 0123456789abcdef-admin")
		return (&http.Client{Timeout: 20 * time.Second}).Do(req)
	}
	if resp, err := get("/debug/pprof/profile?seconds=2"); err == nil {
		b, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil && resp.StatusCode == http.StatusOK && len(b) > 0 {
			t.Errorf("a 2 s profile under a 1 s write timeout arrived whole (%d bytes), want the connection cut", len(b))
		}
	}
	resp, err := get("/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("a quick answer under the write timeout: %v %v", resp, err)
	}
	resp.Body.Close()
	// A WebSocket session outlives the write timeout and still gets pushes.
	alice, bob := connect(t, p, "alice", "phone"), connect(t, p, "bob", "phone")
	time.Sleep(1500 * time.Millisecond)
	ctx := ctxT(t, 20*time.Second)
	if _, err := alice.Send(ctx, "dm:alice:bob", "after the write timeout"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "bob gets the message", func() bool { return len(bob.Messages("dm:alice:bob", text)) == 1 })
}
