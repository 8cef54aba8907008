package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/parleychat/parley/runtime/bench"
)

// asMainEnv makes the test binary run main instead of the tests: the bench
// spawns children from os.Executable, which in a test is this binary.
const asMainEnv = "PARLEY_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestBenchStormChildren runs `parley bench storm` with its clients in two
// child processes against the embedded server, through the whole command.
func TestBenchStormChildren(t *testing.T) {
	t.Setenv(asMainEnv, "1")
	out := filepath.Join(t.TempDir(), "storm.json")
	cmd := benchCmd()
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(io.Discard)
	cmd.SetArgs([]string{"storm", "--n", "8", "--per-process", "4", "--missed", "2", "--timeout", "1m", "--json", out})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + stdout.String())
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r bench.Result
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if p, _ := r.Params["processes"].(float64); p != 2 {
		t.Fatalf("params %v: want the clients in 2 child processes", r.Params)
	}
	f := r.Figures
	if f["resynced"] != 8 || f["pulled_total"] < 8*2 || f["max_pulled_by_one_client"] < 2 || len(r.Errors) != 0 {
		t.Fatalf("figures %v errors %v: want 8 clients re-synced, each pulling its 2 missed messages", f, r.Errors)
	}
}
