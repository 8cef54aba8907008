package chat

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

func replyRec(user, conv, cmid, text string, replyTo uint64) *parleyv1.IngressRecord {
	return &parleyv1.IngressRecord{Origin: origin(user), ConversationId: conv, Op: &parleyv1.IngressRecord_Send{
		Send: &parleyv1.Send{ConversationId: conv, ClientMsgId: cmid, Content: &parleyv1.Send_Text{Text: text}, ReplyTo: replyTo}}}
}

// TestReplies (issue 13): a reply pushes and answers a quote of the message
// it answers (cut to MaxQuoteRunes); the stored reply keeps no copy of the
// text — history fills it from the original as it is now, so an edit shows
// and a delete leaves nothing behind; a member cannot quote what was sent
// before it joined; bad reply_to values get their codes and store nothing.
func TestReplies(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	for _, u := range []string{"alice", "bob"} {
		e.online(t, u, 0)
	}
	conv := e.createGroup(t, "alice", "crew", "bob")
	long := strings.Repeat("é", MaxQuoteRunes+20)
	orig := e.mustSend(t, "alice", conv, "a1", long).GetSeq()

	rep, err := e.call(replyRec("bob", conv, "b1", "agreed", orig))
	if err != nil {
		t.Fatal(err)
	}
	seq := rep.GetSendOk().GetSeq()
	want := &parleyv1.Quote{Seq: orig, SenderId: "alice", Text: strings.Repeat("é", MaxQuoteRunes)}
	if q := rep.GetSendOk().GetReplyTo(); !proto.Equal(q, want) {
		t.Fatalf("send_ok quote %v, want %v", q, want)
	}
	if m := e.message(t, conv, seq); !proto.Equal(m.GetReplyTo(), &parleyv1.Quote{Seq: orig, SenderId: "alice"}) || m.GetText() != "agreed" {
		t.Fatalf("stored reply %v, want a quote of seq and sender only", m)
	}
	quoteInHistory := func(user string, seq uint64) *parleyv1.Quote {
		t.Helper()
		h, err := e.q.History(e.ctx, user, &parleyv1.History{ConversationId: conv})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range h.GetMessages() {
			if m.GetSeq() == seq {
				return m.GetReplyTo()
			}
		}
		t.Fatalf("seq %d not in %s's history", seq, user)
		return nil
	}
	if q := quoteInHistory("alice", seq); !proto.Equal(q, want) {
		t.Fatalf("history quote %v, want %v", q, want)
	}
	waitFor(t, "alice gets the reply with its quote", func() bool {
		for _, d := range e.pushes(0, "alice", isMessage(seq)) {
			if proto.Equal(d.GetMessage().GetReplyTo(), want) {
				return true
			}
		}
		return false
	})

	// A retry answers the stored message and sequences nothing new.
	if rep, err := e.call(replyRec("bob", conv, "b1", "agreed", orig)); err != nil || rep.GetSendOk().GetSeq() != seq {
		t.Fatalf("retried reply: %v %v", rep, err)
	}
	// An edit of the original shows in the quote; a delete leaves no copy.
	if _, err := e.call(editRec("alice", conv, orig, "lunch at one")); err != nil {
		t.Fatal(err)
	}
	if q := quoteInHistory("bob", seq); q.GetText() != "lunch at one" {
		t.Fatalf("quote after the edit %v, want the edited text", q)
	}
	if _, err := e.call(deleteRec("alice", conv, orig)); err != nil {
		t.Fatal(err)
	}
	if q := quoteInHistory("bob", seq); !q.GetDeleted() || q.GetText() != "" {
		t.Fatalf("quote after the delete %v, want deleted without text", q)
	}
	rep, err = e.call(replyRec("bob", conv, "b2", "what did it say?", orig))
	if err != nil {
		t.Fatal(err)
	}
	if q := e.message(t, conv, rep.GetSendOk().GetSeq()).GetReplyTo(); !q.GetDeleted() || q.GetText() != "" || q.GetSeq() != orig {
		t.Fatalf("quote of a deleted message %v", q)
	}

	head := e.head(t, conv)
	for _, tc := range []struct {
		name    string
		replyTo uint64
		code    string
	}{
		{"a future seq", head + 1, wire.CodeInvalid},
		{"far in the future", 1 << 62, wire.CodeInvalid},
		{"a system event", 1, wire.CodeInvalid},
		{"a delete event", head - 1, wire.CodeInvalid},
	} {
		if _, err := e.call(replyRec("bob", conv, "bad-"+tc.name, "x", tc.replyTo)); code(err) != tc.code {
			t.Errorf("reply to %s (%d): %v, want %s", tc.name, tc.replyTo, err, tc.code)
		}
	}
	if _, err := e.call(replyRec("carol", conv, "c1", "x", orig)); code(err) != wire.CodeNotMember {
		t.Errorf("a non-member's reply: %v, want %s", err, wire.CodeNotMember)
	}
	// Carol joins now: what came before is not hers to quote (not even
	// whether a seq holds a message or an event).
	if _, err := e.call(addRec("alice", conv, "carol")); err != nil {
		t.Fatal(err)
	}
	for _, rt := range []uint64{1, orig, seq} {
		if _, err := e.call(replyRec("carol", conv, fmt.Sprintf("c-%d", rt), "x", rt)); code(err) != wire.CodeNotFound {
			t.Errorf("carol (joined after) replying to %d: %v, want %s", rt, err, wire.CodeNotFound)
		}
	}
	head = e.head(t, conv)
	// A DM that does not exist yet has nothing to answer: refused, and not created.
	dm := rules.DMID("alice", "dave")
	if _, err := e.call(replyRec("dave", dm, "d1", "x", 1)); code(err) != wire.CodeInvalid {
		t.Errorf("a reply creating a DM: %v, want %s", err, wire.CodeInvalid)
	}
	if h := e.head(t, dm); h != 0 {
		t.Errorf("a refused reply created the DM (head %d)", h)
	}
	if h := e.head(t, conv); h != head {
		t.Fatalf("bad replies moved the head from %d to %d", head, h)
	}
}
