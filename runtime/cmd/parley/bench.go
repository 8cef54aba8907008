package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/bench"
	"github.com/parleychat/parley/runtime/server"
)

// benchFlags are the flags every scenario shares.
type benchFlags struct {
	url, secretDir, tokenFile, jsonFile, adminTokenFile string
	cpuProfile                                          string
	procs                                               []string // NAME=PID
	scenario                                            string   // set by the subcommand
	serverPIDs                                          []int
	duration                                            time.Duration
	// Embedded server settings (no --url).
	sendRate    float64
	sendBurst   int
	drainWindow time.Duration
	keepData    bool
}

func benchCmd() *cobra.Command {
	var bf benchFlags
	cmd := &cobra.Command{
		Use:   "bench SCENARIO",
		Short: "Load generator: idle, dm, fanout, storm (against an embedded server unless --url)",
		Long: `Runs a load scenario and prints a progress line per second, then a table.

Without --url it starts an embedded server in this process on a temp data
dir, so "parley bench dm" needs nothing running. With --url, tokens are minted
from the dev secret in --secret-dir (the server's data dir) or read from
--token-file (one a line).`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&bf.url, "url", "", "server root, e.g. ws://127.0.0.1:8080 (default: start an embedded server); a comma-separated list of gateways: idle puts one per child process in turn; dm and fanout put user i on gateway i mod n (a dm pair then spans two gateways, or two regions)")
	pf.StringVar(&bf.secretDir, "secret-dir", "", "data dir of the target server (dev-secret) to mint tokens from")
	pf.StringVar(&bf.tokenFile, "token-file", "", "file of bearer tokens, one a line, used in order")
	pf.StringVar(&bf.jsonFile, "json", "", "write the result as JSON to this file")
	pf.IntSliceVar(&bf.serverPIDs, "server-pid", nil, "pids of the external server processes whose RSS to read and add up (/proc/PID/status), comma-separated")
	pf.DurationVar(&bf.duration, "duration", 10*time.Second, "measured phase (send phase, or idle hold)")
	pf.Float64Var(&bf.sendRate, "server-send-rate", 20, "embedded server: per-user sends per second")
	pf.IntVar(&bf.sendBurst, "server-send-burst", 40, "embedded server: per-user send burst")
	pf.DurationVar(&bf.drainWindow, "server-drain-window", 200*time.Millisecond, "embedded server: drain window (storm, and the stop at the end)")
	pf.BoolVar(&bf.keepData, "keep-data", false, "embedded server: keep its temp data dir")
	pf.StringVar(&bf.adminTokenFile, "admin-token-file", "", "storm against --url: admin token of POST /v1/admin/drain")
	pf.StringSliceVar(&bf.procs, "proc", nil, "dm, fanout: NAME=PID of a process whose CPU over the send phase to report per 1,000 sends (repeat or comma-separate: each role, kafka, cassandra, redis); the load generator is added as \"bench\"")
	pf.StringVar(&bf.cpuProfile, "cpu-profile", "", "write a CPU profile of this process (load generator, and the embedded server without --url) to this file")

	var dm bench.DMOptions
	dmCmd := &cobra.Command{
		Use: "dm", Short: "P pairs exchanging DMs at a total rate: sends/s, deliveries/s, send→deliver latency",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd, &bf, func(ctx context.Context, t *bench.Target, o bench.Options) (*bench.Result, error) {
				dm.Options = o
				return bench.DM(ctx, t, dm)
			})
		},
	}
	dmCmd.Flags().IntVar(&dm.Pairs, "pairs", 100, "pairs of users (one DM each)")
	dmCmd.Flags().Float64Var(&dm.Rate, "rate", 1000, "total sends per second")
	dmCmd.Flags().BoolVar(&dm.WarmDMs, "warm-dms", false, "send each DM's first message (which creates it) before the measured phase")

	var fo bench.FanoutOptions
	foCmd := &cobra.Command{
		Use: "fanout", Short: "G groups of M members, all online: send→each and send→last member latency",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd, &bf, func(ctx context.Context, t *bench.Target, o bench.Options) (*bench.Result, error) {
				fo.Options = o
				return bench.Fanout(ctx, t, fo)
			})
		},
	}
	foCmd.Flags().IntVar(&fo.Groups, "groups", 1, "groups")
	foCmd.Flags().IntVar(&fo.Members, "members", 500, "members per group")
	foCmd.Flags().Float64Var(&fo.Rate, "rate", 100, "total sends per second")

	var idle bench.IdleOptions
	var child bool
	var childN, childOffset int
	idleCmd := &cobra.Command{
		Use: "idle", Short: "N idle authenticated connections: connect rate, failures, server RSS per connection",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if child {
				t, cleanup, err := childTarget(cmd, &bf, childOffset)
				if err != nil {
					return err
				}
				defer cleanup()
				idle.Options = bench.Options{Duration: bf.duration}
				return bench.RunIdleChild(cmd.Context(), t, idle, childN, childOffset, cmd.OutOrStdout())
			}
			return runBench(cmd, &bf, func(ctx context.Context, t *bench.Target, o bench.Options) (*bench.Result, error) {
				idle.Options = o
				// Connections always run in child processes, so the server's
				// RSS (this process when embedded) holds no client state.
				idle.Spawn = idleSpawner(t, &bf, idle)
				return bench.Idle(ctx, t, idle)
			})
		},
	}
	idf := idleCmd.Flags()
	idf.IntVar(&idle.N, "n", 1000, fmt.Sprintf("connections (child processes of at most %d each)", bench.MaxConnsPerProcess))
	idf.IntVar(&idle.PerProcess, "per-process", bench.MaxConnsPerProcess, "connections per child process (at most the default)")
	idf.IntVar(&idle.Sources, "sources", 16, "source addresses 127.0.0.1..N (loopback servers)")
	idf.IntVar(&idle.Concurrency, "concurrency", 32, "parallel dials per process")
	idf.DurationVar(&idle.Ping, "ping", 20*time.Second, "heartbeat interval per connection")
	idf.BoolVar(&idle.WSPing, "ws-ping", false, "heartbeat with WebSocket pings (a thin client) instead of the protocol's Ping frames (the SDK)")
	idf.StringVar(&idle.UserPrefix, "user-prefix", "", "user ids PREFIX0..; default a fresh prefix per run")
	idf.BoolVar(&child, "child", false, "internal: run as a connection child process")
	idf.IntVar(&childN, "child-n", 0, "internal: connections of this child")
	idf.IntVar(&childOffset, "child-offset", 0, "internal: first user index of this child")
	_ = idf.MarkHidden("child")
	_ = idf.MarkHidden("child-n")
	_ = idf.MarkHidden("child-offset")

	var st bench.StormOptions
	var stChild bool
	var stChildN, stChildOffset int
	stCmd := &cobra.Command{
		Use: "storm", Short: "N clients reconnect at once after a drain: time until all re-synced, peak memory",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if stChild {
				t, cleanup, err := childTarget(cmd, &bf, stChildOffset)
				if err != nil {
					return err
				}
				defer cleanup()
				c := bench.StormChild{N: stChildN, Offset: stChildOffset, UserPrefix: st.UserPrefix, Missed: st.Missed, Timeout: st.Timeout}
				return bench.RunStormChild(cmd.Context(), t, c, cmd.InOrStdin(), cmd.OutOrStdout())
			}
			return runBench(cmd, &bf, func(ctx context.Context, t *bench.Target, o bench.Options) (*bench.Result, error) {
				st.Options = o
				if bf.adminTokenFile != "" {
					b, err := os.ReadFile(bf.adminTokenFile)
					if err != nil {
						return nil, err
					}
					st.AdminToken = strings.TrimSpace(string(b))
				}
				// Clients always run in child processes, so the server's
				// process (this one when embedded) holds no client sockets.
				st.Spawn = stormSpawner(t, &bf)
				return bench.Storm(ctx, t, st)
			})
		},
	}
	stf := stCmd.Flags()
	stf.IntVar(&st.N, "n", 1000, "clients (in child processes of --per-process each)")
	stf.IntVar(&st.Missed, "missed", 1, "messages each DM gets while its clients are away (embedded)")
	stf.DurationVar(&st.Window, "window", 0, "drain window of an external server")
	stf.DurationVar(&st.Timeout, "timeout", 2*time.Minute, "wait for every client to re-sync, from the server being back (embedded) or the drain (--url)")
	stf.IntVar(&st.PerProcess, "per-process", bench.StormPerProcess, fmt.Sprintf("SDK clients per child process (even, at most %d)", bench.MaxConnsPerProcess))
	stf.StringVar(&st.UserPrefix, "user-prefix", "", "user ids PREFIX0..; default a fresh prefix per run")
	stf.BoolVar(&stChild, "child", false, "internal: run as a client child process")
	stf.IntVar(&stChildN, "child-n", 0, "internal: clients of this child")
	stf.IntVar(&stChildOffset, "child-offset", 0, "internal: first user index of this child")
	_ = stf.MarkHidden("child")
	_ = stf.MarkHidden("child-n")
	_ = stf.MarkHidden("child-offset")

	cmd.AddCommand(dmCmd, foCmd, idleCmd, stCmd)
	return cmd
}

