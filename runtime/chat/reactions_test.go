package chat

import (
	"fmt"
	"strings"
	"testing"

	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

func reactRec(user, conv string, seq uint64, emoji string, remove bool) *parleyv1.IngressRecord {
	return &parleyv1.IngressRecord{Origin: origin(user), ConversationId: conv, Op: &parleyv1.IngressRecord_React{
		React: &parleyv1.React{ConversationId: conv, Seq: seq, Emoji: emoji, Remove: remove}}}
}

// reactionsOf renders rs as "👍2 ❤️1*" (* where me is set), in order.
func reactionsOf(rs []*parleyv1.Reaction) string {
	var parts []string
	for _, r := range rs {
		s := fmt.Sprintf("%s%d", r.GetEmoji(), r.GetCount())
		if r.GetMe() {
			s += "*"
		}
		if len(r.GetUserIds()) > 0 {
			s += "!users" // never leaves the server
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// TestReactions (issue 13): a member's reaction is a REACTION event every
// member's devices get, carrying the counts; the message keeps the
// aggregate, which history shows with me per reader; repeating a reaction
// or removing an absent one sequences nothing.
func TestReactions(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	for _, u := range []string{"alice", "bob", "carol"} {
		e.online(t, u, 0)
	}
	conv := e.createGroup(t, "alice", "crew", "bob", "carol")
	hello := e.mustSend(t, "alice", conv, "a1", "hello").GetSeq()

	rep, err := e.call(reactRec("bob", conv, hello, "👍", false))
	if err != nil {
		t.Fatalf("react: %v", err)
	}
	ev := rep.GetEvent()
	if ev.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_REACTION || ev.GetSeq() != hello+1 || ev.GetTargetSeq() != hello ||
		ev.GetSenderId() != "bob" || ev.GetEmoji() != "👍" || ev.GetReactionRemoved() || reactionsOf(ev.GetReactions()) != "👍1" {
		t.Fatalf("reaction event %v", ev)
	}
	for _, u := range []string{"alice", "carol"} {
		waitFor(t, u+" gets the reaction", func() bool { return len(e.pushes(0, u, isMessage(ev.GetSeq()))) == 1 })
	}
	for _, d := range e.pushes(0, "bob", isMessage(ev.GetSeq())) {
		if d.GetExceptSessionId() != "sess-bob" {
			t.Errorf("the reacting session is not skipped: %v", d)
		}
	}
	// Adding again (a retry, another device) sequences nothing and answers
	// the current counts with seq 0.
	head := e.head(t, conv)
	rep, err = e.call(reactRec("bob", conv, hello, "👍", false))
	if err != nil || rep.GetEvent().GetSeq() != 0 || rep.GetEvent().GetTargetSeq() != hello || reactionsOf(rep.GetEvent().GetReactions()) != "👍1" {
		t.Fatalf("repeated reaction: %v %v", rep, err)
	}
	if _, err := e.call(reactRec("carol", conv, hello, "🎉", true)); err != nil {
		t.Fatalf("removing an absent reaction: %v", err)
	}
	if h := e.head(t, conv); h != head {
		t.Fatalf("idempotent reactions moved the head from %d to %d", head, h)
	}

	for _, r := range []struct {
		user, emoji string
		remove      bool
		counts      string
	}{
		{"carol", "👍", false, "👍2"},
		{"carol", "😂", false, "👍2 😂1"},
		{"alice", "😂", false, "👍2 😂2"},
		{"bob", "👍", true, "👍1 😂2"},
	} {
		rep, err := e.call(reactRec(r.user, conv, hello, r.emoji, r.remove))
		if err != nil || reactionsOf(rep.GetEvent().GetReactions()) != r.counts {
			t.Fatalf("%s %s (remove %v): %v %v, want counts %s", r.user, r.emoji, r.remove, rep, err, r.counts)
		}
	}
	for user, want := range map[string]string{"alice": "👍1 😂2*", "bob": "👍1 😂2", "carol": "👍1* 😂2*"} {
		h, err := e.q.History(e.ctx, user, &parleyv1.History{ConversationId: conv})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range h.GetMessages() {
			if m.GetSeq() == hello {
				if got := reactionsOf(m.GetReactions()); got != want {
					t.Errorf("%s's history shows %q, want %q", user, got, want)
				}
			} else if m.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_REACTION && strings.Contains(reactionsOf(m.GetReactions()), "*") {
				t.Errorf("a REACTION event carries me: %v", m)
			}
		}
		res, err := e.q.Sync(e.ctx, user, &parleyv1.Sync{Cursors: []*parleyv1.Cursor{{ConversationId: conv, Seq: hello - 1}}})
		if err != nil || len(res.GetConversations()) != 1 {
			t.Fatalf("sync: %v %v", res, err)
		}
		cs := res.GetConversations()[0]
		if got := reactionsOf(cs.GetMessages()[0].GetReactions()); got != want {
			t.Errorf("%s's sync shows %q, want %q", user, got, want)
		}
		// Reactions are not activity: the last message is hello, and they
		// are not unread.
		if got := reactionsOf(cs.GetLastMessage().GetReactions()); cs.GetLastMessage().GetSeq() != hello || got != want {
			t.Errorf("%s's inbox last message %v, want seq %d with %q", user, cs.GetLastMessage(), hello, want)
		}
		if user != "alice" && cs.GetUnread() != 1 {
			t.Errorf("%s's unread = %d, want 1 (hello only)", user, cs.GetUnread())
		}
	}
}

// TestReactionLimits: the per-user and per-message limits hold at their
// boundary, and every bad reaction gets its code and stores nothing.
func TestReactionLimits(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	users := []string{"alice"}
	for i := range MaxReactionsPerMessage {
		users = append(users, fmt.Sprintf("u%02d", i))
	}
	conv := e.createGroup(t, "alice", "crowd", users[1:]...)
	msg := e.mustSend(t, "alice", conv, "a1", "react to me").GetSeq()
	other := e.mustSend(t, "alice", conv, "a2", "and to me").GetSeq()

	// One user: MaxReactionsPerUser emoji, not one more; another message
	// has its own count.
	for i := range MaxReactionsPerUser {
		if _, err := e.call(reactRec("alice", conv, msg, fmt.Sprintf("e%d", i), false)); err != nil {
			t.Fatalf("reaction %d of %d: %v", i+1, MaxReactionsPerUser, err)
		}
	}
	if _, err := e.call(reactRec("alice", conv, msg, "one-more", false)); code(err) != wire.CodeTooManyReactions {
		t.Fatalf("reaction %d by one user: %v, want too_many_reactions", MaxReactionsPerUser+1, err)
	}
	if _, err := e.call(reactRec("alice", conv, other, "one-more", false)); err != nil {
		t.Fatalf("a reaction to another message: %v", err)
	}
	// Taking one back makes room.
	if _, err := e.call(reactRec("alice", conv, msg, "e0", true)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.call(reactRec("alice", conv, msg, "one-more", false)); err != nil {
		t.Fatalf("a reaction after removing one: %v", err)
	}

	// The message: MaxReactionsPerMessage distinct emoji (alice has 3, so
	// the others add the rest), then no new one, but more of an existing one.
	for i := MaxReactionsPerUser; i < MaxReactionsPerMessage; i++ {
		if _, err := e.call(reactRec(users[i], conv, msg, fmt.Sprintf("e%d", i), false)); err != nil {
			t.Fatalf("distinct reaction %d: %v", i+1, err)
		}
	}
	if n := len(e.message(t, conv, msg).GetReactions()); n != MaxReactionsPerMessage {
		t.Fatalf("message has %d distinct reactions, want %d", n, MaxReactionsPerMessage)
	}
	head := e.head(t, conv)
	before := reactionsOf(e.message(t, conv, msg).GetReactions())
	deleted := e.mustSend(t, "alice", conv, "a3", "gone soon").GetSeq()
	if _, err := e.call(deleteRec("alice", conv, deleted)); err != nil {
		t.Fatal(err)
	}
	head += 2
	for _, tc := range []struct {
		name string
		rec  *parleyv1.IngressRecord
		code string
	}{
		{"a new emoji past the message's limit", reactRec(users[MaxReactionsPerMessage], conv, msg, "new", false), wire.CodeTooManyReactions},
		{"seq 0", reactRec("alice", conv, 0, "👍", false), wire.CodeInvalid},
		{"beyond the head", reactRec("alice", conv, head+1, "👍", false), wire.CodeNotFound},
		{"a system event", reactRec("alice", conv, 1, "👍", false), wire.CodeInvalid},
		{"a reaction event", reactRec("alice", conv, other+1, "👍", false), wire.CodeInvalid},
		{"a delete event", reactRec("alice", conv, head, "👍", false), wire.CodeInvalid},
		{"a deleted message", reactRec("alice", conv, deleted, "👍", false), wire.CodeNotFound},
		{"empty emoji", reactRec("alice", conv, msg, "", false), wire.CodeInvalid},
		{"emoji with a space", reactRec("alice", conv, msg, "a b", false), wire.CodeInvalid},
		{"over-long emoji", reactRec("alice", conv, msg, strings.Repeat("x", rules.MaxEmojiBytes+1), false), wire.CodeTooLarge},
		{"non-member", reactRec("mallory", conv, msg, "e1", false), wire.CodeNotMember},
		{"unknown group", reactRec("alice", "g:12345", 1, "👍", false), wire.CodeNotFound},
	} {
		if _, err := e.call(tc.rec); code(err) != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}
	if h := e.head(t, conv); h != head {
		t.Fatalf("bad reactions moved the head from %d to %d", head, h)
	}
	if after := reactionsOf(e.message(t, conv, msg).GetReactions()); after != before {
		t.Fatalf("bad reactions changed the message: %s, was %s", after, before)
	}
	// At the message's limit a member still joins an existing emoji.
	if _, err := e.call(reactRec(users[MaxReactionsPerMessage], conv, msg, "e5", false)); err != nil {
		t.Fatalf("joining an existing emoji at the limit: %v", err)
	}
}

// TestReactionEffectHeals: a reaction stored without its effect (Cassandra,
// a failure after the commit point) is applied when the sequencer next
// loads the conversation, so the client's retry finds the reaction there
// and sequences nothing more.
func TestReactionEffectHeals(t *testing.T) {
	e := newEnv(t, nil)
	l := &laggingStore{MessageStore: e.st, stale: map[uint64]*parleyv1.Message{}}
	e.st = l
	e.startSequencer(t, "chat-0", 0)
	dm := rules.DMID("alice", "bob")
	seq := e.mustSend(t, "alice", dm, "a1", "lunch").GetSeq()
	l.mu.Lock()
	l.failing = true
	l.mu.Unlock()
	if _, err := e.call(reactRec("bob", dm, seq, "👍", false)); err == nil {
		t.Fatal("the reaction whose effect failed was answered as a success")
	}
	if m := e.message(t, dm, seq); len(m.GetReactions()) != 0 {
		t.Fatalf("precondition: the effect is missing, got %v", m)
	}
	head := e.head(t, dm)
	rep, err := e.call(reactRec("bob", dm, seq, "👍", false))
	if err != nil || rep.GetEvent().GetSeq() != 0 || reactionsOf(rep.GetEvent().GetReactions()) != "👍1" {
		t.Fatalf("retry: %v %v, want seq 0 with 👍1", rep, err)
	}
	if m := e.message(t, dm, seq); m.GetReactionSeq() != head || reactionsOf(m.GetReactions()) != "👍1!users" {
		t.Fatalf("not healed: %v", m)
	}
	if h := e.head(t, dm); h != head {
		t.Fatalf("the retry sequenced another event: head %d, want %d", h, head)
	}
}

// TestReactionBurstKeepsInboxOrder: a burst of reactions, longer than one
// look-back page, is not the conversation's last message in the inbox: the
// last text message is (an outside tester made a conversation the inbox's
// first with 52 reaction events on an old message).
func TestReactionBurstKeepsInboxOrder(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	conv := e.createGroup(t, "alice", "crew", "bob")
	hello := e.mustSend(t, "alice", conv, "a1", "hello").GetSeq()
	for i := range 2*lastChangePage + 10 {
		if _, err := e.call(reactRec("bob", conv, hello, "🔁", i%2 == 1)); err != nil {
			t.Fatalf("reaction %d: %v", i, err)
		}
	}
	states, err := e.q.Inbox(e.ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range states {
		if st.GetConversationId() != conv {
			continue
		}
		if last := st.GetLastMessage(); last.GetSeq() != hello || last.GetText() != "hello" {
			t.Fatalf("inbox last message after %d reaction events = %v, want seq %d \"hello\"", 2*lastChangePage+10, last, hello)
		}
		return
	}
	t.Fatalf("%s not in alice's inbox", conv)
}
