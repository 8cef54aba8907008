package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// configTestCmd is a command with flags of each kind serve and migrate use.
type configTestVals struct {
	brokers       []string
	region, addr  string
	grace         time.Duration
	parts         int
	node          int64
	rate          float64
	skip, verbose bool
}

func configTestCmd(v *configTestVals) *cobra.Command {
	cmd := &cobra.Command{Use: "serve", RunE: func(*cobra.Command, []string) error { return nil }}
	f := cmd.Flags()
	f.StringSliceVar(&v.brokers, "kafka-brokers", nil, "")
	f.StringVar(&v.region, "region", "local", "")
	f.StringVar(&v.addr, "addr", ":8080", "")
	f.DurationVar(&v.grace, "presence-grace", 5*time.Second, "")
	f.IntVar(&v.parts, "ingress-partitions", 16, "")
	f.Int64Var(&v.node, "node-id", -1, "")
	f.Float64Var(&v.rate, "send-rate", 20, "")
	f.BoolVar(&v.skip, "skip-kafka", false, "")
	f.BoolVar(&v.verbose, "verbose", false, "")
	addConfigFlag(cmd)
	return cmd
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "parley.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// run parses args and applies the environment and the config file.
func runConfig(t *testing.T, v *configTestVals, args ...string) error {
	t.Helper()
	cmd := configTestCmd(v)
	if err := cmd.Flags().Parse(args); err != nil {
		t.Fatal(err)
	}
	return flagsFromEnvAndConfig(cmd)
}

func TestConfigFilePrecedence(t *testing.T) {
	p := writeConfig(t, `# a comment
kafka-brokers: [127.0.0.1:9092, "b:9092"]
region: file
addr: file:1
presence-grace: 7s
ingress-partitions: 32
send-rate: 2.5
skip-kafka: true
`)
	t.Setenv("PARLEY_REGION", "env")
	t.Setenv("PARLEY_ADDR", "env:1")
	var v configTestVals
	if err := runConfig(t, &v, "--config", p, "--addr", "flag:1"); err != nil {
		t.Fatal(err)
	}
	if v.addr != "flag:1" {
		t.Errorf("addr %q: the command line must win", v.addr)
	}
	if v.region != "env" {
		t.Errorf("region %q: the environment must win over the file", v.region)
	}
	if !slices.Equal(v.brokers, []string{"127.0.0.1:9092", "b:9092"}) {
		t.Errorf("brokers %q", v.brokers)
	}
	if v.grace != 7*time.Second || v.parts != 32 || v.rate != 2.5 || !v.skip {
		t.Errorf("from file: grace %v parts %d rate %v skip %v", v.grace, v.parts, v.rate, v.skip)
	}
	if v.node != -1 || v.verbose {
		t.Errorf("defaults changed: node %d verbose %v", v.node, v.verbose)
	}
}

func TestConfigFileFromEnvAndScalarList(t *testing.T) {
	p := writeConfig(t, "kafka-brokers: a:1,b:2\n")
	t.Setenv("PARLEY_CONFIG", p)
	var v configTestVals
	if err := runConfig(t, &v); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(v.brokers, []string{"a:1", "b:2"}) {
		t.Fatalf("brokers %q: a scalar list is parsed as on the command line", v.brokers)
	}
}

func TestConfigFileEmpty(t *testing.T) {
	for _, text := range []string{"", "# only a comment\n"} {
		var v configTestVals
		if err := runConfig(t, &v, "--config", writeConfig(t, text)); err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		if v.region != "local" {
			t.Fatalf("region %q", v.region)
		}
	}
}

func TestConfigFileErrors(t *testing.T) {
	for _, c := range []struct {
		text string
		want []string // substrings of the error
	}{
		{"regoin: eu\n", []string{`unknown key "regoin"`, "parley.yaml", "line 1"}},
		{"region: eu\nconfig: other.yaml\n", []string{`unknown key "config"`, "line 2"}},
		{"presence-grace: 5\n", []string{`key "presence-grace"`, "want a duration"}},
		{"ingress-partitions: many\n", []string{`key "ingress-partitions"`, "want an integer", `"many"`}},
		{"ingress-partitions: 1.5\n", []string{`key "ingress-partitions"`, "want an integer"}},
		{"skip-kafka: yes\n", []string{`key "skip-kafka"`, "want true or false"}},
		{"send-rate: fast\n", []string{`key "send-rate"`, "want a number"}},
		{"region: [eu]\n", []string{`key "region"`, "want a string", "got a list"}},
		{"kafka-brokers: {a: 1}\n", []string{`key "kafka-brokers"`, "want a list of strings"}},
		{"kafka-brokers: [[a]]\n", []string{`key "kafka-brokers"`, "want a list of strings"}},
		{"region:\n", []string{`key "region"`, "no value"}},
		{"region: a\nregion: b\n", []string{`key "region" already set on line 1`}},
		{"- region\n", []string{"want a mapping"}},
		{"region: [\n", []string{"parley.yaml"}},
		{"region: a\n---\nregion: b\n", []string{"one YAML document"}},
	} {
		var v configTestVals
		err := runConfig(t, &v, "--config", writeConfig(t, c.text))
		if err == nil {
			t.Errorf("%q: accepted", c.text)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not mention %q", c.text, err, w)
			}
		}
	}
	var v configTestVals
	if err := runConfig(t, &v, "--config", filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

// TestServeAndMigrateTakeConfig checks the real commands accept --config and
// reject an unknown key before doing anything.
func TestServeAndMigrateTakeConfig(t *testing.T) {
	p := writeConfig(t, "kafka-brokers: [127.0.0.1:9092]\nno-such-flag: 1\n")
	for _, cmd := range []*cobra.Command{serveCmd(), migrateCmd()} {
		cmd.SetArgs([]string{"--config", p})
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), `unknown key "no-such-flag"`) {
			t.Errorf("%s: %v", cmd.Name(), err)
		}
	}
}
