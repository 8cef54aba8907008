package memory

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/presence"
	"github.com/parleychat/parley/runtime/presence/presencetest"
)

func TestConformance(t *testing.T) {
	presencetest.Run(t, func(t *testing.T) presence.Registry {
		r := New()
		t.Cleanup(func() { _ = r.Close() })
		return r
	})
}

// Expired entries of users nobody asks about again are deleted too, by the
// sweep the next write (a heartbeat's Touch) runs when one is due; lookups
// share a read lock and filter expired entries themselves.
func TestSweepFreesExpired(t *testing.T) {
	r := New()
	defer r.Close()
	ctx := context.Background()
	past := time.Now().Add(-time.Millisecond)
	r.sessions["gone"] = []presence.Session{{UserID: "gone", SessionID: "s", Expires: past}}
	r.statuses["gone"] = status{expires: past}
	if err := r.Touch(ctx, presence.Session{UserID: "live", SessionID: "s", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.lastSweep = time.Now().Add(-sweepEvery)
	r.mu.Unlock()
	if err := r.Touch(ctx, presence.Session{UserID: "live", SessionID: "s", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.sessions["gone"]; ok {
		t.Errorf("expired sessions kept after a sweep")
	}
	if _, ok := r.statuses["gone"]; ok {
		t.Errorf("expired status kept after a sweep")
	}
	if _, ok := r.sessions["live"]; !ok {
		t.Errorf("live session swept")
	}
}

func TestClosed(t *testing.T) {
	r := New()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Touch(context.Background(), presence.Session{UserID: "u", SessionID: "s", Expires: time.Now().Add(time.Hour)}); !errors.Is(err, ErrClosed) {
		t.Errorf("Touch after Close: %v", err)
	}
	if _, err := r.Statuses(context.Background(), []string{"u"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Statuses after Close: %v", err)
	}
}
