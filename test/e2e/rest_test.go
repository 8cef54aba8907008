package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	"github.com/parleychat/parley/runtime/wire"
)

// TestRESTMethodsAndBodies: a known path asked with a method it does not
// take gets 405 method_not_allowed with an Allow header (not 404), an unknown
// path 404 not_found; and text with <, > and & comes back as written, not as
// \u003c escapes.
func TestRESTMethodsAndBodies(t *testing.T) {
	p := startServer(t, "")
	ctx := ctxT(t, time.Minute)
	tok := p.token("alice", "laptop", time.Hour)
	do := func(method, path, body string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, p.HTTP()+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	for _, tc := range []struct {
		method, path, allow string
	}{
		{http.MethodPut, "/v1/messages", "POST"},
		{http.MethodGet, "/v1/messages", "POST"},
		{http.MethodPost, "/v1/history/dm:alice:bob", "GET"},
		{http.MethodDelete, "/v1/conversations", "GET, POST"},
	} {
		res, body := do(tc.method, tc.path, "")
		var e struct{ Error wire.Error }
		_ = json.Unmarshal([]byte(body), &e)
		if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != tc.allow || e.Error.Code != wire.CodeMethodNotAllowed {
			t.Errorf("%s %s = %d Allow %q %s; want 405, Allow %q, method_not_allowed", tc.method, tc.path, res.StatusCode, res.Header.Get("Allow"), body, tc.allow)
		}
	}
	if res, body := do(http.MethodGet, "/v1/nothing-here", ""); res.StatusCode != http.StatusNotFound || !strings.Contains(body, wire.CodeNotFound) {
		t.Errorf("GET /v1/nothing-here = %d %s, want 404 not_found", res.StatusCode, body)
	}

	rest := client.NewREST(p.HTTP(), tok)
	text := `a <b> & "c" > d`
	if _, err := rest.Send(ctx, "dm:alice:bob", "", text); err != nil {
		t.Fatal(err)
	}
	_, body := do(http.MethodGet, "/v1/history/dm:alice:bob", "")
	if !strings.Contains(body, `a <b> & \"c\" > d`) {
		t.Errorf("history body %s does not carry the text as written", body)
	}
}
