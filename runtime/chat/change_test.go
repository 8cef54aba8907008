package chat

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

func editRec(user, conv string, seq uint64, text string) *parleyv1.IngressRecord {
	return &parleyv1.IngressRecord{Origin: origin(user), ConversationId: conv, Op: &parleyv1.IngressRecord_Edit{
		Edit: &parleyv1.Edit{ConversationId: conv, Seq: seq, Text: text}}}
}

func deleteRec(user, conv string, seq uint64) *parleyv1.IngressRecord {
	return &parleyv1.IngressRecord{Origin: origin(user), ConversationId: conv, Op: &parleyv1.IngressRecord_Delete{
		Delete: &parleyv1.Delete{ConversationId: conv, Seq: seq}}}
}

func (e *env) message(tb testing.TB, conv string, seq uint64) *parleyv1.Message {
	tb.Helper()
	m, err := e.st.Message(e.ctx, conv, seq)
	if err != nil {
		tb.Fatalf("message %d of %s: %v", seq, conv, err)
	}
	return m
}

func (e *env) head(tb testing.TB, conv string) uint64 {
	tb.Helper()
	h, err := e.st.Head(e.ctx, conv)
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// TestEditAndDelete (issue 13): edits and deletes are events every member
// gets, the target shows the latest text or a tombstone, retries sequence
// nothing new, and every bad request has its code and changes nothing.
func TestEditAndDelete(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	for _, u := range []string{"alice", "bob", "carol"} {
		e.online(t, u, 0)
	}
	conv := e.createGroup(t, "alice", "crew", "bob", "carol")
	hello := e.mustSend(t, "alice", conv, "a1", "hello wrold").GetSeq()
	bobs := e.mustSend(t, "bob", conv, "b1", "bob's secret").GetSeq()
	rep, err := e.call(&parleyv1.IngressRecord{Origin: origin("alice"), ConversationId: conv, Op: &parleyv1.IngressRecord_Send{
		Send: &parleyv1.Send{ConversationId: conv, ClientMsgId: "a2", Content: &parleyv1.Send_Media{Media: &parleyv1.Media{Url: "https://m/x.png", Mime: "image/png", Size: 3}}}}})
	if err != nil {
		t.Fatal(err)
	}
	media := rep.GetSendOk().GetSeq()

	// The sender edits: an EDITED event at the head, pushed to the others
	// and to the sender's other devices, and the message itself changed.
	rep, err = e.call(editRec("alice", conv, hello, "hello world"))
	if err != nil {
		t.Fatalf("edit: %v", err)
	}
	ev := rep.GetEvent()
	if ev.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_EDITED || ev.GetTargetSeq() != hello || ev.GetText() != "hello world" || ev.GetSeq() != media+1 {
		t.Fatalf("edit event %v", ev)
	}
	waitFor(t, "bob gets the edit", func() bool { return len(e.pushes(0, "bob", isMessage(ev.GetSeq()))) == 1 })
	for _, d := range e.pushes(0, "alice", isMessage(ev.GetSeq())) {
		if d.GetExceptSessionId() != "sess-alice" {
			t.Errorf("the editing session is not skipped: %v", d)
		}
	}
	m := e.message(t, conv, hello)
	if m.GetText() != "hello world" || m.GetEditedAt() != ev.GetCreatedAt() || m.GetChangeSeq() != ev.GetSeq() {
		t.Fatalf("edited message %v", m)
	}
	// The retry of the same edit answers the same event.
	rep, err = e.call(editRec("alice", conv, hello, "hello world"))
	if err != nil || rep.GetEvent().GetSeq() != ev.GetSeq() || rep.GetEvent().GetText() != "hello world" {
		t.Fatalf("retried edit: %v %v", rep, err)
	}

	head := e.head(t, conv)
	long := strings.Repeat("x", e.cfg.MaxMessageBytes+1)
	for _, tc := range []struct {
		name string
		rec  *parleyv1.IngressRecord
		code string
	}{
		{"another's message", editRec("bob", conv, hello, "mine now"), wire.CodeForbidden},
		{"delete another's message", deleteRec("bob", conv, hello), wire.CodeForbidden},
		{"delete as a plain member", deleteRec("carol", conv, bobs), wire.CodeForbidden},
		{"seq 0", editRec("alice", conv, 0, "x"), wire.CodeInvalid},
		{"beyond the head", editRec("alice", conv, head+1, "x"), wire.CodeNotFound},
		{"delete beyond the head", deleteRec("alice", conv, head+10), wire.CodeNotFound},
		{"a system event", editRec("alice", conv, 1, "x"), wire.CodeInvalid},
		{"delete a system event", deleteRec("alice", conv, 1), wire.CodeInvalid},
		{"an edit event", deleteRec("alice", conv, ev.GetSeq()), wire.CodeInvalid},
		{"a media message", editRec("alice", conv, media, "x"), wire.CodeInvalid},
		{"empty text", editRec("alice", conv, hello, ""), wire.CodeInvalid},
		{"white space", editRec("alice", conv, hello, " \n"), wire.CodeInvalid},
		{"over-long text", editRec("alice", conv, hello, long), wire.CodeTooLarge},
		{"control character", editRec("alice", conv, hello, "red \x1b[31m"), wire.CodeInvalid},
		{"unchanged text", editRec("bob", conv, bobs, "bob's secret"), wire.CodeInvalid},
		{"non-member", editRec("dave", conv, hello, "x"), wire.CodeNotMember},
		{"non-member delete", deleteRec("dave", conv, hello), wire.CodeNotMember},
		{"unknown group", editRec("alice", "g:12345", 1, "x"), wire.CodeNotFound},
	} {
		if _, err := e.call(tc.rec); code(err) != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}
	if h := e.head(t, conv); h != head {
		t.Fatalf("bad requests moved the head from %d to %d", head, h)
	}
	if m := e.message(t, conv, hello); m.GetText() != "hello world" {
		t.Fatalf("bad requests changed the message: %v", m)
	}

	// The owner deletes bob's message: a tombstone, text gone; the sender
	// can no longer edit it; deleting again answers the first event.
	rep, err = e.call(deleteRec("alice", conv, bobs))
	if err != nil || rep.GetEvent().GetKind() != parleyv1.MessageKind_MESSAGE_KIND_DELETED || rep.GetEvent().GetTargetSeq() != bobs {
		t.Fatalf("owner delete: %v %v", rep, err)
	}
	del := rep.GetEvent()
	waitFor(t, "bob learns his message was deleted", func() bool { return len(e.pushes(0, "bob", isMessage(del.GetSeq()))) == 1 })
	if m := e.message(t, conv, bobs); !m.GetDeleted() || m.GetText() != "" || m.GetChangeSeq() != del.GetSeq() {
		t.Fatalf("deleted message %v", m)
	}
	if _, err := e.call(editRec("bob", conv, bobs, "undo")); code(err) != wire.CodeNotFound {
		t.Fatalf("edit of a deleted message: %v, want not_found", err)
	}
	for _, u := range []string{"alice", "bob"} {
		rep, err = e.call(deleteRec(u, conv, bobs))
		if err != nil || rep.GetEvent().GetSeq() != del.GetSeq() {
			t.Fatalf("%s deletes again: %v %v, want the first event %d", u, rep, err, del.GetSeq())
		}
	}
	// The sender deletes its own media message.
	if _, err = e.call(deleteRec("alice", conv, media)); err != nil {
		t.Fatalf("delete media: %v", err)
	}
	if m := e.message(t, conv, media); !m.GetDeleted() || m.GetMedia() != nil {
		t.Fatalf("deleted media message %v", m)
	}
	for _, m := range e.log(t, conv) {
		if strings.Contains(m.GetText(), "secret") || m.GetMedia() != nil {
			t.Errorf("seq %d keeps deleted content: %v", m.GetSeq(), m)
		}
	}

	// Unread (carol, who read nothing): alice's message only; the events,
	// the deleted messages and the edits do not count.
	states, err := e.q.Inbox(e.ctx, "carol")
	if err != nil || len(states) != 1 {
		t.Fatalf("inbox: %v %v", states, err)
	}
	if n := states[0].GetUnread(); n != 1 {
		t.Errorf("carol's unread = %d, want 1 (the edited message)", n)
	}
}

// seedOldGroup stores group conv, created by alice with members, and a
// text by sender for each of texts (seqs 2, 3, ...), all two hours old:
// past an edit window of an hour. Call it before the sequencer starts.
func (e *env) seedOldGroup(t *testing.T, conv string, members []string, sender string, texts ...string) {
	t.Helper()
	old := time.Now().Add(-2 * time.Hour).UnixMilli()
	c := store.Conversation{ID: conv, Kind: store.KindGroup, CreatedBy: "alice"}
	if err := e.st.CreateConversation(e.ctx, c); err != nil {
		t.Fatal(err)
	}
	msgs := []*parleyv1.Message{
		{ConversationId: conv, Seq: 1, SenderId: "alice", Kind: parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED, Members: members, CreatedAt: old},
	}
	for i, text := range texts {
		seq := uint64(i + 2)
		msgs = append(msgs, &parleyv1.Message{ConversationId: conv, Seq: seq, SenderId: sender, ClientMsgId: fmt.Sprintf("%s%d", sender[:1], i+1),
			Kind: parleyv1.MessageKind_MESSAGE_KIND_TEXT, Text: text, CreatedAt: old})
	}
	if err := e.st.Append(e.ctx, conv, msgs, effects(c, nil, msgs)...); err != nil {
		t.Fatal(err)
	}
}

// TestEditWindow: past Config.EditWindow the sender can neither edit nor
// delete (edit_window_closed, nothing stored); a group's owner still deletes.
func TestEditWindow(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.EditWindow = time.Hour })
	conv := "g:424242"
	e.seedOldGroup(t, conv, []string{"alice", "bob"}, "bob", "old", "older")
	e.startSequencer(t, "chat-0", 0)
	if _, err := e.call(editRec("bob", conv, 2, "new")); code(err) != wire.CodeEditWindowClosed {
		t.Fatalf("late edit: %v", err)
	}
	if _, err := e.call(deleteRec("bob", conv, 2)); code(err) != wire.CodeEditWindowClosed || !strings.Contains(err.Error(), "1h0m0s") {
		t.Fatalf("late delete: %v, want edit_window_closed naming the window", err)
	}
	if h := e.head(t, conv); h != 3 {
		t.Fatalf("late requests stored something: head %d", h)
	}
	if _, err := e.call(deleteRec("alice", conv, 3)); err != nil {
		t.Fatalf("the owner deletes an old message: %v", err)
	}
	if m := e.message(t, conv, 3); !m.GetDeleted() {
		t.Fatalf("not deleted: %v", m)
	}
}

