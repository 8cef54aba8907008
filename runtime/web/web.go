// Package web serves Parley's browser client: plain ES modules, CSS and one
// HTML page embedded in the binary (no build step), so `parley serve` is a
// chat you can open in a browser. The client speaks the JSON subprotocol
// (parley.v1.json) at /v1/ws and the REST API; see static/main.js.
//
// Routes: GET / (the page), GET /app/<file> (modules, CSS, icon) and GET
// /app/config.json (what the server offers: dev sign-in, media uploads).
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Config tells the client what this server offers.
type Config struct {
	// DevSignIn offers sign-in by typing a name: the server runs in dev mode
	// and serves POST /v1/dev/token.
	DevSignIn bool
	// MediaTypes and MediaMaxBytes describe the uploads POST
	// /v1/media/uploads accepts; no types means no uploads.
	MediaTypes    []string
	MediaMaxBytes int64
}

// csp keeps the page to its own scripts and styles (no inline code). Images
// may come from the media store, which may be another origin (S3, a CDN);
// uploads and the socket may go to other origins for the same reason.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data: https: http:; " +
	"connect-src 'self' ws: wss: https: http:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

type file struct {
	data  []byte
	etag  string
	ctype string
}

// Handler serves the client.
type Handler struct {
	files  map[string]file // by name under static/
	config []byte
}

// New returns the client's handler for cfg.
func New(cfg Config) *Handler {
	h := &Handler{files: map[string]file{}}
	_ = fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" {
			ctype = "application/octet-stream"
		}
		h.files[strings.TrimPrefix(p, "static/")] = file{data: data, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, ctype: ctype}
		return nil
	})
	types := cfg.MediaTypes
	if types == nil {
		types = []string{}
	}
	h.config, _ = json.Marshal(map[string]any{
		"dev_sign_in": cfg.DevSignIn,
		"media":       map[string]any{"types": types, "max_bytes": cfg.MediaMaxBytes},
	})
	return h
}

// Register adds the client's routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, "index.html") })
	mux.HandleFunc("GET /app/config.json", h.serveConfig)
	mux.HandleFunc("GET /app/{name...}", func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, r.PathValue("name")) })
}

func securityHeaders(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", csp)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, name string) {
	f, ok := h.files[name]
	if !ok || name == "index.html" && r.URL.Path != "/" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":{"code":"not_found","message":"no such file"}}` + "\n"))
		return
	}
	securityHeaders(w)
	hd := w.Header()
	hd.Set("Content-Type", f.ctype)
	hd.Set("ETag", f.etag)
	// Revalidate every load: a new binary must never run with old modules.
	hd.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.data))
}

func (h *Handler) serveConfig(w http.ResponseWriter, r *http.Request) {
	securityHeaders(w)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(h.config)
}
