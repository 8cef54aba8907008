package presence_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/presence"
	"github.com/parleychat/parley/runtime/presence/memory"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

var testConfig = presence.Config{
	Heartbeat: 50 * time.Millisecond,
	TTL:       150 * time.Millisecond,
	Grace:     200 * time.Millisecond,
}

const (
	online  = parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE
	offline = parleyv1.PresenceStatus_PRESENCE_STATUS_OFFLINE
	unknown = parleyv1.PresenceStatus_PRESENCE_STATUS_UNKNOWN
)

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recorder collects announced changes.
type recorder struct {
	mu     sync.Mutex
	events []*parleyv1.Presence
}

func (r *recorder) add(p *parleyv1.Presence) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, p)
}

func (r *recorder) of(user string) []*parleyv1.Presence {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*parleyv1.Presence
	for _, p := range r.events {
		if p.GetUserId() == user {
			out = append(out, p)
		}
	}
	return out
}

func statuses(ps []*parleyv1.Presence) []parleyv1.PresenceStatus {
	var out []parleyv1.PresenceStatus
	for _, p := range ps {
		out = append(out, p.GetStatus())
	}
	return out
}

func (r *recorder) waitFor(t *testing.T, user string, want ...parleyv1.PresenceStatus) []*parleyv1.Presence {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%s to be announced %v", user, want), func() bool { return len(r.of(user)) >= len(want) })
	got := r.of(user)
	if fmt.Sprint(statuses(got)) != fmt.Sprint(want) {
		t.Fatalf("announced for %s: %v, want %v", user, statuses(got), want)
	}
	return got
}

type fixture struct {
	s   *presence.Service
	reg presence.Registry
	rec *recorder
	n   atomic.Int64
}

// newFixture starts a service over reg (a fresh memory registry if nil).
func newFixture(t *testing.T, reg presence.Registry) *fixture {
	if reg == nil {
		m := memory.New()
		t.Cleanup(func() { _ = m.Close() })
		reg = m
	}
	f := &fixture{reg: reg, rec: new(recorder)}
	f.s = presence.NewService(reg, testConfig, func(p *parleyv1.Presence) {
		// Calling back into the service from onChange must not deadlock.
		if _, err := f.s.Get(context.Background(), []string{p.GetUserId()}); err != nil {
			t.Errorf("Get from onChange: %v", err)
		}
		f.rec.add(p)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.s.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return f
}

func sess(user, device string) presence.Session {
	return presence.Session{UserID: user, DeviceID: device, SessionID: user + "/" + device, GatewayID: "gateway-0"}
}

func (f *fixture) connect(t *testing.T, s presence.Session) {
	t.Helper()
	if err := f.s.Connected(context.Background(), s); err != nil {
		t.Fatalf("Connected(%s): %v", s.SessionID, err)
	}
}

func (f *fixture) disconnect(t *testing.T, s presence.Session) {
	t.Helper()
	if err := f.s.Disconnected(context.Background(), s); err != nil {
		t.Fatalf("Disconnected(%s): %v", s.SessionID, err)
	}
}

// heartbeat keeps s alive like a client would, until stop or the end of the
// test; count returns how many heartbeats were sent so far.
func (f *fixture) heartbeat(t *testing.T, s presence.Session) (count func() int64, stop func()) {
	var n atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(testConfig.Heartbeat)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if err := f.s.Heartbeat(ctx, s); err != nil && ctx.Err() == nil {
					t.Errorf("Heartbeat(%s): %v", s.SessionID, err)
				}
				n.Add(1)
			}
		}
	}()
	stop = func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return n.Load, stop
}

// barrier returns once every change decided before it was announced:
// changes are announced in order, so it connects a fresh user and waits for
// its online announcement.
func (f *fixture) barrier(t *testing.T) {
	t.Helper()
	u := fmt.Sprintf("barrier-%d", f.n.Add(1))
	f.connect(t, sess(u, "d"))
	f.rec.waitFor(t, u, online)
}

func (f *fixture) get(t *testing.T, user string) *parleyv1.Presence {
	t.Helper()
	got, err := f.s.Get(context.Background(), []string{user})
	if err != nil {
		t.Fatalf("Get(%s): %v", user, err)
	}
	return got[user]
}

func TestOnlineAnnouncedOnceOnConnect(t *testing.T) {
	f := newFixture(t, nil)
	phone := sess("alice", "phone")
	f.connect(t, phone)
	beats, _ := f.heartbeat(t, phone)
	got := f.rec.waitFor(t, "alice", online)
	if got[0].GetLastActive() == 0 {
		t.Errorf("online announced without last_active")
	}
	waitUntil(t, "a few heartbeats", func() bool { return beats() >= 3 })
	f.connect(t, phone) // a repeated Connected of the same session
	f.barrier(t)
	f.rec.waitFor(t, "alice", online)
	if p := f.get(t, "alice"); p.GetStatus() != online {
		t.Errorf("Get = %v, want online", p)
	}
	if sts, _ := f.reg.Statuses(context.Background(), []string{"alice"}); !sts["alice"].Online {
		t.Errorf("registry status = %+v, want online", sts["alice"])
	}
}

