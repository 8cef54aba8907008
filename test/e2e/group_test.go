package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// TestGroupOf500 drives a full group through a real server: alice creates
// it over REST and fills it to the 500-member cap in batches (most members
// never connect); 50 members are online over both subprotocols; one message
// reaches each of them exactly once; the 501st member is refused with
// group_full; a removed member gets not_member; two adds racing for the last
// place end with exactly one member more; and the late member sees history
// only from the seq at which it joined.
func TestGroupOf500(t *testing.T) {
	const (
		maxMembers = 500
		online     = 50
		batch      = 100
	)
	p := startServer(t, "")
	secret := p.devSecret()
	tok := func(user string) string { return mint(t, secret, user, "dev-"+user, time.Now().Add(time.Hour)) }
	ctx := ctxT(t, 5*time.Minute)

	user := func(i int) string { return fmt.Sprintf("u%03d", i) }
	aliceREST := client.NewREST(p.HTTP(), p.token("alice", "laptop", time.Hour))

	// alice + u001..u499 = 500 members.
	conv, err := aliceREST.CreateGroup(ctx, "the five hundred", nil)
	if err != nil {
		t.Fatalf("create group: %v", err)
	}
	for lo := 1; lo < maxMembers; lo += batch {
		var users []string
		for i := lo; i < min(lo+batch, maxMembers); i++ {
			users = append(users, user(i))
		}
		ev, err := aliceREST.AddMembers(ctx, conv, users)
		if err != nil {
			t.Fatalf("add members %s..%s: %v", users[0], users[len(users)-1], err)
		}
		if ev.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED || !slices.Equal(ev.GetMembers(), users) {
			t.Fatalf("add members %s..%s: event %v, want MEMBER_ADDED of the batch", users[0], users[len(users)-1], ev)
		}
	}

	// 50 members online, alternating subprotocols; alice online too.
	alice, _ := dialSDK(t, p, tok("alice"), wire.SubprotocolProto, nil)
	clients := make([]*client.Client, online+1)
	recs := make([]*sdkEvents, online+1)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8) // dial a few at a time: a 2-core machine
	var dialErr sync.Map
	for i := 1; i <= online; i++ {
		sub := wire.SubprotocolProto
		if i%2 == 0 {
			sub = wire.SubprotocolJSON
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			c, err := client.Dial(dctx, client.Options{URL: p.WS(), Token: tok(user(i)), Subprotocol: sub,
				Backoff: client.Backoff{Min: 50 * time.Millisecond, Max: time.Second}, Logger: quietLog})
			if err != nil {
				dialErr.Store(i, err)
				return
			}
			clients[i], recs[i] = c, recordEvents(c)
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for i, c := range clients {
			if c != nil {
				_ = c.Close()
				<-recs[i].done
			}
		}
	})
	dialErr.Range(func(k, v any) bool {
		t.Fatalf("dial %s: %v", user(k.(int)), v)
		return false
	})

	// One message from alice reaches every online member exactly once.
	ok1, err := alice.Send(ctx, conv, "hello five hundred")
	if err != nil {
		t.Fatalf("alice sends: %v", err)
	}
	waitFor(t, 60*time.Second, "all 50 online members to receive alice's message", func() bool {
		for i := 1; i <= online; i++ {
			if recs[i].times(conv, ok1.GetSeq()) == 0 {
				return false
			}
		}
		return true
	})
	// A second message is a fence: a duplicate push of the first would
	// come before it on the same connection (pushes are in seq order).
	ok2, err := alice.Send(ctx, conv, "fence")
	if err != nil {
		t.Fatalf("alice sends the fence: %v", err)
	}
	waitFor(t, 60*time.Second, "all 50 online members to receive the fence", func() bool {
		for i := 1; i <= online; i++ {
			if recs[i].times(conv, ok2.GetSeq()) == 0 {
				return false
			}
		}
		return true
	})
	for i := 1; i <= online; i++ {
		for _, want := range []struct {
			seq  uint64
			text string
		}{{ok1.GetSeq(), "hello five hundred"}, {ok2.GetSeq(), "fence"}} {
			if n := recs[i].times(conv, want.seq); n != 1 {
				t.Errorf("%s received seq %d %d times, want exactly once", user(i), want.seq, n)
			}
			m := recs[i].message(conv, want.seq)
			if m.GetText() != want.text || m.GetSenderId() != "alice" || m.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_TEXT {
				t.Errorf("%s got seq %d = %q from %q (kind %v), want %q from alice", user(i), want.seq, m.GetText(), m.GetSenderId(), m.GetKind(), want.text)
			}
		}
		if d := recs[i].dupes(conv); len(d) > 0 {
			t.Errorf("%s got seqs %v more than once", user(i), d)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// The 501st member is refused, and nothing is sequenced for it.
	headBefore := headSeq(t, ctx, aliceREST, conv)
	_, err = aliceREST.AddMembers(ctx, conv, []string{"u500"})
	wantCode(t, "add the 501st member", err, wire.CodeGroupFull)
	if h := headSeq(t, ctx, aliceREST, conv); h != headBefore {
		t.Fatalf("head moved from %d to %d after a refused add", headBefore, h)
	}
	u500REST := client.NewREST(p.HTTP(), tok("u500"))
	_, err = u500REST.History(ctx, conv, 0, 0, 10)
	wantCode(t, "history of the refused 501st member", err, wire.CodeNotMember)

	// A removed member (online, u050) learns it and may neither send nor read.
	const removed = online
	rmEv, err := aliceREST.RemoveMember(ctx, conv, user(removed))
	if err != nil {
		t.Fatalf("remove %s: %v", user(removed), err)
	}
	if rmEv.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED || !slices.Equal(rmEv.GetMembers(), []string{user(removed)}) {
		t.Fatalf("remove event %v, want MEMBER_REMOVED of %s", rmEv, user(removed))
	}
	// Removing them again (or anyone who is not a member) removes nobody
	// and says so, and stores nothing.
	headAfterRemove := headSeq(t, ctx, aliceREST, conv)
	_, err = aliceREST.RemoveMember(ctx, conv, user(removed))
	wantCode(t, "removing a member a second time", err, wire.CodeNotFound)
	if h := headSeq(t, ctx, aliceREST, conv); h != headAfterRemove {
		t.Fatalf("head moved from %d to %d after removing a non-member", headAfterRemove, h)
	}
	waitFor(t, 60*time.Second, user(removed)+" to see its removal", func() bool {
		return recs[removed].times(conv, rmEv.GetSeq()) == 1
	})
	_, err = clients[removed].Send(ctx, conv, "still here?")
	wantCode(t, "removed member sends over WebSocket", err, wire.CodeNotMember)
	_, err = clients[removed].History(ctx, conv, 0, 0, 10)
	wantCode(t, "removed member reads history over WebSocket", err, wire.CodeNotMember)
	removedREST := client.NewREST(p.HTTP(), tok(user(removed)))
	_, err = removedREST.Send(ctx, conv, "", "still here?")
	wantCode(t, "removed member sends over REST", err, wire.CodeNotMember)
	_, err = removedREST.History(ctx, conv, 0, 0, 10)
	wantCode(t, "removed member reads history over REST", err, wire.CodeNotMember)

	// Its inbox keeps the group, as a former member: no head, no joined seq.
	rmInbox, err := removedREST.Inbox(ctx)
	if err != nil {
		t.Fatalf("removed member's inbox: %v", err)
	}
	if i := slices.IndexFunc(rmInbox, func(s *parleyv1.ConversationState) bool { return s.GetConversationId() == conv }); i < 0 ||
		rmInbox[i].GetJoinedSeq() != 0 || rmInbox[i].GetHeadSeq() != 0 || rmInbox[i].GetLastMessage() != nil {
		t.Fatalf("removed member's inbox %v, want %s as a former member (joined_seq 0, no head, no last message)", rmInbox, conv)
	}

	// One add of two users with one place left adds neither.
	headBefore = headSeq(t, ctx, aliceREST, conv)
	_, err = aliceREST.AddMembers(ctx, conv, []string{"pair-a", "pair-b"})
	wantCode(t, "add two users for the last place", err, wire.CodeGroupFull)
	if h := headSeq(t, ctx, aliceREST, conv); h != headBefore {
		t.Fatalf("head moved from %d to %d after a refused add", headBefore, h)
	}

	// Two adds race for the last place (499 members now).
	racers := []string{"racer-a", "racer-b"}
	results := make([]error, len(racers))
	events := make([]*parleyv1.Message, len(racers))
	startRace := make(chan struct{})
	for i, u := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startRace
			events[i], results[i] = aliceREST.AddMembers(ctx, conv, []string{u})
		}()
	}
	close(startRace)
	wg.Wait()
	winner, loser := -1, -1
	for i, err := range results {
		switch {
		case err == nil:
			winner = i
		case errCode(err) == wire.CodeGroupFull:
			loser = i
		default:
			t.Fatalf("add %s: %v, want success or group_full", racers[i], err)
		}
	}
	if winner < 0 || loser < 0 {
		t.Fatalf("racing adds for the last place: results %v, want exactly one success and one group_full", results)
	}
	joined := events[winner]
	if joined.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED || !slices.Equal(joined.GetMembers(), []string{racers[winner]}) {
		t.Fatalf("winning add's event %v, want MEMBER_ADDED of %s", joined, racers[winner])
	}

	// The log says the group has exactly 500 members: the creation, adds
	// and removals replayed from alice's history.
	members := map[string]bool{}
	for _, m := range allHistory(t, ctx, aliceREST, conv) {
		switch m.GetKind() {
		case parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED, parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED:
			for _, u := range m.GetMembers() {
				members[u] = true
			}
		case parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED:
			for _, u := range m.GetMembers() {
				delete(members, u)
			}
		}
	}
	if len(members) != maxMembers || !members[racers[winner]] || members[racers[loser]] || members[user(removed)] || members["u500"] || members["pair-a"] || members["pair-b"] {
		t.Fatalf("history replays to %d members (winner %s in: %v, loser %s in: %v, removed in: %v, u500 in: %v), want %d with the winner only",
			len(members), racers[winner], members[racers[winner]], racers[loser], members[racers[loser]], members[user(removed)], members["u500"], maxMembers)
	}

	t.Logf("members %d, msg seq %d, fence %d, removed at %d, %s joined at %d", len(members), ok1.GetSeq(), ok2.GetSeq(), rmEv.GetSeq(), racers[winner], joined.GetSeq())

	// The loser is not a member; the winner joined at its MEMBER_ADDED seq
	// and sees nothing before it.
	_, err = client.NewREST(p.HTTP(), tok(racers[loser])).History(ctx, conv, 0, 0, 10)
	wantCode(t, "history of the losing racer", err, wire.CodeNotMember)
	lateREST := client.NewREST(p.HTTP(), tok(racers[winner]))
	late := allHistory(t, ctx, lateREST, conv)
	if len(late) == 0 || late[0].GetSeq() != joined.GetSeq() || late[0].GetKind() != parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED {
		t.Fatalf("late member's history starts with %v, want its MEMBER_ADDED at seq %d", late, joined.GetSeq())
	}
	for _, m := range late {
		if m.GetSeq() < joined.GetSeq() {
			t.Fatalf("late member (joined at seq %d) sees seq %d %q", joined.GetSeq(), m.GetSeq(), m.GetText())
		}
	}
	res, err := lateREST.History(ctx, conv, joined.GetSeq(), 0, 200)
	if err != nil {
		t.Fatalf("late member's history before its join: %v", err)
	}
	if len(res.GetMessages()) != 0 || res.GetHasMore() {
		t.Fatalf("late member's history before seq %d: %d messages (has_more %v), want none", joined.GetSeq(), len(res.GetMessages()), res.GetHasMore())
	}
	inbox, err := lateREST.Inbox(ctx)
	if err != nil {
		t.Fatalf("late member's inbox: %v", err)
	}
	if i := slices.IndexFunc(inbox, func(s *parleyv1.ConversationState) bool { return s.GetConversationId() == conv }); i < 0 || inbox[i].GetJoinedSeq() != joined.GetSeq() {
		t.Fatalf("late member's inbox %v, want %s joined at seq %d", inbox, conv, joined.GetSeq())
	}

	// And the removed member never got anything sequenced after its removal.
	for _, s := range recs[removed].seqs(conv) {
		if s > rmEv.GetSeq() {
			t.Fatalf("%s received seq %d after its removal at seq %d", user(removed), s, rmEv.GetSeq())
		}
	}
}
