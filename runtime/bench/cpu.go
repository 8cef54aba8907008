package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ, which
// Linux fixes at 100 for user space on every architecture it exports /proc
// to (proc(5), "/proc/pid/stat": "measured in clock ticks (divide by
// sysconf(_SC_CLK_TCK))").
const clockTick = 10 * time.Millisecond

// Proc names a process whose CPU time a scenario reports (a Parley role,
// Kafka, Cassandra, Redis).
type Proc struct {
	// Name labels the figures, e.g. "chat", "kafka".
	Name string
	// PID is the process id on this machine.
	PID int
}

// ParseProc parses "NAME=PID" (the --proc flag). The name is letters,
// digits, '-' and '_'; the pid a positive integer.
func ParseProc(s string) (Proc, error) {
	name, pid, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return Proc{}, fmt.Errorf("process %q: want NAME=PID", s)
	}
	for _, r := range name {
		if !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return Proc{}, fmt.Errorf("process %q: name may hold letters, digits, '-' and '_' only", s)
		}
	}
	n, err := strconv.Atoi(pid)
	if err != nil || n <= 0 {
		return Proc{}, fmt.Errorf("process %q: pid %q is not a positive integer", s, pid)
	}
	return Proc{Name: name, PID: n}, nil
}

// ProcCPU returns the CPU time (user + system, every thread) pid has used,
// from /proc/PID/stat (Linux), at the kernel's 10 ms resolution.
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// the fields after it start past the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fs := strings.Fields(string(b[i+1:]))
	// fs[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(fs) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fs)+2)
	}
	var ticks int64
	for _, f := range fs[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * clockTick, nil
}

// ProcRunqWait returns, for each thread of pid, how long it has been
// runnable but waiting for a CPU: the second field of
// /proc/PID/task/TID/schedstat, in nanoseconds (Linux,
// Documentation/scheduler/sched-stats.rst). It fails when pid's threads
// cannot be listed or none of their schedstat files can be read (a kernel
// without CONFIG_SCHED_INFO); a thread that ends while it is read is
// skipped.
func ProcRunqWait(pid int) (map[int]time.Duration, error) {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "task")
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	waits := make(map[int]time.Duration, len(tasks))
	var lastErr error
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			lastErr = err
			continue
		}
		fs := strings.Fields(string(b))
		if len(fs) < 2 {
			return nil, fmt.Errorf("%s/%d/schedstat: %d fields, want 3", dir, tid, len(fs))
		}
		ns, err := strconv.ParseInt(fs[1], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s/%d/schedstat: %w", dir, tid, err)
		}
		waits[tid] = time.Duration(ns)
	}
	if len(waits) == 0 {
		return nil, fmt.Errorf("%s: no readable schedstat: %w", dir, lastErr)
	}
	return waits, nil
}

// waitedSince is how long the threads in end waited for a CPU since start
// (ProcRunqWait): a thread that started in between counts from zero, one
// that ended is left out.
func waitedSince(start, end map[int]time.Duration) time.Duration {
	var d time.Duration
	for tid, w := range end {
		d += w - start[tid]
	}
	return d
}

// cpuSample is the CPU time of a set of processes at one instant, and how
// long their threads had waited for a CPU.
type cpuSample struct {
	at     time.Time
	procs  []Proc
	used   []time.Duration         // -1: unreadable
	waited []map[int]time.Duration // nil: unreadable
}

// sampleCPU reads the CPU time of procs now.
func sampleCPU(procs []Proc) *cpuSample {
	s := &cpuSample{at: time.Now(), procs: procs, used: make([]time.Duration, len(procs)), waited: make([]map[int]time.Duration, len(procs))}
	for i, p := range procs {
		d, err := ProcCPU(p.PID)
		if err != nil {
			d = -1
		}
		s.used[i] = d
		s.waited[i], _ = ProcRunqWait(p.PID)
	}
	return s
}

// into reads the processes again and adds to r, for each process and in
// total, the CPU milliseconds it used per 1,000 of ops since s and the cores
// it used on average (figures "cpu_ms_per_1k_<what>.NAME" and
// "cpu_cores.NAME"; ".total" sums the processes, the load generator
// excluded when it is one of them under the name "bench"), and how many of
// its threads were on average runnable but waiting for a CPU
// ("runq_threads.NAME", ProcRunqWait; ".total" likewise). A process whose
// CPU could not be read is named in a note instead.
func (s *cpuSample) into(r *Result, what string, ops int64) {
	if s == nil || len(s.procs) == 0 {
		return
	}
	end := sampleCPU(s.procs)
	wall := end.at.Sub(s.at)
	var total, totalWait time.Duration
	waits, others := 0, 0
	for i, p := range s.procs {
		inTotal := p.Name != "bench" // the load generator is not the system measured
		if s.waited[i] != nil && end.waited[i] != nil && wall > 0 {
			w := waitedSince(s.waited[i], end.waited[i])
			r.Figures["runq_threads."+p.Name] = round3(float64(w) / float64(wall))
			waits++
			if inTotal {
				totalWait += w
				others++
			}
		}
		if s.used[i] < 0 || end.used[i] < 0 {
			r.Notes = append(r.Notes, fmt.Sprintf("CPU of %s (pid %d) could not be read", p.Name, p.PID))
			continue
		}
		d := end.used[i] - s.used[i]
		if inTotal {
			total += d
		}
		cpuFigures(r, what, p.Name, d, wall, ops)
	}
	cpuFigures(r, what, "total", total, wall, ops)
	r.Notes = append(r.Notes, fmt.Sprintf("CPU per process over the %.1f s send phase, from /proc/PID/stat (10 ms resolution); total excludes the load generator", wall.Seconds()))
	if others > 0 {
		r.Figures["runq_threads.total"] = round3(float64(totalWait) / float64(wall))
	}
	if waits > 0 {
		r.Notes = append(r.Notes, "runq_threads: how many of the process's threads were, on average, runnable but waiting for a CPU (/proc/PID/task/*/schedstat); on a full machine that wait is most of the latency")
	}
}

func cpuFigures(r *Result, what, name string, d, wall time.Duration, ops int64) {
	ms := float64(d) / float64(time.Millisecond)
	if ops > 0 {
		r.Figures["cpu_ms_per_1k_"+what+"."+name] = round3(ms * 1000 / float64(ops))
	}
	if wall > 0 {
		r.Figures["cpu_cores."+name] = round3(float64(d) / float64(wall))
	}
}
