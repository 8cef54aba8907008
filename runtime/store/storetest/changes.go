package storetest

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
)

// changeMsg is an EDITED (text != "") or DELETED (text == "") event at seq
// changing target.
func changeMsg(conv string, seq, target uint64, text string) *parleyv1.Message {
	m := eventMsg(conv, seq, parleyv1.MessageKind_MESSAGE_KIND_DELETED, "sender")
	m.TargetSeq = target
	if text != "" {
		m.Kind, m.Text = parleyv1.MessageKind_MESSAGE_KIND_EDITED, text
	}
	return m
}

func message(t *testing.T, s store.MessageStore, conv string, seq uint64) *parleyv1.Message {
	t.Helper()
	m, err := s.Message(ctxFor(t), conv, seq)
	if err != nil {
		t.Fatalf("Message(%s, %d): %v", conv, seq, err)
	}
	return m
}

// wantMessage checks the message at seq both by Message and in a page.
func wantMessage(t *testing.T, s store.MessageStore, conv string, want *parleyv1.Message) {
	t.Helper()
	if got := message(t, s, conv, want.GetSeq()); !proto.Equal(got, want) {
		t.Errorf("Message(%d):\n got %v\nwant %v", want.GetSeq(), got, want)
	}
	page, _ := messages(t, s, conv, store.Page{After: want.GetSeq() - 1, Forward: true, Limit: 1})
	if len(page) != 1 || !proto.Equal(page[0], want) {
		t.Errorf("Messages(after %d) = %v, want %v", want.GetSeq()-1, page, want)
	}
}

// testChangeEdit: an EDITED event rewrites its target's text and mentions,
// sets edited_at and change_seq, and keeps the text only in the newest
// version.
func testChangeEdit(t *testing.T, s store.MessageStore) {
	conv := newConv()
	appendRange(t, s, conv, 1, 3, 3)
	e4 := changeMsg(conv, 4, 2, "second, edited")
	e4.Mentions = []string{"bob"} // the edited text's mentions replace the message's
	mustAppend(t, s, conv, e4)

	want := textMsg(conv, 2)
	want.Text, want.EditedAt, want.ChangeSeq, want.Mentions = "second, edited", e4.GetCreatedAt(), 4, []string{"bob"}
	wantMessage(t, s, conv, want)
	wantMessage(t, s, conv, e4) // the newest edit keeps its text
	wantMessage(t, s, conv, textMsg(conv, 1))
	wantMessage(t, s, conv, textMsg(conv, 3))

	e5 := changeMsg(conv, 5, 2, "second, edited twice")
	mustAppend(t, s, conv, e5)
	want.Text, want.EditedAt, want.ChangeSeq, want.Mentions = "second, edited twice", e5.GetCreatedAt(), 5, nil
	wantMessage(t, s, conv, want)
	wantMessage(t, s, conv, e5)
	old := proto.CloneOf(e4)
	old.Text = "" // superseded: its text is gone
	wantMessage(t, s, conv, old)
	if h := head(t, s, conv); h != 5 {
		t.Errorf("head = %d, want 5", h)
	}
}

// testChangeDelete: a DELETED event makes its target a tombstone, and no
// row of the log keeps any version of its text, its media, its quote or its
// mentions.
func testChangeDelete(t *testing.T, s store.MessageStore) {
	conv := newConv()
	m1 := textMsg(conv, 1)
	m1.Text = "secret original @bob"
	// A reply with mentions: the delete takes the quote and the mentions too.
	m1.ReplyTo = &parleyv1.Quote{Seq: 1, SenderId: "carol", Text: "secret quoted"}
	m1.Mentions = []string{"bob"}
	m2 := textMsg(conv, 2)
	m2.Kind, m2.Text, m2.Media = parleyv1.MessageKind_MESSAGE_KIND_MEDIA, "", &parleyv1.Media{Url: "https://x/secret.png", Mime: "image/png", Size: 9}
	mustAppend(t, s, conv, m1, m2)
	mustAppend(t, s, conv, changeMsg(conv, 3, 1, "secret edited"))
	d4 := changeMsg(conv, 4, 1, "")
	d5 := changeMsg(conv, 5, 2, "")
	mustAppend(t, s, conv, d4, d5)

	want1 := proto.CloneOf(m1)
	want1.Text, want1.Deleted, want1.ChangeSeq, want1.ReplyTo, want1.Mentions = "", true, 4, nil, nil
	want1.EditedAt = 1_700_000_000_003 // the edit happened; the delete keeps its time
	wantMessage(t, s, conv, want1)
	want2 := proto.CloneOf(m2)
	want2.Media, want2.Deleted, want2.ChangeSeq = nil, true, 5
	wantMessage(t, s, conv, want2)
	all, _ := messages(t, s, conv, store.Page{Forward: true, Limit: 10})
	if len(all) != 5 {
		t.Fatalf("log has %d messages, want 5", len(all))
	}
	for _, m := range all {
		if strings.Contains(m.GetText(), "secret") || m.GetMedia() != nil || m.GetReplyTo() != nil || len(m.GetMentions()) > 0 {
			t.Errorf("seq %d keeps deleted content: %v", m.GetSeq(), m)
		}
	}
}

// testChangeSameAppend: a change may follow its target in one Append.
func testChangeSameAppend(t *testing.T, s store.MessageStore) {
	conv := newConv()
	e2 := changeMsg(conv, 2, 1, "fixed")
	mustAppend(t, s, conv, textMsg(conv, 1), e2, changeMsg(conv, 3, 1, ""))
	want := textMsg(conv, 1)
	want.Text, want.EditedAt, want.Deleted, want.ChangeSeq = "", e2.GetCreatedAt(), true, 3
	wantMessage(t, s, conv, want)
	e2.Text = ""
	wantMessage(t, s, conv, e2)
}

// testApplyChange: ApplyChange is idempotent, never lets an older change
// undo a newer one, and refuses what is not a change of a stored message.
func testApplyChange(t *testing.T, s store.MessageStore) {
	ctx := ctxFor(t)
	conv := newConv()
	appendRange(t, s, conv, 1, 2, 2)
	e3, e4 := changeMsg(conv, 3, 1, "v2"), changeMsg(conv, 4, 1, "v3")
	mustAppend(t, s, conv, e3, e4)
	want := textMsg(conv, 1)
	want.Text, want.EditedAt, want.ChangeSeq = "v3", e4.GetCreatedAt(), 4
	for _, ev := range []*parleyv1.Message{e4, e3, e4} {
		if err := s.ApplyChange(ctx, conv, ev); err != nil {
			t.Fatalf("ApplyChange(seq %d): %v", ev.GetSeq(), err)
		}
		wantMessage(t, s, conv, want)
	}
	e3.Text = ""
	wantMessage(t, s, conv, e3)
	wantMessage(t, s, conv, e4)

	if err := s.ApplyChange(ctx, conv, changeMsg(conv, 9, 7, "")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ApplyChange of a missing target: %v, want ErrNotFound", err)
	}
	if err := s.ApplyChange(ctx, conv, textMsg(conv, 2)); err == nil {
		t.Error("ApplyChange of a text message: nil error")
	}
	wantMessage(t, s, conv, textMsg(conv, 2))
}
