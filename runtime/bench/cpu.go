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
	user, sys, err := ProcCPUSplit(pid)
	return user + sys, err
}

// ProcCPUSplit returns the CPU time pid has used in user space and in the
// kernel on its behalf (utime and stime of /proc/PID/stat, every thread;
// Linux), at the kernel's 10 ms resolution. The kernel's share tells a
// server's own work from the system calls it makes: for a WebSocket
// fan-out, mostly the TCP stack's, the same per write for any server.
func ProcCPUSplit(pid int) (user, sys time.Duration, err error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// the fields after it start past the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fs := strings.Fields(string(b[i+1:]))
	// fs[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(fs) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fs)+2)
	}
	var ticks [2]int64
	for j, f := range fs[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks[j] = n
	}
	return time.Duration(ticks[0]) * clockTick, time.Duration(ticks[1]) * clockTick, nil
}

// SysShare is the kernel's share of the CPU time between two
// ProcCPUSplit readings (user and system time at each), rounded to three
// places; false when no CPU time passed.
func SysShare(user0, sys0, user1, sys1 time.Duration) (float64, bool) {
	total := user1 - user0 + sys1 - sys0
	if total <= 0 {
		return 0, false
	}
	return round3(float64(sys1-sys0) / float64(total)), true
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
	sys    []time.Duration         // of used, the kernel's
	waited []map[int]time.Duration // nil: unreadable
}

// sampleCPU reads the CPU time of procs now.
func sampleCPU(procs []Proc) *cpuSample {
	s := &cpuSample{at: time.Now(), procs: procs, used: make([]time.Duration, len(procs)),
		sys: make([]time.Duration, len(procs)), waited: make([]map[int]time.Duration, len(procs))}
	for i, p := range procs {
		user, sys, err := ProcCPUSplit(p.PID)
		d := user + sys
		if err != nil {
			d = -1
		}
		s.used[i], s.sys[i] = d, sys
		s.waited[i], _ = ProcRunqWait(p.PID)
	}
	return s
}

// into reads the processes again and adds to r, for each process and in
// total, the CPU milliseconds it used per 1,000 of ops since s and the cores
// it used on average (figures "cpu_ms_per_1k_<what>.NAME" and
// "cpu_cores.NAME"; ".total" sums the processes, the load generator
// excluded when it is one of them under the name "bench"), the kernel's
// share of each process's time ("cpu_sys_share.NAME", ProcCPUSplit), and how many of
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
		if share, ok := SysShare(s.used[i]-s.sys[i], s.sys[i], end.used[i]-end.sys[i], end.sys[i]); ok {
			r.Figures["cpu_sys_share."+p.Name] = share
		}
	}
	cpuFigures(r, what, "total", total, wall, ops)
	r.Notes = append(r.Notes, fmt.Sprintf("CPU per process over the %.1f s send phase, from /proc/PID/stat (10 ms resolution); total excludes the load generator; cpu_sys_share: the kernel's part (stime)", wall.Seconds()))
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
