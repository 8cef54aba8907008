package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// editFrame and deleteFrame are the WebSocket requests of issue 13.
func editFrame(conv string, seq uint64, text string) *parleyv1.ClientFrame {
	return &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Edit{Edit: &parleyv1.Edit{ConversationId: conv, Seq: seq, Text: text}}}
}

func deleteFrame(conv string, seq uint64) *parleyv1.ClientFrame {
	return &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Delete{Delete: &parleyv1.Delete{ConversationId: conv, Seq: seq}}}
}

// pageAt returns the message at seq as REST history shows it.
func pageAt(t *testing.T, hist []*parleyv1.Message, seq uint64) *parleyv1.Message {
	t.Helper()
	for _, m := range hist {
		if m.GetSeq() == seq {
			return m
		}
	}
	t.Fatalf("history has no seq %d", seq)
	return nil
}

// TestEditAndDelete (issue 13): a sender edits and deletes its messages and
// a group's owner deletes anyone's, over the JSON and Protobuf subprotocols
// (SDK and raw frames) and REST; other members and the sender's second
// device get the events live; history shows the latest text with its edit
// time and a tombstone without the text; retries sequence nothing new; bad
// requests get their codes and change nothing.
func TestEditAndDelete(t *testing.T) {
	p := startServer(t, "")
	ctx := ctxT(t, 2*time.Minute)
	aliceREST := client.NewREST(p.HTTP(), p.token("alice", "rest", time.Hour))
	carolREST := client.NewREST(p.HTTP(), p.token("carol", "rest", time.Hour))
	daveREST := client.NewREST(p.HTTP(), p.token("dave", "rest", time.Hour))
	conv, err := aliceREST.CreateGroup(ctx, "crew", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	alice, _ := dialSDK(t, p, p.token("alice", "laptop", time.Hour), wire.SubprotocolJSON, nil)
	_, phone := dialSDK(t, p, p.token("alice", "phone", time.Hour), wire.SubprotocolProto, nil)
	bob := openRaw(t, p, p.token("bob", "desk", time.Hour), wire.SubprotocolProto)
	carol := openRaw(t, p, p.token("carol", "desk", time.Hour), wire.SubprotocolJSON)

	// The sender edits over the JSON subprotocol (SDK).
	sent, err := alice.Send(ctx, conv, "helo")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := alice.Edit(ctx, conv, sent.GetSeq(), "hello")
	if err != nil {
		t.Fatalf("edit: %v", err)
	}
	if ev.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_EDITED || ev.GetTargetSeq() != sent.GetSeq() || ev.GetText() != "hello" {
		t.Fatalf("edit event %v", ev)
	}
	// alice's phone (Protobuf) and bob get it live.
	waitFor(t, 10*time.Second, "alice's phone gets the edit", func() bool { return phone.message(conv, ev.GetSeq()) != nil })
	if m := phone.message(conv, ev.GetSeq()); m.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_EDITED || m.GetTargetSeq() != sent.GetSeq() || m.GetText() != "hello" {
		t.Fatalf("phone got %v", m)
	}
	if f := bob.until("bob gets the edit", func(f *parleyv1.ServerFrame) bool { return f.GetMessage().GetSeq() == ev.GetSeq() }); f.GetMessage().GetText() != "hello" {
		t.Fatalf("bob got %v", f)
	}
	// A retry of the same edit answers the same event.
	if again, err := alice.Edit(ctx, conv, sent.GetSeq(), "hello"); err != nil || again.GetSeq() != ev.GetSeq() {
		t.Fatalf("retried edit: %v %v, want seq %d", again, err, ev.GetSeq())
	}

	// bob sends, edits (raw Protobuf frames) and then the owner deletes it (REST).
	id := bob.sendText(conv, "b1", "bob's secret")
	bobSeq := bob.reply(id).GetSendOk().GetSeq()
	f := bob.reply(bob.write(editFrame(conv, bobSeq, "bob's secret, edited")))
	if f.GetMessage().GetKind() != parleyv1.MessageKind_MESSAGE_KIND_EDITED || f.GetMessage().GetTargetSeq() != bobSeq {
		t.Fatalf("bob's edit answered %v", f)
	}
	del, err := aliceREST.Delete(ctx, conv, bobSeq)
	if err != nil || del.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_DELETED || del.GetTargetSeq() != bobSeq {
		t.Fatalf("owner delete: %v %v", del, err)
	}
	bob.until("bob learns of the delete", func(f *parleyv1.ServerFrame) bool { return f.GetMessage().GetSeq() == del.GetSeq() })
	if again, err := aliceREST.Delete(ctx, conv, bobSeq); err != nil || again.GetSeq() != del.GetSeq() {
		t.Fatalf("second delete: %v %v, want the first event %d", again, err, del.GetSeq())
	}

	// carol sends and edits over REST, then deletes over raw JSON frames.
	cs, err := carolREST.Send(ctx, conv, "", "carol was here")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carolREST.Edit(ctx, conv, cs.GetSeq(), "carol is here"); err != nil {
		t.Fatalf("REST edit: %v", err)
	}
	f = carol.reply(carol.write(deleteFrame(conv, cs.GetSeq())))
	if f.GetMessage().GetKind() != parleyv1.MessageKind_MESSAGE_KIND_DELETED {
		t.Fatalf("carol's delete answered %v", f)
	}
	cdel := f.GetMessage()

	hist := allHistory(t, ctx, carolREST, conv)
	if m := pageAt(t, hist, sent.GetSeq()); m.GetText() != "hello" || m.GetEditedAt() == 0 || m.GetDeleted() {
		t.Errorf("history shows the edited message as %v", m)
	}
	for _, seq := range []uint64{bobSeq, cs.GetSeq()} {
		if m := pageAt(t, hist, seq); !m.GetDeleted() || m.GetText() != "" {
			t.Errorf("history shows the deleted message %d as %v", seq, m)
		}
	}
	for _, m := range hist {
		if strings.Contains(m.GetText(), "secret") || strings.Contains(m.GetText(), "carol") {
			t.Errorf("history keeps deleted text at seq %d: %v", m.GetSeq(), m)
		}
	}
	head := hist[len(hist)-1].GetSeq()
	if head != cdel.GetSeq() {
		t.Fatalf("head %d, want the last delete %d", head, cdel.GetSeq())
	}

	// Bad requests, each with its code; nothing changes.
	long := strings.Repeat("x", wire.DefaultMaxMessageBytes+1)
	for _, tc := range []struct {
		name string
		do   func() error
		code string
	}{
		{"edit another's message", func() error { _, err := carolREST.Edit(ctx, conv, sent.GetSeq(), "mine"); return err }, wire.CodeForbidden},
		{"member deletes another's", func() error { _, err := carolREST.Delete(ctx, conv, sent.GetSeq()); return err }, wire.CodeForbidden},
		{"beyond the head", func() error { _, err := aliceREST.Edit(ctx, conv, head+1, "x"); return err }, wire.CodeNotFound},
		{"delete beyond the head", func() error { _, err := aliceREST.Delete(ctx, conv, head+100); return err }, wire.CodeNotFound},
		{"a system event", func() error { _, err := aliceREST.Edit(ctx, conv, 1, "x"); return err }, wire.CodeInvalid},
		{"delete a system event", func() error { _, err := aliceREST.Delete(ctx, conv, 1); return err }, wire.CodeInvalid},
		{"empty text", func() error { _, err := alice.Edit(ctx, conv, sent.GetSeq(), ""); return err }, wire.CodeInvalid},
		{"over-long text", func() error { _, err := aliceREST.Edit(ctx, conv, sent.GetSeq(), long); return err }, wire.CodeTooLarge},
		{"control character", func() error { _, err := aliceREST.Edit(ctx, conv, sent.GetSeq(), "\x1b[2J"); return err }, wire.CodeInvalid},
		{"non-member", func() error { _, err := daveREST.Edit(ctx, conv, sent.GetSeq(), "x"); return err }, wire.CodeNotMember},
		{"non-member delete", func() error { _, err := daveREST.Delete(ctx, conv, sent.GetSeq()); return err }, wire.CodeNotMember},
	} {
		wantCode(t, tc.name, tc.do(), tc.code)
	}
	bob.wantError(bob.write(editFrame(conv, bobSeq, "undo")), false, wire.CodeNotFound) // deleted
	bob.wantError(bob.write(editFrame(conv, 0, "x")), false, wire.CodeInvalid)
	bob.wantError(bob.write(editFrame(conv, sent.GetSeq(), "not mine")), false, wire.CodeForbidden)
	carol.wantError(carol.write(deleteFrame(conv, sent.GetSeq())), false, wire.CodeForbidden)
	carol.wantError(carol.write(editFrame(conv, head+5, "x")), false, wire.CodeNotFound)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPatch, p.HTTP()+"/v1/messages/"+conv+"/abc", strings.NewReader(`{"text":"x"}`))
	req.Header.Set("Authorization", "Bearer "+p.token("alice", "rest", time.Hour))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), wire.CodeInvalid) {
		t.Errorf("PATCH with seq abc = %d %s, want 400 invalid", res.StatusCode, body)
	}
	if h := headSeq(t, ctx, aliceREST, conv); h != head {
		t.Fatalf("bad requests moved the head from %d to %d", head, h)
	}
	if m := pageAt(t, allHistory(t, ctx, aliceREST, conv), sent.GetSeq()); m.GetText() != "hello" {
		t.Fatalf("bad requests changed the message: %v", m)
	}

	// The inbox: carol has alice's one live message unread; the edits,
	// deletes and deleted messages are not unread messages.
	inbox, err := carolREST.Inbox(ctx)
	if err != nil || len(inbox) != 1 {
		t.Fatalf("inbox %v %v", inbox, err)
	}
	if inbox[0].GetUnread() != 1 {
		t.Errorf("carol's unread = %d, want 1", inbox[0].GetUnread())
	}
}

// TestEditWindowClosed: with --edit-window 1ms every message is past it:
// its sender can neither edit nor delete it (edit_window_closed, HTTP 403),
// while the group's owner still deletes it.
func TestEditWindowClosed(t *testing.T) {
	p := startServer(t, "", "--edit-window", "1ms")
	ctx := ctxT(t, time.Minute)
	alice := client.NewREST(p.HTTP(), p.token("alice", "rest", time.Hour))
	bob := client.NewREST(p.HTTP(), p.token("bob", "rest", time.Hour))
	conv, err := alice.CreateGroup(ctx, "late", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	sent, err := bob.Send(ctx, conv, "", "too late to fix")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond) // the window is 1ms; let it pass
	_, err = bob.Edit(ctx, conv, sent.GetSeq(), "fixed")
	wantCode(t, "late edit", err, wire.CodeEditWindowClosed)
	_, err = bob.Delete(ctx, conv, sent.GetSeq())
	wantCode(t, "late delete", err, wire.CodeEditWindowClosed)
	del, err := alice.Delete(ctx, conv, sent.GetSeq())
	if err != nil || del.GetTargetSeq() != sent.GetSeq() {
		t.Fatalf("owner delete past the window: %v %v", del, err)
	}
}