// idleSpawner returns the command of one idle child: this executable with
// the same target flags.
func idleSpawner(t *bench.Target, bf *benchFlags, o bench.IdleOptions) func(ctx context.Context, n, offset int, prefix string) *exec.Cmd {
	return func(ctx context.Context, n, offset int, prefix string) *exec.Cmd {
		url := t.URL
		if len(t.URLs) > 1 {
			url = t.URLs[offset/max(o.PerProcess, 1)%len(t.URLs)]
		}
		return childCommand(ctx, t, bf, "idle", url, "--child-n", strconv.Itoa(n), "--child-offset", strconv.Itoa(offset),
			"--user-prefix", prefix, "--duration", bf.duration.String(), "--sources", strconv.Itoa(o.Sources),
			"--concurrency", strconv.Itoa(o.Concurrency), "--ping", o.Ping.String(), "--ws-ping="+strconv.FormatBool(o.WSPing))
	}
}

// stormSpawner returns the command of one storm child: this executable
// with the same target flags. Missed and Timeout are the effective ones
// (Missed is 0 against --url), so the child takes them as given.
func stormSpawner(t *bench.Target, bf *benchFlags) func(ctx context.Context, c bench.StormChild) *exec.Cmd {
	return func(ctx context.Context, c bench.StormChild) *exec.Cmd {
		return childCommand(ctx, t, bf, "storm", t.URL, "--child-n", strconv.Itoa(c.N), "--child-offset", strconv.Itoa(c.Offset),
			"--user-prefix", c.UserPrefix, "--missed", strconv.Itoa(c.Missed), "--timeout", c.Timeout.String())
	}
}

