package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadPeerFile(t *testing.T) {
	dir := t.TempDir()
	if ps, _, err := readPeerFile(filepath.Join(dir, "missing")); err != nil || len(ps) != 0 {
		t.Fatalf("missing file = %v, %v; want no peers and no error", ps, err)
	}
	path := filepath.Join(dir, "peers")
	if err := os.WriteFile(path, []byte("name=us,id=2,kafka=k:9092\n  name=ap,id=3,kafka=a:1;b:2 \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ps, text, err := readPeerFile(path)
	if err != nil || len(ps) != 2 || ps[1].Name != "ap" || len(ps[1].Brokers) != 2 || text == "" {
		t.Fatalf("readPeerFile = %+v, %q, %v", ps, text, err)
	}
	if err := os.WriteFile(path, []byte("name=us,id=9,kafka=k:9092"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readPeerFile(path); err == nil || !strings.Contains(err.Error(), "--peer-region-file") || !strings.Contains(err.Error(), "not 0..7") {
		t.Fatalf("bad file = %v, want an error naming the flag and the problem", err)
	}
}
