package limits_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/parleychat/parley/runtime/limits"
)

// redisClient is a client of the shared test server (hack/deps.sh up redis,
// or PARLEY_TEST_REDIS); the test skips when none answers, except under CI.
func redisClient(t *testing.T) *goredis.Client {
	t.Helper()
	addr := os.Getenv("PARLEY_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c := goredis.NewClient(&goredis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Redis not reachable at %s: %v (CI never skips)", addr, err)
		}
		t.Skipf("Redis not reachable at %s: %v; run hack/deps.sh up redis", addr, err)
	}
	return c
}

func randomPrefix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "test:" + hex.EncodeToString(b) + ":"
}

// TestSharedAcrossGateways: two gateways (two Shared on one Redis) share a
// user's burst: together they allow it once, not once each; another user
// has a budget of its own; the refusal says when to retry.
func TestSharedAcrossGateways(t *testing.T) {
	c := redisClient(t)
	prefix := randomPrefix()
	const burst = 6
	gw1 := limits.NewShared(c, prefix, 0.01, burst) // one token per 100 s: the burst is all there is
	gw2 := limits.NewShared(c, prefix, 0.01, burst)
	allowed := 0
	var wait time.Duration
	for i := range 2 * burst {
		gw := gw1
		if i%2 == 1 {
			gw = gw2
		}
		ok, w := gw.Allow("alice")
		if ok {
			allowed++
		} else {
			wait = w
		}
	}
	if allowed != burst {
		t.Fatalf("two gateways allowed alice %d sends, want the one burst of %d", allowed, burst)
	}
	if wait <= 0 || wait > 100*time.Second {
		t.Errorf("retry after %s, want within the 100 s a token takes", wait)
	}
	if ok, _ := gw2.Allow("bob"); !ok {
		t.Error("bob was refused: budgets are per user")
	}
	if ok, _ := limits.NewShared(c, prefix, 0, 1).Allow("alice"); !ok {
		t.Error("a zero rate must not limit")
	}
}

// TestSharedConcurrentChecks: checks made at the same time share round
// trips (their scripts go to Redis in pipelines) and each still gets its own
// user's answer: half the users spent their burst on another gateway first.
func TestSharedConcurrentChecks(t *testing.T) {
	c := redisClient(t)
	prefix := randomPrefix()
	gw1 := limits.NewShared(c, prefix, 0.01, 1) // one send per user, then one per 100 s
	gw2 := limits.NewShared(c, prefix, 0.01, 1)
	const users = 64
	for i := range users / 2 {
		if ok, _ := gw2.Allow(fmt.Sprint("u", i)); !ok {
			t.Fatalf("u%d refused its first send", i)
		}
	}
	var trips, scripts atomic.Int64
	c.AddHook(tripHook{trips: &trips, scripts: &scripts})
	got := make([]bool, users)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got[i], _ = gw1.Allow(fmt.Sprint("u", i))
		}()
	}
	close(start)
	wg.Wait()
	for i, ok := range got {
		if want := i >= users/2; ok != want {
			t.Errorf("u%d: allowed %v, want %v (spent on the other gateway: %v)", i, ok, want, !want)
		}
	}
	if n := scripts.Load(); n != users {
		t.Errorf("%d scripts ran for %d checks, want one each", n, users)
	}
	if n := trips.Load(); n >= users {
		t.Errorf("%d round trips for %d concurrent checks: none went together", n, users)
	}
	t.Logf("%d concurrent checks in %d round trips", users, trips.Load())
}

// tripHook counts round trips to Redis (a command or a pipeline) and the
// script calls among what they carried.
type tripHook struct{ trips, scripts *atomic.Int64 }

func (tripHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h tripHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.trips.Add(1)
		h.count(cmd)
		return next(ctx, cmd)
	}
}
func (h tripHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.trips.Add(1)
		for _, cmd := range cmds {
			h.count(cmd)
		}
		return next(ctx, cmds)
	}
}
func (h tripHook) count(cmd goredis.Cmder) {
	if n := cmd.Name(); n == "evalsha" || n == "eval" {
		h.scripts.Add(1)
	}
}

// TestSharedFallsBackToLocal: with Redis unreachable the gateway's own
// bucket decides: the burst is allowed, then refused.
func TestSharedFallsBackToLocal(t *testing.T) {
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", DialTimeout: 20 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	s := limits.NewShared(c, randomPrefix(), 0.01, 3)
	allowed := 0
	for range 5 {
		if ok, _ := s.Allow("alice"); ok {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("allowed %d with Redis down, want the local burst of 3", allowed)
	}
	// After a failure Redis is not asked for a second: a Redis that drops
	// packets costs one timeout, not one per request.
	var asked atomic.Int64
	c.AddHook(countHook{&asked})
	s2 := limits.NewShared(c, randomPrefix(), 1000, 1000)
	for range 100 {
		if ok, _ := s2.Allow("carol"); !ok {
			t.Fatal("refused within the local budget while Redis is down")
		}
	}
	if n := asked.Load(); n != 1 {
		t.Errorf("Redis was asked %d times for 100 checks within a second of a failure, want 1", n)
	}
}

// countHook counts the commands (scripts included) a client sends.
type countHook struct{ n *atomic.Int64 }

func (countHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h countHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (countHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}