func TestSecondDeviceDoesNotAnnounce(t *testing.T) {
	f := newFixture(t, nil)
	phone, laptop := sess("bob", "phone"), sess("bob", "laptop")
	f.connect(t, phone)
	f.heartbeat(t, phone)
	f.rec.waitFor(t, "bob", online)
	f.connect(t, laptop)
	f.disconnect(t, laptop)
	if f.s.Pending("bob") {
		t.Errorf("offline pending although the phone is connected")
	}
	f.barrier(t)
	f.rec.waitFor(t, "bob", online)
	if ss, _ := f.reg.Sessions(context.Background(), []string{"bob"}); len(ss["bob"]) != 1 || ss["bob"][0].SessionID != phone.SessionID {
		t.Errorf("registry sessions = %+v, want the phone only", ss["bob"])
	}
}

func TestReconnectWithinGraceIsSilent(t *testing.T) {
	f := newFixture(t, nil)
	phone := sess("carol", "phone")
	f.connect(t, phone)
	f.rec.waitFor(t, "carol", online)
	f.disconnect(t, phone)
	if !f.s.Pending("carol") {
		t.Fatalf("no offline pending after the last session left")
	}
	if p := f.get(t, "carol"); p.GetStatus() != online {
		t.Errorf("Get during the grace = %v, want online", p)
	}
	// The phone switched networks and comes back with a new session.
	back := phone
	back.SessionID += "-2"
	f.connect(t, back)
	f.heartbeat(t, back)
	if f.s.Pending("carol") {
		t.Errorf("offline still pending after reconnecting")
	}
	f.barrier(t)
	f.rec.waitFor(t, "carol", online)
}

func TestDisconnectAnnouncesOfflineAfterGrace(t *testing.T) {
	f := newFixture(t, nil)
	phone := sess("dave", "phone")
	f.connect(t, phone)
	on := f.rec.waitFor(t, "dave", online)[0]
	f.disconnect(t, phone)
	got := f.rec.waitFor(t, "dave", online, offline)
	off := got[1]
	if off.GetLastActive() == 0 || off.GetLastActive() < on.GetLastActive() {
		t.Errorf("offline last_active %d, want set and not before online's %d", off.GetLastActive(), on.GetLastActive())
	}
	if f.s.Tracked("dave") {
		t.Errorf("service still holds state for an offline user")
	}
	if p := f.get(t, "dave"); p.GetStatus() != offline || p.GetLastActive() != off.GetLastActive() {
		t.Errorf("Get = %v, want offline at %d", p, off.GetLastActive())
	}
	sts, err := f.reg.Statuses(context.Background(), []string{"dave"})
	if err != nil || sts["dave"].Online || sts["dave"].LastActive.UnixMilli() != off.GetLastActive() {
		t.Errorf("registry status = %+v, %v; want offline at %d", sts["dave"], err, off.GetLastActive())
	}
}

func TestSilentSessionGoesOffline(t *testing.T) {
	f := newFixture(t, nil)
	phone := sess("erin", "phone")
	f.connect(t, phone)
	f.rec.waitFor(t, "erin", online)
	// No heartbeat and no Disconnected: its gateway died.
	got := f.rec.waitFor(t, "erin", online, offline)
	if got[1].GetLastActive() == 0 {
		t.Errorf("offline announced without last_active")
	}
	if ss, _ := f.reg.Sessions(context.Background(), []string{"erin"}); len(ss["erin"]) != 0 {
		t.Errorf("registry still lists %+v", ss["erin"])
	}
	// Heartbeats resuming (the connection was alive after all) bring the
	// user back online.
	if err := f.s.Heartbeat(context.Background(), phone); err != nil {
		t.Fatal(err)
	}
	f.rec.waitFor(t, "erin", online, offline, online)
}

func TestOnlineThroughAnotherService(t *testing.T) {
	reg := memory.New()
	t.Cleanup(func() { _ = reg.Close() })
	a, b := newFixture(t, reg), newFixture(t, reg)
	onB, onA := sess("frank", "laptop"), sess("frank", "phone")
	b.connect(t, onB)
	_, stopB := b.heartbeat(t, onB)
	b.rec.waitFor(t, "frank", online)

	// Already online through b: a does not announce it again, nor offline
	// when its own session ends.
	a.connect(t, onA)
	a.disconnect(t, onA)
	waitUntil(t, "a to let go of frank after the grace", func() bool { return !a.s.Tracked("frank") })
	a.barrier(t)
	if got := a.rec.of("frank"); len(got) != 0 {
		t.Errorf("a announced %v for a user online through b", statuses(got))
	}
	if p := a.get(t, "frank"); p.GetStatus() != online {
		t.Errorf("a's Get = %v, want online (from the registry)", p)
	}
	stopB()
	b.disconnect(t, onB)
	b.rec.waitFor(t, "frank", online, offline)
}

