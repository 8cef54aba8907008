// Package presencetest is the conformance suite every presence.Registry
// backend passes.
//
// Times are compared at millisecond precision (what a Redis backend keeps).
// Each test uses user ids unique to the run, so the suite can share a server.
package presencetest

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/presence"
)

// WaitFor bounds every wait of the suite.
const WaitFor = 10 * time.Second

// shortTTL is the lifetime of entries a test waits to see expire.
const shortTTL = 200 * time.Millisecond

// Run runs the suite. newRegistry returns a fresh registry and registers its
// Close with t.Cleanup.
func Run(t *testing.T, newRegistry func(t *testing.T) presence.Registry) {
	t.Run("TouchSessionsRemove", func(t *testing.T) { testTouchSessionsRemove(t, newRegistry(t)) })
	t.Run("ExpiredSessionsAreNotReturned", func(t *testing.T) { testExpiredSessions(t, newRegistry(t)) })
	t.Run("TouchRefreshExtends", func(t *testing.T) { testTouchRefresh(t, newRegistry(t)) })
	t.Run("SeveralUsers", func(t *testing.T) { testSeveralUsers(t, newRegistry(t)) })
	t.Run("Statuses", func(t *testing.T) { testStatuses(t, newRegistry(t)) })
	t.Run("StatusTTL", func(t *testing.T) { testStatusTTL(t, newRegistry(t)) })
	t.Run("SetStatuses", func(t *testing.T) { testSetStatuses(t, newRegistry(t)) })
}

// user returns a user id unique to this test and run.
func user(t *testing.T, name string) string {
	test := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	return fmt.Sprintf("%s.%s.%d", test, name, time.Now().UnixNano())
}

func ms(d time.Duration) time.Time { return time.Now().Add(d).Truncate(time.Millisecond) }

func session(userID, device, gateway string, expires time.Time) presence.Session {
	return presence.Session{
		UserID:    userID,
		DeviceID:  device,
		SessionID: device + "-session",
		GatewayID: gateway,
		Expires:   expires,
	}
}

func touch(t *testing.T, r presence.Registry, s presence.Session) {
	t.Helper()
	if err := r.Touch(context.Background(), s); err != nil {
		t.Fatalf("Touch(%+v): %v", s, err)
	}
}

func sessions(t *testing.T, r presence.Registry, users ...string) map[string][]presence.Session {
	t.Helper()
	got, err := r.Sessions(context.Background(), users)
	if err != nil {
		t.Fatalf("Sessions(%v): %v", users, err)
	}
	return got
}

