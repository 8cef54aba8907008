package relay

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/bus/memory"
	"github.com/parleychat/parley/runtime/presence"
	presencememory "github.com/parleychat/parley/runtime/presence/memory"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

const (
	topic    = "parley.t.presence"
	deliver  = "parley.t.deliver"
	gateways = 2
)

var timings = presence.Config{Heartbeat: 50 * time.Millisecond, TTL: 300 * time.Millisecond, Grace: 50 * time.Millisecond}

// rig is a presence role (Announcer) and a gateway's Reporter on one
// memory bus and registry, with every deliver partition watched.
type rig struct {
	t   *testing.T
	b   *memory.Bus
	reg *presencememory.Registry
	rep *Reporter

	mu  sync.Mutex
	got [gateways][]*parleyv1.Presence // per deliver partition, in order
	// refreshed is the latest re-announcement (AnnouncerConfig.Refresh).
	refreshed []*parleyv1.Presence
	refreshes int
}

func newRig(t *testing.T) *rig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{t: t, b: memory.New(), reg: presencememory.New()}
	for _, tp := range []bus.Topic{{Name: topic, Partitions: 2}, {Name: deliver, Partitions: gateways}} {
		if err := r.b.CreateTopic(ctx, tp); err != nil {
			t.Fatal(err)
		}
	}
	for p := range int32(gateways) {
		err := r.b.Subscribe(ctx, deliver, p, func(rec bus.Record) {
			var dr parleyv1.DeliverRecord
			if err := proto.Unmarshal(rec.Value, &dr); err != nil {
				t.Errorf("undecodable deliver record: %v", err)
				return
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			for _, d := range dr.Deliveries {
				if len(d.UserIds) != 0 || d.GetPresence() == nil {
					t.Errorf("not a presence broadcast: %v", d)
				}
				r.got[p] = append(r.got[p], d.GetPresence())
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	refresh := func(_ context.Context, ds []*parleyv1.Delivery) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.refreshed = r.refreshed[:0]
		for _, d := range ds {
			r.refreshed = append(r.refreshed, d.GetPresence())
		}
		r.refreshes++
	}
	ann := NewAnnouncer(r.reg, r.b, AnnouncerConfig{Topic: topic, DeliverTopic: deliver, Member: "presence-0", Presence: timings, Refresh: refresh})
	r.rep = NewReporter(r.reg, r.b, topic, timings)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := ann.Run(ctx); err != nil {
			t.Errorf("announcer: %v", err)
		}
	})
	wg.Go(func() { r.rep.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = r.b.Close()
	})
	select {
	case <-ann.Joined():
	case <-time.After(5 * time.Second):
		t.Fatal("announcer did not join")
	}
	return r
}

// waitStatus waits until every gateway got user's status as its latest change.
func (r *rig) waitStatus(user string, st parleyv1.PresenceStatus) {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok := true
		r.mu.Lock()
		for p := range gateways {
			var last *parleyv1.Presence
			for _, x := range r.got[p] {
				if x.UserId == user {
					last = x
				}
			}
			ok = ok && last != nil && last.Status == st
		}
		r.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("gateways did not all get %s %v", user, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// count returns how many changes of user gateway 0 got.
func (r *rig) count(user string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, x := range r.got[0] {
		if x.UserId == user {
			n++
		}
	}
	return n
}

func sess(user, id string) presence.Session {
	return presence.Session{UserID: user, DeviceID: "d", SessionID: id, GatewayID: "gateway-1"}
}

const (
	online  = parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE
	offline = parleyv1.PresenceStatus_PRESENCE_STATUS_OFFLINE
)

func TestOnlineOfflineBroadcast(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	a1, a2 := sess("alice", "s1"), sess("alice", "s2")
	if err := r.rep.Connected(ctx, a1); err != nil {
		t.Fatal(err)
	}
	// The gateway registers the session itself, before anything else.
	if ss, _ := r.reg.Sessions(ctx, []string{"alice"}); len(ss["alice"]) != 1 {
		t.Fatalf("sessions after Connected: %v", ss)
	}
	r.waitStatus("alice", online)
	if err := r.rep.Connected(ctx, a2); err != nil {
		t.Fatal(err)
	}
	if err := r.rep.Disconnected(ctx, a1); err != nil {
		t.Fatal(err)
	}
	if ss, _ := r.reg.Sessions(ctx, []string{"alice"}); len(ss["alice"]) != 1 {
		t.Fatalf("sessions after one Disconnected: %v", ss)
	}
	// Readers see what the presence role wrote.
	if ps, _ := r.rep.Get(ctx, []string{"alice"}); ps["alice"].GetStatus() != online {
		t.Fatalf("Get: %v", ps)
	}
	if err := r.rep.Disconnected(ctx, a2); err != nil {
		t.Fatal(err)
	}
	r.waitStatus("alice", offline)
	if n := r.count("alice"); n != 2 {
		t.Fatalf("gateway 0 got %d changes of alice, want 2 (online, offline: a second device adds none)", n)
	}
	if ps, _ := r.rep.Get(ctx, []string{"alice"}); ps["alice"].GetStatus() != offline {
		t.Fatalf("Get after offline: %v", ps)
	}
}

// TestRefreshReannouncesOnline: every heartbeat the announcer re-tells the
// other regions (AnnouncerConfig.Refresh) who is online through it, with
// their last activity; a user gone offline is no longer in it.
func TestRefreshReannouncesOnline(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	d := sess("dave", "s1")
	if err := r.rep.Connected(ctx, d); err != nil {
		t.Fatal(err)
	}
	r.waitStatus("dave", online)
	has := func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, p := range r.refreshed {
			if p.GetUserId() == "dave" && p.GetStatus() == online && p.GetLastActive() > 0 {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(5 * time.Second)
	for !has() {
		if time.Now().After(deadline) {
			t.Fatal("no refresh re-announced dave online")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := r.rep.Disconnected(ctx, d); err != nil {
		t.Fatal(err)
	}
	r.waitStatus("dave", offline)
	time.Sleep(timings.Heartbeat) // a refresh taken before the offline
	r.mu.Lock()
	r.refreshed = nil
	r.mu.Unlock()
	time.Sleep(4 * timings.Heartbeat)
	if has() {
		t.Error("a refresh after dave went offline still re-announced him online")
	}
}

// A session whose gateway stops reporting (crashed) expires: offline after
// TTL and grace.
func TestSilentSessionExpires(t *testing.T) {
	r := newRig(t)
	if err := r.rep.Connected(context.Background(), sess("bob", "s1")); err != nil {
		t.Fatal(err)
	}
	r.waitStatus("bob", online)
	r.waitStatus("bob", offline)
}

// Heartbeats keep a user online past TTL.
func TestHeartbeatsKeepOnline(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	s := sess("carol", "s1")
	if err := r.rep.Connected(ctx, s); err != nil {
		t.Fatal(err)
	}
	r.waitStatus("carol", online)
	for end := time.Now().Add(3 * timings.TTL); time.Now().Before(end); time.Sleep(timings.Heartbeat) {
		if err := r.rep.Heartbeat(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.count("carol"); n != 1 {
		t.Fatalf("carol's changes: %d, want 1 (online only)", n)
	}
}

// Events older than TTL (a replay after downtime) do not bring a session
// back; events are applied in order.
func TestStaleEventsSkipped(t *testing.T) {
	r := newRig(t)
	old := time.Now().Add(-time.Hour).UnixMilli()
	v, err := encode([]event{
		{Kind: kindConnected, User: "old", Session: "s1", At: old},
		{Kind: "renamed-in-a-later-version", User: "x", Session: "s"},
		{Kind: kindConnected, User: "new", Session: "s2", At: time.Now().UnixMilli()},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.b.Publish(context.Background(), topic, 0, nil, v); err != nil {
		t.Fatal(err)
	}
	r.waitStatus("new", online)
	if n := r.count("old"); n != 0 {
		t.Fatalf("a stale event announced old %d times", n)
	}
}