// failingRegistry fails every read.
type failingRegistry struct{ presence.Registry }

var errDown = errors.New("registry down")

func (failingRegistry) Statuses(context.Context, []string) (map[string]presence.Status, error) {
	return nil, errDown
}

func (failingRegistry) Sessions(context.Context, []string) (map[string][]presence.Session, error) {
	return nil, errDown
}

func TestGetWithRegistryDown(t *testing.T) {
	reg := memory.New()
	t.Cleanup(func() { _ = reg.Close() })
	f := newFixture(t, failingRegistry{reg})
	f.connect(t, sess("gina", "phone"))
	f.rec.waitFor(t, "gina", online)
	got, err := f.s.Get(context.Background(), []string{"gina", "harry"})
	if err != nil {
		t.Fatalf("Get failed: %v", err)
	}
	if got["gina"].GetStatus() != online {
		t.Errorf("gina = %v, want online (known locally)", got["gina"])
	}
	if got["harry"].GetStatus() != unknown {
		t.Errorf("harry = %v, want unknown", got["harry"])
	}
}

func TestNeverSeenIsOffline(t *testing.T) {
	f := newFixture(t, nil)
	if p := f.get(t, "ivan"); p.GetStatus() != offline || p.GetLastActive() != 0 {
		t.Errorf("Get of a user never seen = %v, want offline with last_active 0", p)
	}
}

func TestInvalidSession(t *testing.T) {
	f := newFixture(t, nil)
	if err := f.s.Connected(context.Background(), presence.Session{UserID: "u"}); err == nil {
		t.Errorf("Connected without a session id succeeded")
	}
}

// TestRemoteRegionStatuses: with remote regions set, Get merges the statuses
// other regions announced (RemoteStatusID): online there is online here while
// it is fresh (Config.RemoteOnline: re-announced within RemoteWindow), and
// the latest last activity wins; without them, a user seen only elsewhere is
// offline here.
func TestRemoteRegionStatuses(t *testing.T) {
	reg := memory.New()
	t.Cleanup(func() { _ = reg.Close() })
	ctx := context.Background()
	past := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	later := past.Add(10 * time.Minute)
	// The default timings (a remote window of minutes), so that a slow run
	// does not age "recent" out.
	cfg := presence.Config{}
	recent := time.Now().Add(-cfg.RemoteWindow() / 2).Truncate(time.Millisecond)
	for key, st := range map[string]presence.Status{
		presence.RemoteStatusID("jack", "us"): {Online: true, LastActive: recent}, // re-announced lately
		presence.RemoteStatusID("jill", "us"): {Online: true, LastActive: past},   // not re-announced for an hour: its offline was lost
		presence.RemoteStatusID("kate", "us"): {LastActive: later},                // left us after she left here
		"kate":                                {LastActive: past},
	} {
		if err := reg.SetStatus(ctx, key, st, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	f := &fixture{s: presence.NewService(reg, cfg, nil)}
	if p := f.get(t, "jack"); p.GetStatus() != offline {
		t.Errorf("jack without remote regions = %v, want offline (never seen here)", p)
	}
	f.s.SetRemoteRegions(func() []string { return []string{"us", "ap"} })
	if p := f.get(t, "jack"); p.GetStatus() != online || p.GetLastActive() != recent.UnixMilli() {
		t.Errorf("jack = %v, want online (announced by us) with last_active %d", p, recent.UnixMilli())
	}
	if p := f.get(t, "jill"); p.GetStatus() != offline || p.GetLastActive() != past.UnixMilli() {
		t.Errorf("jill = %v, want offline (us's online is older than the remote window) with last_active %d", p, past.UnixMilli())
	}
	elsewhere, err := f.s.OnlineElsewhere(ctx, []string{"jack", "jill", "kate"})
	if err != nil || !elsewhere["jack"] || elsewhere["jill"] || elsewhere["kate"] {
		t.Errorf("OnlineElsewhere = %v, %v; want only jack", elsewhere, err)
	}
	if p := f.get(t, "kate"); p.GetStatus() != offline || p.GetLastActive() != later.UnixMilli() {
		t.Errorf("kate = %v, want offline with the later last_active %d", p, later.UnixMilli())
	}
	if p := f.get(t, "liam"); p.GetStatus() != offline || p.GetLastActive() != 0 {
		t.Errorf("liam = %v, want offline, never seen", p)
	}
}