// childTarget is the target of a child process whose first user is offset:
// with --token-file, it takes the tokens from offset on.
func childTarget(cmd *cobra.Command, bf *benchFlags, offset int) (*bench.Target, func(), error) {
	bf.scenario = cmd.Name()
	t, cleanup, err := benchTarget(cmd.Context(), bf)
	if err != nil {
		return nil, nil, err
	}
	if len(t.FileTokens) > 0 {
		t.FileTokens = t.FileTokens[min(offset, len(t.FileTokens)):]
	}
	return t, cleanup, nil
}

// childCommand is `parley bench SCENARIO --child --url URL ARGS...` of this
// executable, with the target's token source: the embedded server's data
// dir, --secret-dir, or --token-file (children take tokens by index,
// offset..offset+n-1 of the file).
func childCommand(ctx context.Context, t *bench.Target, bf *benchFlags, scenario, url string, args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	args = append([]string{"bench", scenario, "--child", "--url", url}, args...)
	switch {
	case t.DataDir != "":
		args = append(args, "--secret-dir", t.DataDir)
	case bf.secretDir != "":
		args = append(args, "--secret-dir", bf.secretDir)
	case bf.tokenFile != "":
		args = append(args, "--token-file", bf.tokenFile)
	}
	return exec.CommandContext(ctx, exe, args...)
}

