// Package parleybin builds the parley binary once for a test package's
// TestMain, so cross-process tests run the real command.
package parleybin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Build compiles runtime/cmd/parley into a temp dir and returns its path and
// a cleanup that removes the dir. The go command's output goes to stderr.
func Build() (path string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "parley-bin-")
	if err != nil {
		return "", nil, err
	}
	path = filepath.Join(dir, "parley")
	build := exec.Command("go", "build", "-o", path, "github.com/parleychat/parley/runtime/cmd/parley")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		_ = os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build parley: %w", err)
	}
	return path, func() { _ = os.RemoveAll(dir) }, nil
}
