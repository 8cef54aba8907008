package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/parleychat/parley/runtime/httpapi"
	"github.com/parleychat/parley/runtime/wire"
)

// MaxDrainWindow bounds the window an admin drain may ask for.
const MaxDrainWindow = 30 * time.Minute

// admin serves the gateway's admin endpoints, used by the operator during
// rolling upgrades and by the pod's preStop hook:
//
//	POST /v1/admin/drain?window=30s  → 202 {"draining":true,"connections":N}
//	GET  /v1/admin/connections       → 200 {"draining":bool,"connections":N}
//	GET  /v1/admin/outbox            → 200 {"region":"eu","pending":N} (chat
//	                                   role): sends accepted into this
//	                                   region's outbox and not yet forwarded
//	                                   to their home region, all forwarders
//	                                   together; the operator waits for 0
//	                                   before it deletes a removed region
//	GET  /debug/pprof/...            → Go runtime profiles (net/http/pprof:
//	                                   profile?seconds=N, heap, allocs, mutex,
//	                                   block, goroutine, trace); the chat,
//	                                   presence and push roles serve these too
//
// Both need "Authorization: Bearer <admin token>" (Config.AdminToken). With
// no admin token configured they answer 403 forbidden: an unauthenticated
// drain would let anyone disconnect every client.
type admin struct {
	s     *Server
	token string

	once sync.Once
	ctx  context.Context // the server's lifetime; set by Run
}

func (a *admin) register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/admin/drain", a.authed(a.drain))
	mux.HandleFunc("GET /v1/admin/connections", a.authed(a.connections))
	a.registerProfiles(mux)
}

// registerProfiles serves the Go runtime profiles of this process (every
// role), how docs/benchmarks.md profiles a live server; behind the admin
// token because a profile reveals internals and a CPU profile costs CPU.
func (a *admin) registerProfiles(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", a.authed(pprof.Index))
	mux.HandleFunc("GET /debug/pprof/cmdline", a.authed(pprof.Cmdline))
	mux.HandleFunc("GET /debug/pprof/profile", a.authed(pprof.Profile))
	mux.HandleFunc("GET /debug/pprof/symbol", a.authed(pprof.Symbol))
	mux.HandleFunc("GET /debug/pprof/trace", a.authed(pprof.Trace))
}

// registerOutbox serves GET /v1/admin/outbox on the chat role. Without a
// mesh (one region) nothing is ever accepted into an outbox: pending is 0.
func (a *admin) registerOutbox(mux *http.ServeMux, region string, pending func(context.Context) (int64, error)) {
	mux.HandleFunc("GET /v1/admin/outbox", a.authed(func(w http.ResponseWriter, r *http.Request) {
		var n int64
		if pending != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			defer cancel()
			var err error
			if n, err = pending(ctx); err != nil {
				httpapi.WriteError(w, wire.Errorf(wire.CodeUnavailable, "outbox of region %s: %v", region, err))
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"region": region, "pending": n})
	}))
}

func (a *admin) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.token == "" {
			httpapi.WriteError(w, wire.Errorf(wire.CodeForbidden, "admin endpoints are disabled: start the server with --admin-token-file"))
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.token)) != 1 {
			httpapi.WriteError(w, wire.Errorf(wire.CodeUnauthenticated, "admin endpoints need Authorization: Bearer <admin token>"))
			return
		}
		h(w, r)
	}
}

func (a *admin) drain(w http.ResponseWriter, r *http.Request) {
	window := a.s.cfg.DrainWindow
	if v := r.URL.Query().Get("window"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > MaxDrainWindow {
			httpapi.WriteError(w, wire.Errorf(wire.CodeInvalid, "window must be a duration between 0s and %s, got %q", MaxDrainWindow, v))
			return
		}
		window = d
	}
	ctx := a.ctx
	if ctx == nil {
		httpapi.WriteError(w, wire.Errorf(wire.CodeUnavailable, "server is not running yet"))
		return
	}
	// Only the first drain spreads reconnects; later calls report progress.
	a.once.Do(func() {
		go func() { _ = a.s.gateway.Drain(ctx, window) }()
	})
	a.write(w, http.StatusAccepted, true)
}

func (a *admin) connections(w http.ResponseWriter, r *http.Request) {
	a.write(w, http.StatusOK, a.s.gateway.Draining())
}

func (a *admin) write(w http.ResponseWriter, status int, draining bool) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"draining": draining, "connections": a.s.gateway.Connections()})
}
