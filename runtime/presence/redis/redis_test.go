package redis_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/parleychat/parley/runtime/presence"
	"github.com/parleychat/parley/runtime/presence/presencetest"
	"github.com/parleychat/parley/runtime/presence/redis"
)

// redisAddr finds the shared test server (hack/deps.sh up redis). It skips
// the test when none answers, except under CI, which never skips.
func redisAddr(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("PARLEY_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c := goredis.NewClient(&goredis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1, DialerRetries: 1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Redis not reachable at %s: %v (CI never skips)", addr, err)
		}
		t.Skipf("Redis not reachable at %s: %v; run hack/deps.sh up redis", addr, err)
	}
	return addr
}

// rawClient is a plain client for looking at and breaking the registry's keys.
func rawClient(t *testing.T, addr string) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// newRegistry opens a registry whose keys start with a prefix unique to the
// test, deleted when it ends, so tests can share a server.
func newRegistry(t *testing.T, addr string) (*redis.Registry, string) {
	t.Helper()
	name := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	prefix := fmt.Sprintf("parleytest:%s:%d:", name, time.Now().UnixNano())
	r, err := redis.New(context.Background(), redis.Config{Addr: addr, KeyPrefix: prefix})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	raw := rawClient(t, addr)
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		deleteKeys(t, raw, prefix)
	})
	return r, prefix
}

// deleteKeys deletes every key under prefix: a FLUSHALL limited to one
// test's keys.
func deleteKeys(t *testing.T, c *goredis.Client, prefix string) int {
	t.Helper()
	ctx := context.Background()
	n := 0
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		if err := c.Del(ctx, iter.Val()).Err(); err != nil {
			t.Fatalf("DEL %s: %v", iter.Val(), err)
		}
		n++
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("SCAN %s*: %v", prefix, err)
	}
	return n
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(presencetest.WaitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", presencetest.WaitFor, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConformance(t *testing.T) {
	addr := redisAddr(t)
	presencetest.Run(t, func(t *testing.T) presence.Registry {
		r, _ := newRegistry(t, addr)
		return r
	})
}

func in(d time.Duration) time.Time { return time.Now().Add(d).Truncate(time.Millisecond) }

// checkRebuild wipes the data with wipe (as a Redis restart without
// persistence would) and checks that the next heartbeat puts the session and
// status back.
func checkRebuild(t *testing.T, r presence.Registry, wipe func()) {
	t.Helper()
	ctx := context.Background()
	u := "user." + strconv.FormatInt(time.Now().UnixNano(), 10)
	s := presence.Session{UserID: u, DeviceID: "phone", SessionID: "phone-1", GatewayID: "gateway-3", Expires: in(time.Minute)}
	if err := r.Touch(ctx, s); err != nil {
		t.Fatalf("Touch: %v", err)
	}
	st := presence.Status{Online: true, LastActive: in(0)}
	if err := r.SetStatus(ctx, u, st, time.Minute); err != nil {
		t.Fatalf("SetStatus: %v", err)
	}
	if got, err := r.Sessions(ctx, []string{u}); err != nil || len(got[u]) != 1 {
		t.Fatalf("before the wipe: Sessions = %+v, %v", got, err)
	}

	wipe()
	if got, err := r.Sessions(ctx, []string{u}); err != nil || len(got[u]) != 0 {
		t.Fatalf("after the wipe: Sessions = %+v, %v; want none", got, err)
	}
	if got, err := r.Statuses(ctx, []string{u}); err != nil || len(got) != 0 {
		t.Fatalf("after the wipe: Statuses = %+v, %v; want none", got, err)
	}

	// The next heartbeat (presence.Service.Heartbeat: Touch, then SetStatus).
	s.Expires = in(time.Minute)
	if err := r.Touch(ctx, s); err != nil {
		t.Fatalf("Touch after the wipe: %v", err)
	}
	st.LastActive = in(0)
	if err := r.SetStatus(ctx, u, st, time.Minute); err != nil {
		t.Fatalf("SetStatus after the wipe: %v", err)
	}
	got, err := r.Sessions(ctx, []string{u})
	if err != nil {
		t.Fatalf("Sessions after the heartbeat: %v", err)
	}
	if ss := got[u]; len(ss) != 1 || ss[0].SessionID != s.SessionID || ss[0].DeviceID != s.DeviceID ||
		ss[0].GatewayID != s.GatewayID || !ss[0].Expires.Equal(s.Expires) {
		t.Fatalf("Sessions after the heartbeat = %+v, want %+v", ss, s)
	}
	sts, err := r.Statuses(ctx, []string{u})
	if err != nil {
		t.Fatalf("Statuses after the heartbeat: %v", err)
	}
	if g, ok := sts[u]; !ok || !g.Online || !g.LastActive.Equal(st.LastActive) {
		t.Fatalf("Statuses after the heartbeat = %+v (present %v), want %+v", g, ok, st)
	}
}

