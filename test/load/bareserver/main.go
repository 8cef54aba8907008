// Command bareserver is the reference for the idle-connection memory budget
// (docs/benchmarks.md): a bare gorilla/websocket server with a
// 512 B read buffer and pooled write buffers that upgrades every request to
// /v1/ws, reads and discards frames on the HTTP handler's goroutine (as
// gorilla's examples do) or, with --detach, on a goroutine of its own while
// the handler returns (freeing net/http's per-request buffers, as Parley's
// gateway does), and sends nothing. It checks no token. /metrics exposes the Go runtime
// collectors and bare_connections (open connections). It is a load tool,
// not part of the product; test/load/idle-mem.sh measures it beside Parley.
//
//	bareserver --addr 127.0.0.1:0 [--detach]   # prints "listening on ADDR"
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	detach := flag.Bool("detach", false, "read each connection on a goroutine of its own and return from the handler")
	flag.Parse()
	if err := run(*addr, *detach); err != nil {
		fmt.Fprintln(os.Stderr, "bareserver:", err)
		os.Exit(1)
	}
}

func run(addr string, detach bool) error {
	reg := prometheus.NewRegistry()
	conns := prometheus.NewGauge(prometheus.GaugeOpts{Name: "bare_connections", Help: "Open WebSocket connections."})
	reg.MustRegister(conns, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	up := websocket.Upgrader{
		ReadBufferSize:  512,
		WriteBufferPool: &sync.Pool{},
		Subprotocols:    []string{"parley.v1.proto", "parley.v1.json"},
		CheckOrigin:     func(*http.Request) bool { return true },
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /v1/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		conns.Inc()
		read := func() {
			defer conns.Dec()
			defer func() { _ = c.Close() }()
			for {
				_, rd, err := c.NextReader()
				if err != nil {
					return
				}
				if _, err := io.Copy(io.Discard, rd); err != nil {
					return
				}
			}
		}
		if detach {
			go read()
			return
		}
		read()
	})

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