// laggingStore stands in for a Cassandra store whose Append stored a change
// event but failed before applying its effect: until ApplyChange repairs it,
// reads show the target as it was.
type laggingStore struct {
	store.MessageStore
	mu      sync.Mutex
	failing bool
	stale   map[uint64]*parleyv1.Message // target seq -> its row before the change
	applied int
}

func (l *laggingStore) Append(ctx context.Context, conv string, msgs []*parleyv1.Message, effects ...store.Effect) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.failing || len(msgs) != 1 || !store.IsChange(msgs[0].GetKind()) {
		return l.MessageStore.Append(ctx, conv, msgs, effects...)
	}
	l.failing = false
	before, err := l.MessageStore.Message(ctx, conv, msgs[0].GetTargetSeq())
	if err != nil {
		return err
	}
	if err := l.MessageStore.Append(ctx, conv, msgs, effects...); err != nil {
		return err
	}
	l.stale[before.GetSeq()] = before
	return context.DeadlineExceeded // the effect's write timed out
}

func (l *laggingStore) ApplyChange(ctx context.Context, conv string, ev *parleyv1.Message) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.applied++
	delete(l.stale, ev.GetTargetSeq())
	return l.MessageStore.ApplyChange(ctx, conv, ev)
}

func (l *laggingStore) Message(ctx context.Context, conv string, seq uint64) (*parleyv1.Message, error) {
	l.mu.Lock()
	m := l.stale[seq]
	l.mu.Unlock()
	if m != nil {
		return m, nil
	}
	return l.MessageStore.Message(ctx, conv, seq)
}

