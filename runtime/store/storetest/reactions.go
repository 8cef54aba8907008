package storetest

import (
	"testing"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
)

// reactMsg is a REACTION event at seq: user adds emoji to target, or takes
// it back (removed). Like the sequencer's, it carries the target's counts
// after it (counts only, no users), which the store keeps as they are.
func reactMsg(conv string, seq, target uint64, user, emoji string, removed bool, counts ...*parleyv1.Reaction) *parleyv1.Message {
	m := eventMsg(conv, seq, parleyv1.MessageKind_MESSAGE_KIND_REACTION, user)
	m.TargetSeq, m.Emoji, m.ReactionRemoved, m.Reactions = target, emoji, removed, counts
	return m
}

// reaction is a stored reaction: emoji and its users (count = how many).
func reaction(emoji string, users ...string) *parleyv1.Reaction {
	return &parleyv1.Reaction{Emoji: emoji, Count: uint32(len(users)), UserIds: users}
}

// testReactions: REACTION events add and remove users of an emoji on a text
// or media message, in order of first reaction, and the events keep their
// own fields; an emoji nobody has left disappears.
func testReactions(t *testing.T, s store.MessageStore) {
	conv := newConv()
	m1 := textMsg(conv, 1)
	m2 := textMsg(conv, 2)
	m2.Kind, m2.Text, m2.Media = parleyv1.MessageKind_MESSAGE_KIND_MEDIA, "", &parleyv1.Media{Url: "https://x/a.png", Mime: "image/png", Size: 9}
	mustAppend(t, s, conv, m1, m2)
	r3 := reactMsg(conv, 3, 1, "alice", "👍", false, &parleyv1.Reaction{Emoji: "👍", Count: 1})
	r4 := reactMsg(conv, 4, 1, "bob", "👍", false, &parleyv1.Reaction{Emoji: "👍", Count: 2})
	r5 := reactMsg(conv, 5, 1, "bob", "❤️", false)
	r6 := reactMsg(conv, 6, 2, "carol", "🎉", false)
	mustAppend(t, s, conv, r3)
	mustAppend(t, s, conv, r4, r5, r6)

	want1 := proto.CloneOf(m1)
	want1.Reactions, want1.ReactionSeq = []*parleyv1.Reaction{reaction("👍", "alice", "bob"), reaction("❤️", "bob")}, 5
	wantMessage(t, s, conv, want1)
	want2 := proto.CloneOf(m2)
	want2.Reactions, want2.ReactionSeq = []*parleyv1.Reaction{reaction("🎉", "carol")}, 6
	wantMessage(t, s, conv, want2)
	for _, ev := range []*parleyv1.Message{r3, r4, r5, r6} {
		wantMessage(t, s, conv, ev)
	}

	// alice takes 👍 back, then bob: 👍 is gone and ❤️ comes first.
	r7 := reactMsg(conv, 7, 1, "alice", "👍", true)
	mustAppend(t, s, conv, r7)
	want1.Reactions, want1.ReactionSeq = []*parleyv1.Reaction{reaction("👍", "bob"), reaction("❤️", "bob")}, 7
	wantMessage(t, s, conv, want1)
	wantMessage(t, s, conv, r7)
	mustAppend(t, s, conv, reactMsg(conv, 8, 1, "bob", "👍", true))
	want1.Reactions, want1.ReactionSeq = []*parleyv1.Reaction{reaction("❤️", "bob")}, 8
	wantMessage(t, s, conv, want1)

	// Removing a reaction nobody has, or adding one twice, changes only
	// reaction_seq (the sequencer does not store such events; the store
	// still applies them harmlessly).
	mustAppend(t, s, conv, reactMsg(conv, 9, 1, "dave", "👀", true), reactMsg(conv, 10, 1, "bob", "❤️", false))
	want1.ReactionSeq = 10
	wantMessage(t, s, conv, want1)
	mustAppend(t, s, conv, reactMsg(conv, 11, 1, "bob", "❤️", true))
	want1.Reactions, want1.ReactionSeq = nil, 11
	wantMessage(t, s, conv, want1)
}

// testReactionsWithChanges: reactions and edits apply side by side (a
// reaction keeps the newest edit's text in its event), and a delete clears
// the reactions for good: a replayed older reaction does not bring them back.
func testReactionsWithChanges(t *testing.T, s store.MessageStore) {
	ctx := ctxFor(t)
	conv := newConv()
	mustAppend(t, s, conv, textMsg(conv, 1), reactMsg(conv, 2, 1, "alice", "👍", false))
	e3 := changeMsg(conv, 3, 1, "edited")
	r4 := reactMsg(conv, 4, 1, "bob", "😂", false)
	mustAppend(t, s, conv, e3, r4)
	want := textMsg(conv, 1)
	want.Text, want.EditedAt, want.ChangeSeq = "edited", e3.GetCreatedAt(), 3
	want.Reactions, want.ReactionSeq = []*parleyv1.Reaction{reaction("👍", "alice"), reaction("😂", "bob")}, 4
	wantMessage(t, s, conv, want)
	wantMessage(t, s, conv, e3) // the newest edit keeps its text

	mustAppend(t, s, conv, changeMsg(conv, 5, 1, ""))
	want.Text, want.Deleted, want.ChangeSeq, want.Reactions = "", true, 5, nil
	wantMessage(t, s, conv, want)
	// A reaction replayed after the delete, or one stored after it, adds
	// nothing to the tombstone.
	if err := s.ApplyChange(ctx, conv, r4); err != nil {
		t.Fatalf("ApplyChange(seq 4): %v", err)
	}
	wantMessage(t, s, conv, want)
	mustAppend(t, s, conv, reactMsg(conv, 6, 1, "carol", "👍", false))
	wantMessage(t, s, conv, want)
	// A system event is not a target.
	mustAppend(t, s, conv, reactMsg(conv, 7, 2, "alice", "👍", false))
	wantMessage(t, s, conv, reactMsg(conv, 2, 1, "alice", "👍", false))
}

// testReactionSameAppend: a reaction may follow its target in one Append,
// and several reactions of one append apply in seq order.
func testReactionSameAppend(t *testing.T, s store.MessageStore) {
	conv := newConv()
	mustAppend(t, s, conv, textMsg(conv, 1),
		reactMsg(conv, 2, 1, "alice", "👍", false), reactMsg(conv, 3, 1, "bob", "👍", false), reactMsg(conv, 4, 1, "alice", "👍", true))
	want := textMsg(conv, 1)
	want.Reactions, want.ReactionSeq = []*parleyv1.Reaction{reaction("👍", "bob")}, 4
	wantMessage(t, s, conv, want)
}

// testApplyReaction: ApplyChange of a reaction is idempotent and never lets
// an older reaction undo a newer one.
func testApplyReaction(t *testing.T, s store.MessageStore) {
	ctx := ctxFor(t)
	conv := newConv()
	r2, r3 := reactMsg(conv, 2, 1, "alice", "👍", false), reactMsg(conv, 3, 1, "alice", "👍", true)
	r4 := reactMsg(conv, 4, 1, "bob", "🔥", false)
	mustAppend(t, s, conv, textMsg(conv, 1), r2, r3, r4)
	want := textMsg(conv, 1)
	want.Reactions, want.ReactionSeq = []*parleyv1.Reaction{reaction("🔥", "bob")}, 4
	for _, ev := range []*parleyv1.Message{r2, r4, r3, r2} {
		if err := s.ApplyChange(ctx, conv, ev); err != nil {
			t.Fatalf("ApplyChange(seq %d): %v", ev.GetSeq(), err)
		}
		wantMessage(t, s, conv, want)
	}
}
