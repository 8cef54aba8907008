// Command heapprof runs the embedded Parley server (the same server.New as
// `parley serve`) in a process that samples every 2 KiB of allocation and
// writes a heap profile on SIGUSR1, after two forced GCs, so the live heap
// per idle connection can be broken down by allocation site. It is a load
// tool kept out of the product: `parley serve` has no profiling endpoint.
//
//	heapprof --data-dir DIR --out DIR        # prints "listening on ADDR"
//	idleconns --url ws://ADDR/v1/ws --n 3000 --secret-dir DIR --hold 10m &
//	kill -USR1 <heapprof pid>                # writes DIR/heapN.pprof
//	go tool pprof -top -sample_index=inuse_space DIR/heap0.pprof
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/parleychat/parley/runtime/server"
)

func main() {
	cfg := server.DefaultConfig()
	flag.StringVar(&cfg.Addr, "addr", "127.0.0.1:0", "listen address")
	flag.StringVar(&cfg.DataDir, "data-dir", "", "data directory (required)")
	out := flag.String("out", ".", "directory for heapN.pprof")
	flag.DurationVar(&cfg.Presence.Heartbeat, "heartbeat", cfg.Presence.Heartbeat, "client heartbeat interval")
	flag.Parse()
	if cfg.DataDir == "" {
		fmt.Fprintln(os.Stderr, "heapprof: --data-dir is required")
		os.Exit(2)
	}
	cfg.DrainWindow = time.Second
	if err := run(cfg, *out); err != nil {
		fmt.Fprintln(os.Stderr, "heapprof:", err)
		os.Exit(1)
	}
}

func run(cfg server.Config, out string) error {
	// Set before anything is allocated worth profiling.
	runtime.MemProfileRate = 2048
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	fmt.Printf("listening on %s\n", ln.Addr())

	usr := make(chan os.Signal, 1)
	signal.Notify(usr, syscall.SIGUSR1)
	defer signal.Stop(usr)
	go func() {
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-usr:
			}
			if err := writeProfile(filepath.Join(out, fmt.Sprintf("heap%d.pprof", n))); err != nil {
				fmt.Fprintln(os.Stderr, "heapprof:", err)
			}
		}
	}()
	return srv.Run(ctx, ln)
}

func writeProfile(path string) error {
	// Two cycles: the first one's finalizers and sweeps settle in the
	// second, so the profile shows the live heap.
	runtime.GC()
	runtime.GC()
	if err := writeLookup("heap", path, 0); err != nil {
		return err
	}
	// Beside it, where the goroutines are (counts by stack), since an idle
	// connection should hold none.
	if err := writeLookup("goroutine", strings.TrimSuffix(path, ".pprof")+"-goroutines.txt", 1); err != nil {
		return err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("wrote %s: heap_alloc=%d heap_inuse=%d stack_inuse=%d goroutines=%d\n",
		path, ms.HeapAlloc, ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine())
	return nil
}

// writeLookup writes the runtime profile name to path (debug as
// pprof.Profile.WriteTo takes it).
func writeLookup(name, path string, debug int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, debug); err != nil {
		_ = f.Close() // the write error is the one to report
		return err
	}
	return f.Close()
}
