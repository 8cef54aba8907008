package fleet

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/parleychat/parley/runtime/chat/rules"
	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// privateRedis is a redis-server of the test's own, so that it can be
// killed and restarted without disturbing other tests.
type privateRedis struct {
	t    *testing.T
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

func startPrivateRedis(t *testing.T) *privateRedis {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server not installed (hack/deps.sh up redis installs it)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := &privateRedis{t: t, addr: addr}
	r.start(path)
	t.Cleanup(r.kill)
	return r
}

func (r *privateRedis) start(path string) {
	r.t.Helper()
	_, port, _ := net.SplitHostPort(r.addr)
	// No persistence: a restart loses everything, the worst case for the
	// registry.
	r.cmd = exec.Command(path, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning")
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.done = make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	cl := goredis.NewClient(&goredis.Options{Addr: r.addr})
	defer cl.Close()
	waitFor(r.t, 20*time.Second, "private redis answers PING", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return cl.Ping(ctx).Err() == nil
	})
}

func (r *privateRedis) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		<-r.done
	}
}

func (r *privateRedis) restart() {
	r.t.Helper()
	r.kill()
	r.start(r.cmd.Path)
}

// presenceOf asks a gateway's REST API for user's presence; -1 when the
// request fails.
func presenceOf(ctx context.Context, rest *client.REST, user string) parleyv1.PresenceStatus {
	ps, err := rest.Presence(ctx, []string{user})
	if err != nil || len(ps) != 1 {
		return -1
	}
	return ps[0].Status
}

// TestRedisRestart: Redis (no persistence) dies while messages flow and
// comes back empty. Messages keep flowing meanwhile (routing falls back to
// every gateway), presence reads say unknown, and within about one
// heartbeat of the restart the gateways' heartbeats have rebuilt the
// session registry and the presence role has rewritten the statuses.
func TestRedisRestart(t *testing.T) {
	rd := startPrivateRedis(t)
	c := newCluster(t, clusterOpts{redis: rd.addr})
	c.chat(0)
	c.presence(0)
	g0, g1 := c.gateway(0), c.gateway(1)
	ctx := ctxT(t, 2*time.Minute)

	alice := c.connect(g0.WS(), "alice", "phone")
	bob := c.connect(g1.WS(), "bob", "phone")
	dm := rules.DMID("alice", "bob")
	rest := client.NewREST(g0.HTTP(), c.token("carol", "phone"))
	// Carol reads bob's presence: she must share a conversation with him.
	if _, err := rest.CreateGroup(ctx, "watchers", []string{"bob"}); err != nil {
		t.Fatalf("carol's group with bob: %v", err)
	}
	online, unknown := parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE, parleyv1.PresenceStatus_PRESENCE_STATUS_UNKNOWN
	waitFor(t, 10*time.Second, "bob online", func() bool { return presenceOf(ctx, rest, "bob") == online })

	s := startSenders(t, dm, alice, bob)
	waitFor(t, 30*time.Second, "20 sends", func() bool { return s.acks.count() >= 20 })

	rd.kill()
	down := s.acks.count()
	t.Logf("redis killed after %d sends", down)
	waitFor(t, 30*time.Second, "30 sends while Redis is down", func() bool { return s.acks.count() >= down+30 })
	waitFor(t, 10*time.Second, "presence reads unknown while Redis is down", func() bool { return presenceOf(ctx, rest, "bob") == unknown })
	// Pushes still arrive (to every gateway): bob has alice's latest
	// messages without reconnecting.
	var last uint64
	for _, a := range s.acks.all() {
		if a.text[:5] == "alice" {
			last = max(last, a.seq)
		}
	}
	waitFor(t, 10*time.Second, "bob gets alice's messages while Redis is down", func() bool { return bob.hasSeq(dm, last) })

	rd.restart()
	restarted := time.Now()
	up := s.acks.count()
	t.Logf("redis restarted (empty) after %d sends", up)
	// Bound, not a timing assertion: the next heartbeat of every session
	// rewrites the registry; allow for scheduling on a loaded machine.
	waitFor(t, 3*heartbeat+2*time.Second, "presence back within about a heartbeat", func() bool { return presenceOf(ctx, rest, "bob") == online })
	t.Logf("presence of bob back %s after the restart (heartbeat %s)", time.Since(restarted).Round(10*time.Millisecond), heartbeat)
	rc := goredis.NewClient(&goredis.Options{Addr: rd.addr})
	defer rc.Close()
	for _, u := range []string{"alice", "bob"} {
		key := fmt.Sprintf("%s:sessions:{%s}", c.name, u)
		waitFor(t, 3*heartbeat+2*time.Second, "session registry has "+u+" again", func() bool {
			n, err := rc.ZCard(ctx, key).Result()
			return err == nil && n == 1
		})
	}
	waitFor(t, 30*time.Second, "20 sends after the restart", func() bool { return s.acks.count() >= up+20 })
	s.finish(t)

	head := c.checkAcked(dm, s.acks.all())
	stored := c.storedLog(dm)
	for _, d := range []*device{alice, bob} {
		waitFor(t, 20*time.Second, d.name+" has every message", func() bool { return d.hasSeq(dm, head) })
		checkLog(t, d, dm, head, stored)
		if d.Reconnects() != 0 {
			t.Errorf("%s reconnected %d times; a Redis outage should not cost connections", d.name, d.Reconnects())
		}
	}
}