func (l *laggingStore) Messages(ctx context.Context, conv string, p store.Page) ([]*parleyv1.Message, bool, error) {
	msgs, more, err := l.MessageStore.Messages(ctx, conv, p)
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, m := range msgs {
		if s := l.stale[m.GetSeq()]; s != nil {
			msgs[i] = s
		}
	}
	return msgs, more, err
}

// TestChangeEffectHeals: an edit stored without its effect (Cassandra, a
// failure after the commit point) is applied when the sequencer next loads
// the conversation, and the client's retry is answered with that event.
func TestChangeEffectHeals(t *testing.T) {
	e := newEnv(t, nil)
	l := &laggingStore{MessageStore: e.st, stale: map[uint64]*parleyv1.Message{}}
	e.st = l
	e.startSequencer(t, "chat-0", 0)
	dm := rules.DMID("alice", "bob")
	seq := e.mustSend(t, "alice", dm, "a1", "teh typo").GetSeq()
	l.mu.Lock()
	l.failing = true
	l.mu.Unlock()
	if _, err := e.call(editRec("alice", dm, seq, "the typo")); err == nil {
		t.Fatal("the edit whose effect failed was answered as a success")
	}
	if m := e.message(t, dm, seq); m.GetText() != "teh typo" {
		t.Fatalf("precondition: the effect is missing, got %v", m)
	}
	head := e.head(t, dm)
	rep, err := e.call(editRec("alice", dm, seq, "the typo"))
	if err != nil || rep.GetEvent().GetSeq() != head {
		t.Fatalf("retry: %v %v, want the stored event at %d", rep, err, head)
	}
	if m := e.message(t, dm, seq); m.GetText() != "the typo" || m.GetChangeSeq() != head {
		t.Fatalf("not healed: %v", m)
	}
	if h := e.head(t, dm); h != head {
		t.Fatalf("the retry sequenced another event: head %d, want %d", h, head)
	}
	l.mu.Lock()
	n := l.applied
	l.mu.Unlock()
	if n != 1 {
		t.Fatalf("ApplyChange called %d times, want 1", n)
	}
}

// TestInboxIgnoresChanges: editing or deleting an old message is not new
// activity — the inbox's last message stays the newest real one, so the
// conversation does not jump to the top of the list.
func TestInboxIgnoresChanges(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	old := e.mustSend(t, "alice", "dm:alice:bob", "a1", "first").GetSeq()
	time.Sleep(5 * time.Millisecond) // created_at has millisecond precision: keep the two apart
	e.mustSend(t, "alice", "dm:alice:carol", "a2", "later, to carol")
	if _, err := e.call(editRec("alice", "dm:alice:bob", old, "first (fixed)")); err != nil {
		t.Fatal(err)
	}
	states, err := e.q.Inbox(e.ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != 2 || states[0].GetConversationId() != "dm:alice:carol" {
		t.Fatalf("inbox order %v, want the carol DM first (the bob DM only had an edit)", states)
	}
	last := states[1].GetLastMessage()
	if last.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_TEXT || last.GetText() != "first (fixed)" {
		t.Errorf("bob DM's last message = %v, want the edited text message, not the edit event", last)
	}
	if states[1].GetHeadSeq() <= last.GetSeq() {
		t.Errorf("head %d should stay the edit event's seq, above the last message %d", states[1].GetHeadSeq(), last.GetSeq())
	}
}
