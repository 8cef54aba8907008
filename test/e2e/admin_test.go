package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleychat/parley/runtime/wire"
)

// TestAdminDrain: the operator's drain endpoint needs the admin token,
// turns /readyz false, sends connected clients away, and `parley admin
// drain --wait` (the preStop hook) returns once no connection is left.
func TestAdminDrain(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(tokenFile, []byte("0123456789abcdef-admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServer(t, "", "--admin-token-file", tokenFile)
	alice := connect(t, p, "alice", "phone")

	for _, tc := range []struct {
		name, auth string
		want       int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"wrong token", "Bearer nope", http.StatusUnauthorized},
		{"user token", "Bearer " + p.token("alice", "x", time.Hour), http.StatusUnauthorized},
	} {
		req, _ := http.NewRequest(http.MethodPost, p.HTTP()+"/v1/admin/drain", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Fatalf("%s: drain answered %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
	if alice.Reconnects() != 0 || !alice.Connected() {
		t.Fatal("a refused drain request disconnected a client")
	}

	// Profiles of the live process: refused without the admin token, served
	// with it (a heap profile is gzipped protobuf: magic 1f 8b).
	for _, auth := range []string{"", "Bearer 0123456789abcdef-admin"} {
		req, _ := http.NewRequest(http.MethodGet, p.HTTP()+"/debug/pprof/heap", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case auth == "" && resp.StatusCode != http.StatusUnauthorized:
			t.Fatalf("/debug/pprof/heap without a token answered %d, want 401", resp.StatusCode)
		case auth != "" && (resp.StatusCode != http.StatusOK || len(body) < 2 || body[0] != 0x1f || body[1] != 0x8b):
			t.Fatalf("/debug/pprof/heap with the admin token answered %d with %d bytes, want 200 and a gzipped profile", resp.StatusCode, len(body))
		}
	}

	out, err := exec.Command(binary, "admin", "drain", "--url", p.HTTP(), "--token-file", tokenFile,
		"--window", "500ms", "--wait", "--timeout", "30s").CombinedOutput()
	if err != nil {
		t.Fatalf("parley admin drain: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "drained") {
		t.Fatalf("parley admin drain printed %q, want it to report drained", out)
	}
	resp, err := http.Get(p.HTTP() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d while draining, want 503", resp.StatusCode)
	}
}

// TestAdminDisabled: without --admin-token-file the admin endpoints refuse.
func TestAdminDisabled(t *testing.T) {
	p := startServer(t, "")
	req, _ := http.NewRequest(http.MethodPost, p.HTTP()+"/v1/admin/drain", nil)
	req.Header.Set("Authorization", "Bearer anything-at-all-1234")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("drain with admin disabled answered %d, want 403", resp.StatusCode)
	}
}

// TestMaxConnections: past --max-connections an upgrade is refused with 503
// unavailable and Retry-After; a slot that frees up is usable again.
func TestMaxConnections(t *testing.T) {
	p := startServer(t, "", "--max-connections", "2")
	a := connect(t, p, "alice", "one")
	connect(t, p, "bob", "one")
	hdr := http.Header{"Authorization": {"Bearer " + p.token("carol", "one", time.Hour)}}
	d := websocket.Dialer{Subprotocols: []string{wire.SubprotocolJSON}}
	_, resp, err := d.Dial(p.WS()+"/v1/ws", hdr)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third connection: err %v, response %v; want 503 with Retry-After", err, resp)
	}
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error.Code != wire.CodeUnavailable {
		t.Fatalf("third connection error body: %+v (%v), want code unavailable", body, err)
	}
	_ = a.Close()
	waitFor(t, 10*time.Second, "a slot frees up", func() bool {
		c, _, err := d.Dial(p.WS()+"/v1/ws", hdr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
}

// TestMetricsPrivateAndOrigins (issue 14): with --metrics-private, /metrics
// answers only the admin token; with --allowed-origins, a browser page of
// another origin cannot open a WebSocket (403 forbidden), while listed
// origins, the server's own pages and clients that send no Origin can.
func TestMetricsPrivateAndOrigins(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	const admin = "0123456789abcdef-admin"
	if err := os.WriteFile(tokenFile, []byte(admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServer(t, "", "--admin-token-file", tokenFile, "--metrics-private", "--allowed-origins", "https://chat.example.com")
	get := func(auth string) (int, string) { return httpDo(t, http.MethodGet, p.HTTP()+"/metrics", auth, "") }
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Errorf("/metrics without a token: %d, want 401", code)
	}
	if code, _ := get("Bearer " + p.token("alice", "x", time.Hour)); code != http.StatusUnauthorized {
		t.Errorf("/metrics with a user's token: %d, want 401", code)
	}
	if code, body := get("Bearer " + admin); code != http.StatusOK || !strings.Contains(body, "parley_gateway_connections") {
		t.Errorf("/metrics with the admin token: %d, want 200 with Parley's metrics", code)
	}

	dial := func(origin string) (int, string) { return handshake(t, p, "alice", origin) }
	if code, body := dial("https://evil.example"); code != http.StatusForbidden || !strings.Contains(body, wire.CodeForbidden) {
		t.Errorf("another origin: %d %s, want 403 forbidden", code, body)
	}
	for _, origin := range []string{"https://chat.example.com", "HTTPS://CHAT.EXAMPLE.COM", p.HTTP(), ""} {
		if code, body := dial(origin); code != http.StatusSwitchingProtocols {
			t.Errorf("origin %q: %d %s, want the upgrade", origin, code, body)
		}
	}
}
