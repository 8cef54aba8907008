package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/media"
	"github.com/parleychat/parley/runtime/wire"
)

var testSecret = bytes.Repeat([]byte("k"), 32)

// newMediaAPI serves the media and dev-token routes of an API (they need no
// chat role) next to an embedded media store, as parley serve does.
func newMediaAPI(t *testing.T, dev, withMedia bool) (*httptest.Server, *API) {
	t.Helper()
	a := &API{Verifier: auth.NewHMACVerifier(testSecret)}
	if dev {
		a.DevIssuer = auth.NewDevIssuer(testSecret)
	}
	mux := http.NewServeMux()
	if withMedia {
		st, err := media.OpenEmbedded(t.TempDir(), "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		if a.Media, err = media.New(st.Config(media.Config{MaxBytes: 100})); err != nil {
			t.Fatal(err)
		}
		mux.Handle(media.EmbeddedPath+"/", st)
	}
	a.Register(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, wire.Errorf(wire.CodeNotFound, "no route for %s %s", r.Method, r.URL.Path))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, a
}

func post(t *testing.T, url, token, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

func errCode(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func TestDevToken(t *testing.T) {
	srv, a := newMediaAPI(t, true, false)
	status, out := post(t, srv.URL+"/v1/dev/token", "", `{"user":"alice","device":"laptop"}`)
	if status != http.StatusOK {
		t.Fatalf("dev token: %d %v", status, out)
	}
	c, err := a.Verifier.Verify(context.Background(), out["token"].(string))
	if err != nil || c.UserID != "alice" || c.DeviceID != "laptop" || time.Until(c.ExpiresAt) < time.Hour {
		t.Fatalf("token claims %+v, %v", c, err)
	}
	if status, out := post(t, srv.URL+"/v1/dev/token", "", `{"user":"bob"}`); status != http.StatusOK || out["device"] != "web" {
		t.Fatalf("default device: %d %v", status, out)
	}
	for _, body := range []string{`{"user":""}`, `{"user":"a:b"}`, `{"user":"alice","device":"bad device"}`, `{"user":"alice","admin":true}`, ``} {
		if status, out := post(t, srv.URL+"/v1/dev/token", "", body); status != http.StatusBadRequest || errCode(out) != wire.CodeInvalid {
			t.Errorf("body %q: %d %v, want 400 invalid", body, status, out)
		}
	}

	// Production mode (no dev issuer): the route does not exist.
	prod, _ := newMediaAPI(t, false, false)
	if status, out := post(t, prod.URL+"/v1/dev/token", "", `{"user":"alice"}`); status != http.StatusNotFound || errCode(out) != wire.CodeNotFound {
		t.Fatalf("production dev token: %d %v, want 404", status, out)
	}
}

func TestMediaUploadRoute(t *testing.T) {
	srv, a := newMediaAPI(t, true, true)
	tok, err := a.DevIssuer.Issue("alice", "web", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	status, out := post(t, srv.URL+"/v1/media/uploads", tok, `{"mime":"image/png","size":100}`)
	if status != http.StatusOK {
		t.Fatalf("upload: %d %v", status, out)
	}
	up := out["upload_url"].(string)
	if !strings.HasPrefix(up, srv.URL+"/s3/parley-media/u/alice/") || out["method"] != "PUT" ||
		!strings.HasPrefix(out["object_url"].(string), "/s3/parley-media/u/alice/") {
		t.Fatalf("upload answer %v", out)
	}
	hdrs := out["headers"].(map[string]any)
	req, _ := http.NewRequest(http.MethodPut, up, bytes.NewReader(bytes.Repeat([]byte{1}, 100)))
	for k, v := range hdrs {
		req.Header.Set(k, v.(string))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT to the answered URL: %d", resp.StatusCode)
	}

	for _, tc := range []struct {
		token, body string
		status      int
		code        string
	}{
		{"", `{"mime":"image/png","size":1}`, http.StatusUnauthorized, wire.CodeUnauthenticated},
		{tok, `{"mime":"text/html","size":1}`, http.StatusBadRequest, wire.CodeInvalid},
		{tok, `{"mime":"image/png","size":101}`, http.StatusRequestEntityTooLarge, wire.CodeTooLarge},
		{tok, `{"mime":"image/png"}`, http.StatusBadRequest, wire.CodeInvalid},
		{tok, `{"mime":"image/png","size":"1"}`, http.StatusBadRequest, wire.CodeInvalid},
	} {
		if status, out := post(t, srv.URL+"/v1/media/uploads", tc.token, tc.body); status != tc.status || errCode(out) != tc.code {
			t.Errorf("%s: %d %v, want %d %s", tc.body, status, out, tc.status, tc.code)
		}
	}

	noMedia, a2 := newMediaAPI(t, true, false)
	tok2, _ := a2.DevIssuer.Issue("alice", "web", time.Hour)
	if status, out := post(t, noMedia.URL+"/v1/media/uploads", tok2, `{"mime":"image/png","size":1}`); status != http.StatusServiceUnavailable || errCode(out) != wire.CodeUnavailable {
		t.Fatalf("without a media store: %d %v", status, out)
	}
}
