package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func newServer(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	New(cfg).Register(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "api", http.StatusNotFound) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestServesPage(t *testing.T) {
	srv := newServer(t, Config{})
	resp, body := get(t, srv.URL+"/", nil)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !strings.Contains(body, `<script type="module" src="/app/main.js">`) {
		t.Fatal("the page does not load main.js as a module")
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("CSP %q must allow only the page's own scripts", csp)
	}
	if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatal("no nosniff")
	}
	// Other paths are not the page: the API's 404 answers them.
	for _, p := range []string{"/index.html", "/app/index.html", "/app/nope.js", "/v1/nope"} {
		if resp, _ := get(t, srv.URL+p, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, resp.StatusCode)
		}
	}
}

func TestAssetsRevalidate(t *testing.T) {
	srv := newServer(t, Config{})
	for name, ctype := range map[string]string{"main.js": "text/javascript", "app.css": "text/css", "icon.svg": "image/svg+xml"} {
		resp, body := get(t, srv.URL+"/app/"+name, nil)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) || body == "" {
			t.Fatalf("GET /app/%s: %d %q", name, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		etag := resp.Header.Get("ETag")
		if etag == "" || resp.Header.Get("Cache-Control") != "no-cache" {
			t.Fatalf("/app/%s: etag %q cache-control %q", name, etag, resp.Header.Get("Cache-Control"))
		}
		if resp, _ := get(t, srv.URL+"/app/"+name, map[string]string{"If-None-Match": etag}); resp.StatusCode != http.StatusNotModified {
			t.Fatalf("revalidating /app/%s: %d, want 304", name, resp.StatusCode)
		}
	}
}

func TestConfig(t *testing.T) {
	for _, cfg := range []Config{{}, {DevSignIn: true, MediaTypes: []string{"image/png"}, MediaMaxBytes: 1 << 20}} {
		srv := newServer(t, cfg)
		resp, body := get(t, srv.URL+"/app/config.json", nil)
		var got struct {
			DevSignIn bool `json:"dev_sign_in"`
			Media     struct {
				Types    []string `json:"types"`
				MaxBytes int64    `json:"max_bytes"`
			} `json:"media"`
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil || resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("config.json %q: %v", body, err)
		}
		if got.DevSignIn != cfg.DevSignIn || len(got.Media.Types) != len(cfg.MediaTypes) || got.Media.Types == nil || got.Media.MaxBytes != cfg.MediaMaxBytes {
			t.Fatalf("config.json = %+v for %+v", got, cfg)
		}
	}
}

// TestModuleGraph checks without a browser that every module import and
// every /app/ reference of the page names an embedded file.
func TestModuleGraph(t *testing.T) {
	h := New(Config{})
	importRE := regexp.MustCompile(`(?m)^\s*import\b[^'"]*['"]\./([^'"]+)['"]`)
	refRE := regexp.MustCompile(`/app/([A-Za-z0-9._-]+)`)
	for name, f := range h.files {
		var refs []string
		switch {
		case strings.HasSuffix(name, ".js"):
			for _, m := range importRE.FindAllStringSubmatch(string(f.data), -1) {
				refs = append(refs, m[1])
			}
		case strings.HasSuffix(name, ".html"), strings.HasSuffix(name, ".css"):
			for _, m := range refRE.FindAllStringSubmatch(string(f.data), -1) {
				refs = append(refs, m[1])
			}
		}
		for _, r := range refs {
			if _, ok := h.files[r]; !ok && r != "config.json" {
				t.Errorf("%s refers to %s, which is not embedded", name, r)
			}
		}
	}
	if _, ok := h.files["main.js"]; !ok {
		t.Fatal("main.js is not embedded")
	}
}
