package bench

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/server"
)

// embedded starts an embedded server on a temp dir for one test.
func embedded(t *testing.T) *Target {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	cfg := server.DefaultConfig()
	cfg.DataDir = dir
	cfg.Addr = "127.0.0.1:0"
	cfg.DrainWindow = 200 * time.Millisecond
	e, err := StartEmbedded(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tg := &Target{URL: "ws://" + e.Addr, Tokens: e.Server.DevIssuer, ServerPIDs: []int{os.Getpid()}, DataDir: dir, Embedded: e}
	t.Cleanup(func() { _ = tg.Embedded.Stop() })
	return tg
}

func TestDM(t *testing.T) {
	tg := embedded(t)
	// The server runs in this process: its CPU is reported as "server".
	procs := []Proc{{Name: "server", PID: os.Getpid()}}
	r, err := DM(t.Context(), tg, DMOptions{Options: Options{Duration: time.Second, Procs: procs}, Pairs: 3, Rate: 30})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + r.Table())
	ok := r.Figures["sends_ok"]
	if ok < 10 || r.Figures["deliveries"] != ok || len(r.Errors) != 0 {
		t.Fatalf("sends_ok %v deliveries %v errors %v: want >= 10 sends, each delivered, no error", ok, r.Figures["deliveries"], r.Errors)
	}
	if got := r.Latency["send_to_deliver"].Count; float64(got) != ok {
		t.Fatalf("latency samples %d, want %v", got, ok)
	}
	// A second of sends in this process used some CPU, and the total is
	// the sum over the listed processes.
	per, total := r.Figures["cpu_ms_per_1k_sends.server"], r.Figures["cpu_ms_per_1k_sends.total"]
	if per <= 0 || total != per || r.Figures["cpu_cores.server"] <= 0 {
		t.Fatalf("cpu figures: server %v ms/1k (%v cores), total %v: want a positive server figure equal to the total",
			per, r.Figures["cpu_cores.server"], total)
	}
	wait, reported := r.Figures["runq_threads.server"]
	if !reported || wait < 0 || r.Figures["runq_threads.total"] != wait {
		t.Fatalf("runq figures: server %v (reported: %v), total %v: want a figure >= 0 equal to the total", wait, reported, r.Figures["runq_threads.total"])
	}
}

func TestParseProc(t *testing.T) {
	if p, err := ParseProc("kafka=123"); err != nil || p != (Proc{Name: "kafka", PID: 123}) {
		t.Errorf("ParseProc(kafka=123) = %+v, %v", p, err)
	}
	for _, bad := range []string{"kafka", "=12", "kafka=", "kafka=-1", "kafka=0", "kafka=x", "ka fka=1", "k/a=1"} {
		if _, err := ParseProc(bad); err == nil {
			t.Errorf("ParseProc(%q): no error", bad)
		}
	}
	if _, err := ProcCPU(os.Getpid()); err != nil {
		t.Errorf("ProcCPU(self): %v", err)
	}
}

// TestProcRunqWait oversubscribes the CPUs with this process's own threads
// and expects the time they waited for one to show.
func TestProcRunqWait(t *testing.T) {
	before, err := ProcRunqWait(os.Getpid())
	if err != nil {
		t.Fatalf("ProcRunqWait(self): %v", err)
	}
	n := 3 * runtime.NumCPU()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n))
	var wg sync.WaitGroup
	stop := time.Now().Add(300 * time.Millisecond)
	release := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			// One OS thread each, all runnable at once. A locked thread
			// ends with its goroutine, and an ended thread's wait is not
			// counted: the goroutines stay until the threads are read.
			runtime.LockOSThread()
			for time.Now().Before(stop) {
			}
			wg.Done()
			<-release
		}()
	}
	wg.Wait()
	after, err := ProcRunqWait(os.Getpid())
	close(release)
	if err != nil {
		t.Fatalf("ProcRunqWait(self): %v", err)
	}
	// n threads spinning for 300 ms on NumCPU CPUs wait about
	// 2 x NumCPU x 300 ms between them; ask for a tenth of that.
	if w, want := waitedSince(before, after), time.Duration(runtime.NumCPU())*60*time.Millisecond; w < want {
		t.Fatalf("threads waited %v for a CPU while %d spun on %d CPUs, want at least %v", w, n, runtime.NumCPU(), want)
	}
	if _, err := ProcRunqWait(-1); err == nil {
		t.Error("ProcRunqWait(-1): no error")
	}
}