// TestRebuildsAfterFlush is a Redis restart (docs/design.md §4) on the shared server:
// every key of the registry is deleted (FLUSHALL itself would wipe other
// tests' data there; TestRebuildsAfterRestart runs the real thing on a
// private server).
func TestRebuildsAfterFlush(t *testing.T) {
	addr := redisAddr(t)
	r, prefix := newRegistry(t, addr)
	raw := rawClient(t, addr)
	checkRebuild(t, r, func() {
		if n := deleteKeys(t, raw, prefix); n == 0 {
			t.Fatalf("no key under %q to delete", prefix)
		}
	})
}

func TestClose(t *testing.T) {
	addr := redisAddr(t)
	r, _ := newRegistry(t, addr)
	ctx := context.Background()
	s := presence.Session{UserID: "u", DeviceID: "d", SessionID: "s", GatewayID: "gateway-0", Expires: in(time.Minute)}
	if err := r.Touch(ctx, s); err != nil {
		t.Fatalf("Touch: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	calls := map[string]error{
		"Touch":     r.Touch(ctx, s),
		"Remove":    r.Remove(ctx, "u", "s"),
		"SetStatus": r.SetStatus(ctx, "u", presence.Status{}, time.Minute),
	}
	_, calls["Sessions"] = r.Sessions(ctx, []string{"u"})
	_, calls["Statuses"] = r.Statuses(ctx, []string{"u"})
	_, calls["Sessions(none)"] = r.Sessions(ctx, nil)
	for name, err := range calls {
		if !errors.Is(err, redis.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func TestNewFailsWithoutServer(t *testing.T) {
	// A port nobody listens on: bind one, then free it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	r, err := redis.New(context.Background(), redis.Config{Addr: addr, DialTimeout: 200 * time.Millisecond, Timeout: 300 * time.Millisecond})
	if err == nil {
		r.Close()
		t.Fatalf("New(%s) with no server: no error", addr)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the address", err)
	}
}

// TestExpiredEntriesAreDeleted checks the housekeeping the conformance suite
// cannot see: expired entries are pruned by reads and writes, and the keys of
// a user whose sessions all expired vanish.
func TestExpiredEntriesAreDeleted(t *testing.T) {
	addr := redisAddr(t)
	r, prefix := newRegistry(t, addr)
	raw := rawClient(t, addr)
	ctx := context.Background()
	u := "pruned"
	zkey, hkey := prefix+"sessions:{"+u+"}", prefix+"session:{"+u+"}"
	size := func() (int64, int64) {
		t.Helper()
		z, err1 := raw.ZCard(ctx, zkey).Result()
		h, err2 := raw.HLen(ctx, hkey).Result()
		if err := errors.Join(err1, err2); err != nil {
			t.Fatalf("ZCARD/HLEN: %v", err)
		}
		return z, h
	}

	short := presence.Session{UserID: u, DeviceID: "phone", SessionID: "phone-1", GatewayID: "gateway-0", Expires: in(100 * time.Millisecond)}
	long := presence.Session{UserID: u, DeviceID: "laptop", SessionID: "laptop-1", GatewayID: "gateway-1", Expires: in(time.Minute)}
	for _, s := range []presence.Session{short, long} {
		if err := r.Touch(ctx, s); err != nil {
			t.Fatalf("Touch: %v", err)
		}
	}
	if pttl := raw.PTTL(ctx, zkey).Val(); pttl <= 30*time.Second || pttl > time.Minute {
		t.Errorf("PTTL of the sessions key = %v, want the latest expiry (about 1m)", pttl)
	}
	waitUntil(t, "the short session to expire", func() bool { return time.Now().After(short.Expires) })
	if z, h := size(); z != 2 || h != 2 {
		t.Fatalf("before any read: %d entries, %d data fields; want the expired one still there", z, h)
	}
	got, err := r.Sessions(ctx, []string{u})
	if err != nil || len(got[u]) != 1 || got[u][0].SessionID != long.SessionID {
		t.Fatalf("Sessions = %+v, %v; want the long session", got, err)
	}
	if z, h := size(); z != 1 || h != 1 {
		t.Errorf("after Sessions saw an expired entry: %d entries, %d data fields; want 1 and 1", z, h)
	}

	// A user whose last session expires leaves no key behind.
	idle := "idle"
	s := presence.Session{UserID: idle, DeviceID: "phone", SessionID: "phone-1", GatewayID: "gateway-0", Expires: in(150 * time.Millisecond)}
	if err := r.Touch(ctx, s); err != nil {
		t.Fatalf("Touch: %v", err)
	}
	keys := []string{prefix + "sessions:{" + idle + "}", prefix + "session:{" + idle + "}"}
	if n := raw.Exists(ctx, keys...).Val(); n != 2 {
		t.Fatalf("EXISTS right after Touch = %d, want 2", n)
	}
	waitUntil(t, "the idle user's keys to expire", func() bool { return raw.Exists(ctx, keys...).Val() == 0 })
}

// TestRebuildsAfterRestart runs a private redis-server (FLUSHALL and a real
// restart would disturb the shared one): after FLUSHALL, and after a restart
// that also empties the script cache and breaks every pooled connection, the
// next heartbeat puts the session back.
func TestRebuildsAfterRestart(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server in PATH for a private server; TestRebuildsAfterFlush covers the shared one")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	l.Close()
	dir := t.TempDir()
	// No retries: the waits below poll instead.
	admin := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { admin.Close() })

	// start runs redis-server until the returned stop (or the test's end).
	start := func(t *testing.T) (stop func()) {
		t.Helper()
		cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
			"--dir", dir, "--daemonize", "no", "--loglevel", "warning")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		stop = func() {
			cmd.Process.Kill()
			<-done
		}
		t.Cleanup(stop)
		waitUntil(t, "the private redis-server to answer", func() bool {
			select {
			case <-done:
				t.Fatalf("redis-server on %s exited during startup", addr)
			default:
			}
			return admin.Ping(context.Background()).Err() == nil
		})
		return stop
	}
	stop := start(t)

	r, err := redis.New(context.Background(), redis.Config{Addr: addr})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { r.Close() })

	t.Run("FLUSHALL", func(t *testing.T) {
		checkRebuild(t, r, func() {
			if err := admin.FlushAll(context.Background()).Err(); err != nil {
				t.Fatalf("FLUSHALL: %v", err)
			}
		})
	})
	t.Run("Restart", func(t *testing.T) {
		checkRebuild(t, r, func() {
			// Killed, as in a crash: the pooled connections break and the
			// new server has no data and no scripts.
			stop()
			start(t)
		})
	})
}

// TestConcurrentWritesBatched: thousands of sessions registered and then
// removed all at once (a connect storm, every client of a gateway leaving)
// all land, through the writer's pipelines, with no call failing; and a
// write after the server lost its script cache (SCRIPT FLUSH, as after a
// restart) still succeeds.
func TestConcurrentWritesBatched(t *testing.T) {
	addr := redisAddr(t)
	r, _ := newRegistry(t, addr)
	ctx := context.Background()
	const users, perUser = 500, 4
	var ids []string
	for u := range users {
		ids = append(ids, fmt.Sprintf("u%d", u))
	}
	expires := time.Now().Add(time.Minute)
	run := func(op func(user string, d int) error) {
		var wg sync.WaitGroup
		errs := make(chan error, users*perUser)
		for _, u := range ids {
			for d := range perUser {
				wg.Go(func() { errs <- op(u, d) })
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	run(func(u string, d int) error {
		return r.Touch(ctx, presence.Session{UserID: u, DeviceID: "d", SessionID: fmt.Sprintf("%s-s%d", u, d), GatewayID: "gw-0", Expires: expires})
	})
	got, err := r.Sessions(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ss := range got {
		n += len(ss)
	}
	if len(got) != users || n != users*perUser {
		t.Fatalf("after %d concurrent touches: %d users with %d sessions, want %d with %d", users*perUser, len(got), n, users, users*perUser)
	}

	run(func(u string, d int) error { return r.Remove(ctx, u, fmt.Sprintf("%s-s%d", u, d)) })
	if got, err = r.Sessions(ctx, ids); err != nil || len(got) != 0 {
		t.Fatalf("after removing every session: %d users with sessions (%v), want none", len(got), err)
	}

	if err := rawClient(t, addr).ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	s := presence.Session{UserID: "after-flush", DeviceID: "d", SessionID: "s", GatewayID: "gw-0", Expires: expires}
	if err := r.Touch(ctx, s); err != nil {
		t.Fatalf("Touch after SCRIPT FLUSH: %v", err)
	}
	if got, err := r.Sessions(ctx, []string{"after-flush"}); err != nil || len(got["after-flush"]) != 1 {
		t.Fatalf("Sessions after SCRIPT FLUSH = %v, %v; want the session", got, err)
	}
}
