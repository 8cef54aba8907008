package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// components runs a server's long-lived parts (sequencer, gateway, presence,
// ...) on goroutines it owns; the first failure arrives on errc.
type components struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errc   chan error
}

func newComponents() *components {
	ctx, cancel := context.WithCancel(context.Background())
	return &components{ctx: ctx, cancel: cancel, errc: make(chan error, 16)}
}

// start runs fn until the components stop; an error other than
// cancellation is reported on errc, named.
func (c *components) start(name string, fn func(context.Context) error) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if err := fn(c.ctx); err != nil && !errors.Is(err, context.Canceled) {
			c.report(fmt.Errorf("%s: %w", name, err))
		}
	}()
}

// report passes err on without blocking: the first failure is what counts.
func (c *components) report(err error) {
	select {
	case c.errc <- err:
	default:
	}
}

// stop ends every component and waits for them.
func (c *components) stop() {
	c.cancel()
	c.wg.Wait()
}

// serveHTTP serves s's routes on ln until shutdown; a serve failure is
// reported as a component's.
func (s *Server) serveHTTP(ln net.Listener, c *components) *http.Server {
	if s.admin != nil {
		s.admin.ctx = c.ctx // before Serve: handlers start after it
	}
	// Every HTTP connection is bounded (issue 14): headers within 10 s, the
	// whole request within HTTPReadTimeout, each response within
	// HTTPWriteTimeout of its request (writeDeadline), and keep-alive
	// idleness by HTTPIdleTimeout. WebSocket connections, which clear these
	// deadlines on upgrade, are bounded by their heartbeats instead.
	hs := &http.Server{Handler: writeDeadline(s.handler, s.cfg.HTTPWriteTimeout), ReadHeaderTimeout: min(10*time.Second, s.cfg.HTTPReadTimeout),
		ReadTimeout: s.cfg.HTTPReadTimeout, IdleTimeout: s.cfg.HTTPIdleTimeout}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.report(fmt.Errorf("http: %w", err))
		}
	}()
	return hs
}

// shutdown drains the gateway (if this process has one) so clients get
// reconnect frames spread over DrainWindow, stops serving and every
// component, and closes the backends. It returns runErr, or the close error
// when there was none.
func (s *Server) shutdown(hs *http.Server, c *components, runErr error) error {
	if runErr != nil {
		slog.Error("component failed; shutting down", "err", runErr)
	}
	if s.gateway != nil {
		drainCtx, cancelDrain := context.WithTimeout(context.Background(), s.cfg.DrainWindow+5*time.Second)
		slog.Info("draining connections", "connections", s.gateway.Connections(), "window", s.cfg.DrainWindow)
		if err := s.gateway.Drain(drainCtx, s.cfg.DrainWindow); err != nil {
			slog.Warn("drain incomplete", "err", err)
		}
		cancelDrain()
	}
	if hs != nil {
		shutCtx, cancelShut := context.WithTimeout(context.Background(), 5*time.Second)
		_ = hs.Shutdown(shutCtx)
		cancelShut()
	}
	c.stop()
	if err := s.closeAll(); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// writeDeadline sets a write deadline of d from the start of every request
// that is not a WebSocket upgrade (http.Server.WriteTimeout would also apply
// to the upgrade's connection before the gateway takes it over): a client
// that asks for a large answer and stops reading loses the connection after
// d instead of holding it and its handler.
func writeDeadline(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(d))
		}
		h.ServeHTTP(w, r)
	})
}
