package chat

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

// Block (issue 13): while alice blocks bob, bob cannot start their DM, nor
// send, edit or react in it (blocked, nothing stored), may still delete
// his own message, and alice still writes and reads; groups are
// unaffected; after the unblock bob writes again. Bad blocks are invalid
// and store nothing.
func TestBlock(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	dm := rules.DMID("alice", "bob")
	block := func(user, other string, remove bool) {
		t.Helper()
		if _, err := e.q.SetBlock(e.ctx, user, &parleyv1.Block{UserId: other, Remove: remove}); err != nil {
			t.Fatalf("block %s by %s (remove %v): %v", other, user, remove, err)
		}
	}
	block("alice", "bob", false)
	// bob cannot start the DM: nothing is created.
	if _, err := e.send("bob", dm, "b0", "hi"); code(err) != wire.CodeBlocked {
		t.Fatalf("bob starting the DM: %v, want blocked", err)
	}
	if head, err := e.st.Head(e.ctx, dm); err != nil || head != 0 {
		t.Fatalf("DM head after a blocked start = %d, %v; want 0", head, err)
	}
	// alice can, and bob still cannot write in it.
	hi := e.mustSend(t, "alice", dm, "a1", "hi bob").GetSeq()
	block("alice", "bob", true)
	mine := e.mustSend(t, "bob", dm, "b1", "before the block").GetSeq()
	block("alice", "bob", false)
	head := func() uint64 {
		h, err := e.st.Head(e.ctx, dm)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	before := head()
	for _, tc := range []struct {
		name string
		rec  *parleyv1.IngressRecord
	}{
		{"send", sendRec("bob", dm, "b2", "let me in")},
		{"edit", editRec("bob", dm, mine, "edited")},
		{"react", reactRec("bob", dm, hi, "👍", false)},
	} {
		if _, err := e.call(tc.rec); code(err) != wire.CodeBlocked {
			t.Errorf("bob's %s while blocked: %v, want blocked", tc.name, err)
		}
	}
	if h := head(); h != before {
		t.Fatalf("head moved from %d to %d on refused writes", before, h)
	}
	// A retry of the send stored before the block is answered from dedupe.
	if rep, err := e.send("bob", dm, "b1", "before the block"); err != nil || rep.GetSendOk().GetSeq() != mine {
		t.Fatalf("retry of a send stored before the block: %v, %v; want seq %d", rep, err, mine)
	}
	// Taking back is allowed: bob deletes his own message.
	if _, err := e.call(deleteRec("bob", dm, mine)); err != nil {
		t.Fatalf("bob deleting his message while blocked: %v", err)
	}
	e.mustSend(t, "alice", dm, "a2", "still here")
	// Groups are unaffected.
	g := e.createGroup(t, "alice", "crew", "bob")
	e.mustSend(t, "bob", g, "g1", "in the group")
	// After the unblock bob writes again.
	block("alice", "bob", true)
	e.mustSend(t, "bob", dm, "b3", "thanks")

	for _, tc := range []struct {
		name, user, other string
	}{
		{"oneself", "alice", "alice"},
		{"an invalid id", "alice", "not a user"},
		{"an empty id", "alice", ""},
	} {
		if _, err := e.q.SetBlock(e.ctx, tc.user, &parleyv1.Block{UserId: tc.other}); code(err) != wire.CodeInvalid {
			t.Errorf("block of %s: %v, want invalid", tc.name, err)
		}
	}
	if got, err := e.q.Blocks(e.ctx, "alice"); err != nil || len(got) != 0 {
		t.Fatalf("alice's blocks = %v, %v; want none", got, err)
	}
}

// Presence (issue 13): a user who blocks the viewer reads as a stranger,
// in the DM-based check and with public presence; the audience of the
// blocker's presence pushes leaves the blocked user out.
func TestBlockHidesPresence(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	e.mustSend(t, "alice", rules.DMID("alice", "bob"), "a1", "hi")
	e.mustSend(t, "alice", rules.DMID("alice", "carol"), "a2", "hi")
	visible := func(check func(ctx context.Context, viewer string, targets []string) (map[string]bool, error), viewer, target string) bool {
		t.Helper()
		v, err := check(e.ctx, viewer, []string{target})
		if err != nil {
			t.Fatal(err)
		}
		return v[target]
	}
	if !visible(e.q.PresenceVisible, "bob", "alice") || !visible(e.q.PresenceUnblocked, "bob", "alice") {
		t.Fatal("bob does not see alice before any block")
	}
	if _, err := e.q.SetBlock(e.ctx, "alice", &parleyv1.Block{UserId: "bob"}); err != nil {
		t.Fatal(err)
	}
	if visible(e.q.PresenceVisible, "bob", "alice") || visible(e.q.PresenceUnblocked, "bob", "alice") {
		t.Fatal("bob sees alice's presence while she blocks him")
	}
	if !visible(e.q.PresenceVisible, "alice", "bob") {
		t.Fatal("alice lost bob's presence by blocking him; only the blocked user loses it")
	}
	peers, hidden, err := e.q.PresenceAudience(e.ctx, "alice")
	if err != nil || len(peers) != 1 || peers[0] != "carol" || !hidden["bob"] {
		t.Fatalf("alice's audience = %v, hidden %v, %v; want [carol], bob hidden", peers, hidden, err)
	}
	if _, err := e.q.SetBlock(e.ctx, "alice", &parleyv1.Block{UserId: "bob", Remove: true}); err != nil {
		t.Fatal(err)
	}
	if !visible(e.q.PresenceVisible, "bob", "alice") {
		t.Fatal("bob does not see alice after the unblock")
	}
}

// Mute (issue 13): the inbox marks a muted conversation for its user only,
// with its end; Muted names who muted; an unmute clears it; bad mutes are
// refused and store nothing.
func TestMute(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	g := e.createGroup(t, "alice", "crew", "bob")
	e.mustSend(t, "alice", g, "a1", "hi")
	inbox := func(user string) *parleyv1.ConversationState {
		t.Helper()
		states, err := e.q.Inbox(e.ctx, user)
		if err != nil || len(states) != 1 {
			t.Fatalf("inbox of %s = %v, %v", user, states, err)
		}
		return states[0]
	}
	until := time.Now().Add(time.Hour).UnixMilli()
	got, err := e.q.SetMute(e.ctx, "bob", &parleyv1.Mute{ConversationId: g, Until: until})
	if err != nil || got.GetUntil() != until || got.GetRemove() {
		t.Fatalf("mute = %v, %v", got, err)
	}
	if cs := inbox("bob"); !cs.GetMuted() || cs.GetMutedUntil() != until {
		t.Fatalf("bob's inbox: muted %v until %d, want muted until %d", cs.GetMuted(), cs.GetMutedUntil(), until)
	}
	if inbox("alice").GetMuted() {
		t.Fatal("alice's inbox shows bob's mute")
	}
	if m, err := e.q.Muted(e.ctx, g, []string{"alice", "bob"}); err != nil || !m["bob"] || m["alice"] {
		t.Fatalf("Muted = %v, %v; want bob only", m, err)
	}
	if _, err := e.q.SetMute(e.ctx, "bob", &parleyv1.Mute{ConversationId: g, Remove: true}); err != nil {
		t.Fatal(err)
	}
	if inbox("bob").GetMuted() {
		t.Fatal("bob's inbox still muted after the unmute")
	}

	for _, tc := range []struct {
		name string
		user string
		m    *parleyv1.Mute
		code string
	}{
		{"an end in the past", "bob", &parleyv1.Mute{ConversationId: g, Until: time.Now().Add(-time.Second).UnixMilli()}, wire.CodeInvalid},
		{"an unmute with an end", "bob", &parleyv1.Mute{ConversationId: g, Until: until, Remove: true}, wire.CodeInvalid},
		{"a malformed id", "bob", &parleyv1.Mute{ConversationId: "nope"}, wire.CodeInvalid},
		{"a group that does not exist", "bob", &parleyv1.Mute{ConversationId: "g:12345"}, wire.CodeNotFound},
		{"a group of others", "carol", &parleyv1.Mute{ConversationId: g}, wire.CodeNotMember},
	} {
		if _, err := e.q.SetMute(e.ctx, tc.user, tc.m); code(err) != tc.code {
			t.Errorf("mute with %s: %v, want %s", tc.name, err, tc.code)
		}
	}
	if m, err := e.st.Mutes(e.ctx, g); err != nil || len(m) != 0 {
		t.Fatalf("mutes stored after refused requests: %v, %v", m, err)
	}
}

// TestBlockedCannotAddToGroup: a user blocked by alice cannot put her in a
// new group or add her to one (blocked, nothing stored); others can be.
func TestBlockedCannotAddToGroup(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	if _, err := e.q.SetBlock(e.ctx, "alice", &parleyv1.Block{UserId: "bob"}); err != nil {
		t.Fatal(err)
	}
	create := &parleyv1.IngressRecord{Origin: origin("bob"), Op: &parleyv1.IngressRecord_CreateGroup{
		CreateGroup: &parleyv1.CreateGroup{Title: "sneak", Members: []string{"carol", "alice"}}}}
	if _, err := e.call(create); code(err) != wire.CodeBlocked {
		t.Fatalf("bob creating a group with alice: %v, want blocked", err)
	}
	if ids, err := e.st.Inbox(e.ctx, "alice"); err != nil || len(ids) != 0 {
		t.Fatalf("alice's inbox after a refused group = %v, %v; want empty", ids, err)
	}
	g := e.createGroup(t, "bob", "crew", "carol")
	head := e.head(t, g)
	if _, err := e.call(addRec("bob", g, "dave", "alice")); code(err) != wire.CodeBlocked {
		t.Fatalf("bob adding alice: %v, want blocked", err)
	}
	if h := e.head(t, g); h != head {
		t.Fatalf("a refused add moved the head from %d to %d", head, h)
	}
	if _, err := e.call(addRec("bob", g, "dave")); err != nil {
		t.Fatalf("bob adding dave: %v", err)
	}
}

// TestBlockListBounded: past MaxBlocksPerUser another block is
// too_many_blocks and nothing is stored; blocking one already blocked and
// unblocking still work.
func TestBlockListBounded(t *testing.T) {
	e := newEnv(t, nil)
	for i := range MaxBlocksPerUser {
		if err := e.st.SetBlock(e.ctx, "mallory", fmt.Sprintf("u%04d", i), true); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.q.SetBlock(e.ctx, "mallory", &parleyv1.Block{UserId: "one-more"}); code(err) != wire.CodeTooManyBlocks {
		t.Fatalf("block %d: %v, want too_many_blocks", MaxBlocksPerUser+1, err)
	}
	if bs, err := e.q.Blocks(e.ctx, "mallory"); err != nil || len(bs) != MaxBlocksPerUser {
		t.Fatalf("blocks after the refusal: %d, %v; want %d", len(bs), err, MaxBlocksPerUser)
	}
	if _, err := e.q.SetBlock(e.ctx, "mallory", &parleyv1.Block{UserId: "u0000"}); err != nil {
		t.Fatalf("blocking again one already blocked: %v", err)
	}
	if _, err := e.q.SetBlock(e.ctx, "mallory", &parleyv1.Block{UserId: "u0000", Remove: true}); err != nil {
		t.Fatalf("unblock: %v", err)
	}
	if _, err := e.q.SetBlock(e.ctx, "mallory", &parleyv1.Block{UserId: "one-more"}); err != nil {
		t.Fatalf("a block after an unblock: %v", err)
	}
}

// blockReads counts the store's BlockedBy reads.
type blockReads struct {
	store.MessageStore
	n atomic.Int64
}

func (b *blockReads) BlockedBy(ctx context.Context, user string) ([]string, error) {
	b.n.Add(1)
	return b.MessageStore.BlockedBy(ctx, user)
}

// TestBlocksCached (issue 11): the sequencer reads a DM's blocks once per
// user of the DM, not once per send, and a block or unblock made through
// Queries still applies to the very next send (its BlocksChanged record,
// ordered before that send, drops what was cached). Only a user of the DM
// may send BlocksChanged.
func TestBlocksCached(t *testing.T) {
	e := newEnv(t, nil)
	reads := &blockReads{MessageStore: e.st}
	e.st = reads
	e.q = NewQueries(reads)
	e.q.NotifyBlocksTo(e.gws[0].client)
	e.startSequencer(t, "chat-0", 0)
	dm := rules.DMID("alice", "bob")
	for i := range 10 {
		e.mustSend(t, "alice", dm, fmt.Sprintf("a%d", i), "hi")
		e.mustSend(t, "bob", dm, fmt.Sprintf("b%d", i), "hello")
	}
	if n := reads.n.Load(); n != 2 {
		t.Fatalf("%d BlockedBy reads for 20 sends of the DM's 2 users, want 2", n)
	}
	setBlock := func(remove bool) {
		t.Helper()
		if _, err := e.q.SetBlock(e.ctx, "alice", &parleyv1.Block{UserId: "bob", Remove: remove}); err != nil {
			t.Fatalf("alice blocks bob (remove %v): %v", remove, err)
		}
	}
	setBlock(false)
	if _, err := e.send("bob", dm, "b-blocked", "still there?"); code(err) != wire.CodeBlocked {
		t.Fatalf("bob's send right after alice's block: %v, want blocked", err)
	}
	e.mustSend(t, "alice", dm, "a-after", "bye")
	setBlock(true)
	e.mustSend(t, "bob", dm, "b-unblocked", "back")

	rec := &parleyv1.IngressRecord{Origin: origin("mallory"), ConversationId: dm,
		Op: &parleyv1.IngressRecord_BlocksChanged{BlocksChanged: &parleyv1.BlocksChanged{}}}
	if _, err := e.call(rec); code(err) != wire.CodeInvalid {
		t.Fatalf("BlocksChanged of alice and bob's DM by mallory: %v, want invalid", err)
	}
}