func statuses(t *testing.T, r presence.Registry, users ...string) map[string]presence.Status {
	t.Helper()
	got, err := r.Statuses(context.Background(), users)
	if err != nil {
		t.Fatalf("Statuses(%v): %v", users, err)
	}
	return got
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", WaitFor, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// equalSessions compares in any order.
func equalSessions(got, want []presence.Session) bool {
	if len(got) != len(want) {
		return false
	}
	byID := func(a, b presence.Session) int { return cmp.Compare(a.SessionID, b.SessionID) }
	got, want = slices.SortedFunc(slices.Values(got), byID), slices.SortedFunc(slices.Values(want), byID)
	for i := range got {
		g, w := got[i], want[i]
		if g.UserID != w.UserID || g.DeviceID != w.DeviceID || g.SessionID != w.SessionID ||
			g.GatewayID != w.GatewayID || !g.Expires.Equal(w.Expires) {
			return false
		}
	}
	return true
}

func testTouchSessionsRemove(t *testing.T, r presence.Registry) {
	u := user(t, "alice")
	phone := session(u, "phone", "gateway-0", ms(time.Minute))
	laptop := session(u, "laptop", "gateway-1", ms(2*time.Minute))
	touch(t, r, phone)
	touch(t, r, laptop)
	if got := sessions(t, r, u)[u]; !equalSessions(got, []presence.Session{laptop, phone}) {
		t.Fatalf("Sessions = %+v, want laptop and phone", got)
	}
	if err := r.Remove(context.Background(), u, phone.SessionID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if got := sessions(t, r, u)[u]; !equalSessions(got, []presence.Session{laptop}) {
		t.Fatalf("after Remove(phone): Sessions = %+v, want laptop", got)
	}
	// Removing again, or an unknown session, is not an error.
	if err := r.Remove(context.Background(), u, phone.SessionID); err != nil {
		t.Errorf("Remove of a removed session: %v", err)
	}
	if err := r.Remove(context.Background(), user(t, "nobody"), "x"); err != nil {
		t.Errorf("Remove of an unknown user: %v", err)
	}
	if err := r.Remove(context.Background(), u, laptop.SessionID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if got := sessions(t, r, u); len(got[u]) != 0 {
		t.Errorf("after removing every session: %+v", got)
	}
}

func testExpiredSessions(t *testing.T, r presence.Registry) {
	u := user(t, "bob")
	touch(t, r, session(u, "old", "gateway-0", ms(-time.Second)))
	if got := sessions(t, r, u); len(got[u]) != 0 {
		t.Errorf("a session touched with a past expiry is returned: %+v", got[u])
	}
	short := session(u, "short", "gateway-0", ms(shortTTL))
	touch(t, r, short)
	if got := sessions(t, r, u)[u]; !equalSessions(got, []presence.Session{short}) {
		t.Fatalf("Sessions = %+v, want the short session", got)
	}
	waitUntil(t, "the short session to expire", func() bool { return len(sessions(t, r, u)[u]) == 0 })
	if time.Now().Before(short.Expires) {
		t.Errorf("session gone before its expiry %v", short.Expires)
	}
}

func testTouchRefresh(t *testing.T, r presence.Registry) {
	u := user(t, "carol")
	first := session(u, "phone", "gateway-0", ms(shortTTL))
	touch(t, r, first)
	refreshed := first
	refreshed.Expires = ms(time.Minute)
	refreshed.GatewayID = "gateway-2" // a reconnect through another gateway
	touch(t, r, refreshed)
	if got := sessions(t, r, u)[u]; !equalSessions(got, []presence.Session{refreshed}) {
		t.Fatalf("after refresh: Sessions = %+v, want one refreshed session", got)
	}
	// Past the first expiry the refreshed session still lives.
	waitUntil(t, "the first expiry to pass", func() bool { return time.Now().After(first.Expires.Add(50 * time.Millisecond)) })
	if got := sessions(t, r, u)[u]; !equalSessions(got, []presence.Session{refreshed}) {
		t.Errorf("after the first expiry: Sessions = %+v, want the refreshed session", got)
	}
}

func testSeveralUsers(t *testing.T, r presence.Registry) {
	a, b, c, d := user(t, "a"), user(t, "b"), user(t, "c"), user(t, "d")
	sa := session(a, "phone", "gateway-0", ms(time.Minute))
	sb1 := session(b, "phone", "gateway-0", ms(time.Minute))
	sb2 := session(b, "tablet", "gateway-1", ms(time.Minute))
	sd := session(d, "phone", "gateway-0", ms(-time.Second))
	for _, s := range []presence.Session{sa, sb1, sb2, sd} {
		touch(t, r, s)
	}
	got := sessions(t, r, a, b, c, d, a)
	if !equalSessions(got[a], []presence.Session{sa}) {
		t.Errorf("user a: %+v", got[a])
	}
	if !equalSessions(got[b], []presence.Session{sb1, sb2}) {
		t.Errorf("user b: %+v", got[b])
	}
	if len(got[c]) != 0 || len(got[d]) != 0 {
		t.Errorf("users without live sessions: c %+v, d %+v", got[c], got[d])
	}
	if got := sessions(t, r); len(got) != 0 {
		t.Errorf("Sessions() of no users = %+v", got)
	}

	now := ms(0)
	for i, u := range []string{a, b} {
		if err := r.SetStatus(context.Background(), u, presence.Status{Online: i == 0, LastActive: now}, time.Minute); err != nil {
			t.Fatalf("SetStatus(%s): %v", u, err)
		}
	}
	sts := statuses(t, r, a, b, c)
	if len(sts) != 2 || !sts[a].Online || sts[b].Online || !sts[a].LastActive.Equal(now) || !sts[b].LastActive.Equal(now) {
		t.Errorf("Statuses = %+v, want a online and b offline at %v", sts, now)
	}
}

func testStatuses(t *testing.T, r presence.Registry) {
	u, never := user(t, "dave"), user(t, "never")
	at := ms(-time.Minute)
	if err := r.SetStatus(context.Background(), u, presence.Status{Online: true, LastActive: at}, time.Hour); err != nil {
		t.Fatalf("SetStatus: %v", err)
	}
	got := statuses(t, r, u, never)
	if st, ok := got[u]; !ok || !st.Online || !st.LastActive.Equal(at) {
		t.Errorf("status = %+v (present %v), want online at %v", st, ok, at)
	}
	if st, ok := got[never]; ok {
		t.Errorf("user never seen has status %+v", st)
	}
	// Replaced by the next SetStatus.
	later := ms(0)
	if err := r.SetStatus(context.Background(), u, presence.Status{LastActive: later}, time.Hour); err != nil {
		t.Fatalf("SetStatus: %v", err)
	}
	if st := statuses(t, r, u)[u]; st.Online || !st.LastActive.Equal(later) {
		t.Errorf("after going offline: %+v, want offline at %v", st, later)
	}
}

func testStatusTTL(t *testing.T, r presence.Registry) {
	u, kept := user(t, "erin"), user(t, "kept")
	if err := r.SetStatus(context.Background(), u, presence.Status{Online: true, LastActive: ms(0)}, shortTTL); err != nil {
		t.Fatalf("SetStatus: %v", err)
	}
	if err := r.SetStatus(context.Background(), kept, presence.Status{LastActive: ms(0)}, time.Hour); err != nil {
		t.Fatalf("SetStatus: %v", err)
	}
	if _, ok := statuses(t, r, u)[u]; !ok {
		t.Fatalf("status missing right after SetStatus")
	}
	waitUntil(t, "the status to expire", func() bool {
		_, ok := statuses(t, r, u)[u]
		return !ok
	})
	if _, ok := statuses(t, r, kept)[kept]; !ok {
		t.Errorf("a status with a long ttl expired with the short one")
	}
}

// testSetStatuses: a batch stores every user's status (and replaces what
// was there) with its ttl; an empty user id stores nothing.
func testSetStatuses(t *testing.T, r presence.Registry) {
	ctx := context.Background()
	at := ms(0)
	batch := map[string]presence.Status{}
	var users []string
	for i := range 300 {
		u := user(t, fmt.Sprintf("b%03d", i))
		users = append(users, u)
		batch[u] = presence.Status{Online: i%2 == 0, LastActive: at.Add(time.Duration(i) * time.Millisecond)}
	}
	if err := r.SetStatus(ctx, users[0], presence.Status{LastActive: ms(-time.Hour)}, time.Hour); err != nil {
		t.Fatalf("SetStatus: %v", err)
	}
	if err := r.SetStatuses(ctx, batch, time.Hour); err != nil {
		t.Fatalf("SetStatuses of %d users: %v", len(batch), err)
	}
	got := statuses(t, r, users...)
	for _, u := range users {
		if g, ok := got[u]; !ok || g.Online != batch[u].Online || !g.LastActive.Equal(batch[u].LastActive) {
			t.Fatalf("status of %s after SetStatuses = %+v (found %v), want %+v", u, g, ok, batch[u])
		}
	}
	if err := r.SetStatuses(ctx, nil, time.Hour); err != nil {
		t.Fatalf("SetStatuses of nobody: %v", err)
	}
	short, bad := user(t, "short"), user(t, "bad")
	if err := r.SetStatuses(ctx, map[string]presence.Status{bad: {Online: true}, "": {Online: true}}, time.Hour); err == nil {
		t.Fatalf("SetStatuses with an empty user id: no error")
	}
	if _, ok := statuses(t, r, bad)[bad]; ok {
		t.Fatalf("SetStatuses with an empty user id stored the other user's status")
	}
	if err := r.SetStatuses(ctx, map[string]presence.Status{short: {Online: true, LastActive: at}}, shortTTL); err != nil {
		t.Fatalf("SetStatuses with a short ttl: %v", err)
	}
	waitUntil(t, "the batch-stored status to expire", func() bool {
		_, ok := statuses(t, r, short)[short]
		return !ok
	})
}