// benchTarget resolves the target: an embedded server or --url.
func benchTarget(ctx context.Context, bf *benchFlags) (*bench.Target, func(), error) {
	if bf.url == "" {
		dir, err := os.MkdirTemp("", "parley-bench-")
		if err != nil {
			return nil, nil, err
		}
		cfg := server.DefaultConfig()
		cfg.DataDir, cfg.Addr = dir, "127.0.0.1:0"
		cfg.SendRate, cfg.SendBurst, cfg.DrainWindow = bf.sendRate, bf.sendBurst, bf.drainWindow
		e, err := bench.StartEmbedded(ctx, cfg)
		if err != nil {
			_ = os.RemoveAll(dir)
			return nil, nil, err
		}
		t := &bench.Target{URL: "ws://" + e.Addr, Tokens: e.Server.DevIssuer, ServerPIDs: []int{os.Getpid()}, DataDir: dir, Embedded: e}
		return t, func() {
			_ = t.Embedded.Stop()
			if !bf.keepData {
				_ = os.RemoveAll(dir)
			}
		}, nil
	}
	urls := strings.Split(bf.url, ",")
	if len(urls) > 1 && bf.scenario != "idle" && bf.scenario != "dm" && bf.scenario != "fanout" {
		return nil, nil, fmt.Errorf("--url: only idle, dm and fanout take several gateways, got %d", len(urls))
	}
	t := &bench.Target{URL: urls[0], URLs: urls, ServerPIDs: bf.serverPIDs}
	switch {
	case bf.secretDir != "" && bf.tokenFile != "":
		return nil, nil, errors.New("give --secret-dir or --token-file, not both")
	case bf.secretDir != "":
		// Never create a secret: a new one signs tokens the server rejects.
		if _, err := os.Stat(filepath.Join(bf.secretDir, auth.DevSecretFile)); err != nil {
			return nil, nil, fmt.Errorf("--secret-dir: %w", err)
		}
		secret, err := auth.LoadOrCreateDevSecret(bf.secretDir)
		if err != nil {
			return nil, nil, err
		}
		t.Tokens = auth.NewDevIssuer(secret)
	case bf.tokenFile != "":
		b, err := os.ReadFile(bf.tokenFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--token-file: %w", err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l = strings.TrimSpace(l); l != "" {
				t.FileTokens = append(t.FileTokens, l)
			}
		}
	default:
		return nil, nil, errors.New("--url needs --secret-dir or --token-file")
	}
	return t, func() {}, nil
}

func runBench(cmd *cobra.Command, bf *benchFlags, run func(context.Context, *bench.Target, bench.Options) (*bench.Result, error)) error {
	ctx := cmd.Context()
	bf.scenario = cmd.Name()
	t, cleanup, err := benchTarget(ctx, bf)
	if err != nil {
		return err
	}
	defer cleanup()
	if bf.cpuProfile != "" {
		f, err := os.Create(bf.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer func() {
			if err := f.Close(); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "--cpu-profile: %v\n", err)
			}
		}()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpu-profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	o := bench.Options{Duration: bf.duration, Progress: cmd.ErrOrStderr()}
	for _, p := range bf.procs {
		pr, err := bench.ParseProc(p)
		if err != nil {
			return fmt.Errorf("--proc: %w", err)
		}
		if _, err := bench.ProcCPU(pr.PID); err != nil {
			return fmt.Errorf("--proc %s: %w", p, err)
		}
		o.Procs = append(o.Procs, pr)
	}
	if len(o.Procs) > 0 {
		o.Procs = append(o.Procs, bench.Proc{Name: "bench", PID: os.Getpid()})
	}
	r, err := run(ctx, t, o)
	if err != nil {
		return err
	}
	fmt.Fprint(cmd.OutOrStdout(), r.Table())
	if bf.jsonFile != "" {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(bf.jsonFile, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("--json: %w", err)
		}
	}
	return nil
}
