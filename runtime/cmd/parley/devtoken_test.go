package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/server"
	"github.com/parleychat/parley/runtime/wire"
)

func TestWelcomeNamesTheDataDir(t *testing.T) {
	if defaultDataDir != server.DefaultConfig().DataDir {
		t.Fatalf("defaultDataDir %q is not the server's default %q", defaultDataDir, server.DefaultConfig().DataDir)
	}
	cases := []struct {
		dataDir, flag string
	}{
		{"./parley-data", ""},
		{"parley-data", ""},
		{"/tmp/pd", " --data-dir /tmp/pd"},
		{"my data", " --data-dir 'my data'"},
		{"it's", ` --data-dir 'it'\''s'`},
	}
	for _, c := range cases {
		var b bytes.Buffer
		cfg := server.DefaultConfig()
		cfg.DataDir = c.dataDir
		writeWelcome(&b, cfg, server.RoleAll, true, "[::]:8080")
		out := b.String()
		for _, want := range []string{
			"parley chat --user alice --url ws://localhost:8080" + c.flag + "\n",
			"parley chat --user bob   --url ws://localhost:8080" + c.flag + "\n",
			"parley token --user alice" + c.flag + "\n",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("data dir %q: banner lacks %q:\n%s", c.dataDir, want, out)
			}
		}
		if c.flag == "" && strings.Contains(out, "--data-dir") {
			t.Errorf("default data dir: banner names --data-dir:\n%s", out)
		}
	}
}

func TestDevTokenWarnsWhenItCreatesTheSecret(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	var warn bytes.Buffer
	if _, err := devToken(dir, "alice", "cli", "", time.Hour, &warn); err != nil {
		t.Fatal(err)
	}
	if w := warn.String(); !strings.Contains(w, "warning") || !strings.Contains(w, "--data-dir "+dir) {
		t.Fatalf("no warning naming --data-dir %s on a new secret: %q", dir, w)
	}
	if _, err := os.Stat(filepath.Join(dir, "dev-secret")); err != nil {
		t.Fatal(err)
	}
	warn.Reset()
	if _, err := devToken(dir, "alice", "cli", "", time.Hour, &warn); err != nil {
		t.Fatal(err)
	}
	if warn.Len() != 0 {
		t.Fatalf("warning with an existing secret: %q", warn.String())
	}
	if _, err := devToken(dir, "bob/x", "cli", "", time.Hour, &warn); err == nil {
		t.Fatal("devToken accepted user bob/x")
	}
}

func TestDialErrorHints(t *testing.T) {
	unauth := wire.Errorf(wire.CodeUnauthenticated, "token signature is invalid\x1b[2K")
	cases := []struct {
		err      error
		dev      bool
		hint     bool
		contains string
	}{
		{unauth, true, true, `unauthenticated: token signature is invalid\x1b[2K`},
		{unauth, false, false, "unauthenticated"},
		{fmt.Errorf("dial: %w", wire.Errorf(wire.CodeUnavailable, "draining")), true, false, "draining"},
	}
	for i, c := range cases {
		err := dialError("ws://h", c.err, c.dev, "/srv/pd")
		msg := err.Error()
		if !strings.Contains(msg, c.contains) || strings.Contains(msg, "\x1b") {
			t.Errorf("case %d: %q lacks %q or holds ESC", i, msg, c.contains)
		}
		if got := strings.Contains(msg, "check that --data-dir matches"); got != c.hint {
			t.Errorf("case %d: hint %v, want %v: %q", i, got, c.hint, msg)
		}
		if c.hint && !strings.Contains(msg, filepath.Join("/srv/pd", "dev-secret")) {
			t.Errorf("case %d: hint does not name the secret: %q", i, msg)
		}
		var we *wire.Error
		if !errors.As(err, &we) {
			t.Errorf("case %d: %v does not unwrap to the cause", i, err)
		}
	}
}
