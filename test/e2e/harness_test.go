// Package e2e drives real `parley serve` processes with real WebSocket and
// REST clients (runtime/client), as a user would.
package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/test/internal/parleybin"
)

// binary is the parley binary built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	path, cleanup, err := parleybin.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = path
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// proc is one running `parley serve`.
type proc struct {
	t       *testing.T
	cmd     *exec.Cmd
	DataDir string
	Addr    string // host:port
	args    []string
	mu      sync.Mutex
	logs    strings.Builder
	exited  chan struct{}
}

var runningRE = regexp.MustCompile(`Parley is running on http://(\S+)`)

// startServer runs `parley serve` on a free loopback port with a fresh data
// dir (or dataDir when non-empty) and extra flags, and waits until /readyz
// answers 200. The process is killed at test cleanup.
func startServer(t *testing.T, dataDir string, flags ...string) *proc {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	p := &proc{t: t, DataDir: dataDir, args: flags}
	p.start()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) start() {
	t := p.t
	t.Helper()
	args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", p.DataDir}, p.args...)
	p.cmd = exec.Command(binary, args...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = &lockedWriter{p: p}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start parley: %v", err)
	}
	p.exited = make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			if m := runningRE.FindStringSubmatch(line); m != nil {
				select {
				case addrc <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case p.Addr = <-addrc:
	case <-p.exited:
		t.Fatalf("parley exited before listening:\n%s", p.Logs())
	case <-time.After(60 * time.Second):
		t.Fatalf("parley did not print its address within 60s:\n%s", p.Logs())
	}
	waitFor(t, 30*time.Second, "server ready", func() bool {
		resp, err := http.Get(p.HTTP() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

type lockedWriter struct{ p *proc }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.logs.Write(b)
}

// Logs returns everything the process printed so far.
func (p *proc) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// HTTP is the base URL for REST calls; WS the base URL for WebSocket dials.
func (p *proc) HTTP() string { return "http://" + p.Addr }
func (p *proc) WS() string   { return "ws://" + p.Addr }

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// restart starts the process again on the same data dir (new port).
func (p *proc) restart() {
	p.t.Helper()
	p.start()
}

// token runs `parley token` against the process's data dir.
func (p *proc) token(user, device string, ttl time.Duration) string {
	p.t.Helper()
	out, err := exec.Command(binary, "token", "--data-dir", p.DataDir, "--user", user, "--device", device, "--ttl", ttl.String()).Output()
	if err != nil {
		p.t.Fatalf("parley token --user %s: %v", user, err)
	}
	return strings.TrimSpace(string(out))
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