func TestFanout(t *testing.T) {
	tg := embedded(t)
	r, err := Fanout(t.Context(), tg, FanoutOptions{Options: Options{Duration: time.Second}, Groups: 2, Members: 4, Rate: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + r.Table())
	ok := r.Figures["sends_ok"]
	if ok < 5 || r.Figures["deliveries"] != ok*3 || r.Figures["messages_fully_delivered"] != ok || len(r.Errors) != 0 {
		t.Fatalf("sends_ok %v deliveries %v complete %v errors %v: want every send delivered to 3 members", ok, r.Figures["deliveries"], r.Figures["messages_fully_delivered"], r.Errors)
	}
	if got := r.Latency["send_to_last_member"].Count; float64(got) != ok {
		t.Fatalf("last-member samples %d, want %v", got, ok)
	}
}

func TestIdle(t *testing.T) {
	tg := embedded(t)
	r, err := Idle(t.Context(), tg, IdleOptions{Options: Options{Duration: 300 * time.Millisecond}, N: 20, Sources: 2, Ping: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + r.Table())
	if r.Figures["connected"] != 20 || r.Figures["failed"] != 0 || r.Figures["dropped_during_hold"] != 0 || r.Figures["open_at_end"] != 20 {
		t.Fatalf("figures %v errors %v: want 20 connected and held", r.Figures, r.Errors)
	}
	if r.Figures["pings_sent"] < 20 {
		t.Fatalf("pings_sent %v, want at least one round of 20", r.Figures["pings_sent"])
	}
	if _, ok := r.Figures["server_rss_connected_mib"]; !ok {
		t.Fatalf("no server RSS sample in %v", r.Figures)
	}
}

func TestStorm(t *testing.T) {
	tg := embedded(t)
	r, err := Storm(t.Context(), tg, StormOptions{N: 6, Missed: 2, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + r.Table())
	if r.Figures["resynced"] != 6 || r.Figures["pulled_total"] != 6*2 || len(r.Errors) != 0 {
		t.Fatalf("figures %v errors %v: want 6 clients re-synced, each pulling 2 missed messages", r.Figures, r.Errors)
	}
}

func TestStormChildFails(t *testing.T) {
	tg := embedded(t)
	spawn := func(ctx context.Context, c StormChild) *exec.Cmd { return exec.CommandContext(ctx, "false") }
	_, err := Storm(t.Context(), tg, StormOptions{N: 4, PerProcess: 2, Spawn: spawn})
	if err == nil || !strings.Contains(err.Error(), `before reporting "connected"`) {
		t.Fatalf("Storm with failing children: %v, want an error naming the missing report", err)
	}
}

func TestStormRefusesMoreClientsThanServerFiles(t *testing.T) {
	tg := embedded(t)
	_, err := Storm(t.Context(), tg, StormOptions{N: 10_000_000, Spawn: func(context.Context, StormChild) *exec.Cmd {
		t.Fatal("Storm started clients the server has no files for")
		return nil
	}})
	if err == nil || !strings.Contains(err.Error(), "open-file limit") {
		t.Fatalf("Storm with 10M clients: %v, want an error naming the open-file limit", err)
	}
}

func TestParseBench(t *testing.T) {
	now := time.Unix(0, time.Now().UnixNano())
	got, key, ok := parseBench(benchText(now, 42))
	if !ok || !got.Equal(now) || key != 42 {
		t.Fatalf("parseBench = %v %d %v, want %v 42 true", got, key, ok, now)
	}
	if _, _, ok := parseBench("hello"); ok {
		t.Fatal("parseBench accepted a non-bench text")
	}
}

// TestProcCPUSplit: time spent spinning in user space shows as user time,
// time spent in system calls as system time, and SysShare tells them
// apart. Each phase runs until this process has used its CPU time (not for
// a wall-clock time: on a busy machine a wall-clock window may get little
// CPU); the minute is only a guard against a reading that never moves.
func TestProcCPUSplit(t *testing.T) {
	read := func() (time.Duration, time.Duration) {
		t.Helper()
		u, s, err := ProcCPUSplit(os.Getpid())
		if err != nil {
			t.Fatalf("ProcCPUSplit(self): %v", err)
		}
		return u, s
	}
	u0, s0 := read()
	x := 0
	for guard := time.Now().Add(time.Minute); ; {
		for i := range 100000 {
			x += i * i
		}
		if u, _ := read(); u-u0 >= 200*time.Millisecond {
			break
		}
		if time.Now().After(guard) {
			t.Fatalf("a minute of spinning in user space (%d) never counted 200 ms of user time", x)
		}
	}
	u1, s1 := read()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1)
	for guard := time.Now().Add(time.Minute); ; {
		for range 1000 {
			_, _ = f.Read(buf) // a system call doing next to nothing
			_ = syscall.Getppid()
		}
		if _, s := read(); s-s1 >= 100*time.Millisecond {
			break
		}
		if time.Now().After(guard) {
			t.Fatal("a minute of system calls never counted 100 ms of system time")
		}
	}
	u2, s2 := read()
	if share, ok := SysShare(u0, s0, u1, s1); !ok || share > 0.5 {
		t.Errorf("kernel share while spinning: %v (%v), want below a half", share, ok)
	}
	if _, ok := SysShare(u2, s2, u2, s2); ok {
		t.Error("SysShare with no CPU time passed reported a share")
	}
	if share, ok := SysShare(0, 0, 3*time.Second, time.Second); !ok || share != 0.25 {
		t.Errorf("SysShare(3 s user, 1 s system) = %v, %v; want 0.25", share, ok)
	}
}
