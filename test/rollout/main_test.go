package rollout

import (
	"os"
	"testing"
)

// TestMain runs the tests, or, when the test binary was re-executed as a load child (see
// loadChildEnv), that child's clients.
func TestMain(m *testing.M) {
	if cfg := os.Getenv(loadChildEnv); cfg != "" {
		os.Exit(runLoadChild(cfg))
	}
	os.Exit(m.Run())
}
