package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/chat/rules"
	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// reactFrame is the WebSocket reaction request (remove: take it back).
func reactFrame(conv string, seq uint64, emoji string, remove bool) *parleyv1.ClientFrame {
	return &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_React{React: &parleyv1.React{ConversationId: conv, Seq: seq, Emoji: emoji, Remove: remove}}}
}

// chips renders reactions as a client shows them: "👍2 ❤️1*", * where the
// reader reacted.
func chips(rs []*parleyv1.Reaction) string {
	var parts []string
	for _, r := range rs {
		s := fmt.Sprintf("%s%d", r.GetEmoji(), r.GetCount())
		if r.GetMe() {
			s += "*"
		}
		if len(r.GetUserIds()) > 0 {
			s += "(users leaked)"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

// isReaction reports a REACTION event at seq with the given counts.
func isReaction(seq uint64, counts string) func(*parleyv1.ServerFrame) bool {
	return func(f *parleyv1.ServerFrame) bool {
		m := f.GetMessage()
		return m.GetSeq() == seq && m.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_REACTION && chips(m.GetReactions()) == counts
	}
}

// TestReactions (issue 13): members react over the JSON and Protobuf
// subprotocols (SDK and raw frames) and REST; every other device of every
// member gets the REACTION event live with the counts; history, sync and
// the inbox show the aggregate with me right for each reader; repeating a
// reaction or removing an absent one sequences nothing; reactions are not
// unread.
func TestReactions(t *testing.T) {
	p := startServer(t, "")
	ctx := ctxT(t, 2*time.Minute)
	aliceREST := client.NewREST(p.HTTP(), p.token("alice", "rest", time.Hour))
	bobREST := client.NewREST(p.HTTP(), p.token("bob", "rest", time.Hour))
	carolREST := client.NewREST(p.HTTP(), p.token("carol", "rest", time.Hour))
	conv, err := aliceREST.CreateGroup(ctx, "lunch", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	alice, laptop := dialSDK(t, p, p.token("alice", "laptop", time.Hour), wire.SubprotocolJSON, nil)
	_, phone := dialSDK(t, p, p.token("alice", "phone", time.Hour), wire.SubprotocolProto, nil)
	bob := openRaw(t, p, p.token("bob", "desk", time.Hour), wire.SubprotocolProto)
	carol := openRaw(t, p, p.token("carol", "desk", time.Hour), wire.SubprotocolJSON)

	sent, err := alice.Send(ctx, conv, "pizza at noon")
	if err != nil {
		t.Fatal(err)
	}
	msg := sent.GetSeq()

	// bob reacts over Protobuf frames: the answer is the event, and alice's
	// two devices (JSON and Protobuf SDK) and carol (raw JSON) get it live.
	f := bob.reply(bob.write(reactFrame(conv, msg, "👍", false)))
	ev := f.GetMessage()
	if ev.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_REACTION || ev.GetTargetSeq() != msg || ev.GetSenderId() != "bob" ||
		ev.GetEmoji() != "👍" || ev.GetReactionRemoved() || chips(ev.GetReactions()) != "👍1" {
		t.Fatalf("bob's reaction answered %v", f)
	}
	for name, dev := range map[string]*sdkEvents{"laptop": laptop, "phone": phone} {
		waitFor(t, 10*time.Second, "alice's "+name+" gets bob's reaction", func() bool { return dev.message(conv, ev.GetSeq()) != nil })
		if m := dev.message(conv, ev.GetSeq()); m.GetEmoji() != "👍" || m.GetSenderId() != "bob" || chips(m.GetReactions()) != "👍1" {
			t.Fatalf("alice's %s got %v", name, m)
		}
	}
	carol.until("carol sees bob's 👍", isReaction(ev.GetSeq(), "👍1"))

	// carol joins in over JSON frames; bob sees the count go to 2.
	f = carol.reply(carol.write(reactFrame(conv, msg, "👍", false)))
	if chips(f.GetMessage().GetReactions()) != "👍2" {
		t.Fatalf("carol's reaction answered %v", f)
	}
	bob.until("bob sees two 👍", isReaction(f.GetMessage().GetSeq(), "👍2"))

	// alice reacts with the SDK; her phone gets it.
	heart, err := alice.React(ctx, conv, msg, "❤️")
	if err != nil || heart.GetSeq() == 0 || chips(heart.GetReactions()) != "👍2 ❤️1" {
		t.Fatalf("alice's reaction: %v %v", heart, err)
	}
	waitFor(t, 10*time.Second, "alice's phone gets her own reaction", func() bool { return phone.message(conv, heart.GetSeq()) != nil })
	bob.until("bob sees alice's ❤️", isReaction(heart.GetSeq(), "👍2 ❤️1"))

	// carol adds and takes back 🎉 over REST; bob sees both.
	party, err := carolREST.React(ctx, conv, msg, "🎉")
	if err != nil || chips(party.GetReactions()) != "👍2 ❤️1 🎉1" {
		t.Fatalf("REST react: %v %v", party, err)
	}
	unparty, err := carolREST.Unreact(ctx, conv, msg, "🎉")
	if err != nil || unparty.GetSeq() != party.GetSeq()+1 || !unparty.GetReactionRemoved() || chips(unparty.GetReactions()) != "👍2 ❤️1" {
		t.Fatalf("REST unreact: %v %v", unparty, err)
	}
	bob.until("bob sees 🎉 go", isReaction(unparty.GetSeq(), "👍2 ❤️1"))

	// Repeats change nothing: no event, the counts as they are.
	head := headSeq(t, ctx, aliceREST, conv)
	if again, err := bobREST.React(ctx, conv, msg, "👍"); err != nil || again.GetSeq() != 0 || chips(again.GetReactions()) != "👍2 ❤️1" {
		t.Fatalf("repeated REST reaction: %v %v, want seq 0 and the counts", again, err)
	}
	if again, err := alice.Unreact(ctx, conv, msg, "🎉"); err != nil || again.GetSeq() != 0 {
		t.Fatalf("removing an absent reaction (SDK): %v %v", again, err)
	}
	if f := bob.reply(bob.write(reactFrame(conv, msg, "👍", false))); f.GetMessage().GetSeq() != 0 || f.GetMessage().GetTargetSeq() != msg {
		t.Fatalf("repeated WebSocket reaction answered %v", f)
	}
	if h := headSeq(t, ctx, aliceREST, conv); h != head {
		t.Fatalf("repeated reactions moved the head from %d to %d", head, h)
	}

	// What each reader sees: the counts, and me where they reacted.
	for _, tc := range []struct {
		name string
		rest *client.REST
		want string
	}{
		{"alice", aliceREST, "👍2 ❤️1*"},
		{"bob", bobREST, "👍2* ❤️1"},
		{"carol", carolREST, "👍2* ❤️1"},
	} {
		hist := allHistory(t, ctx, tc.rest, conv)
		if got := chips(pageAt(t, hist, msg).GetReactions()); got != tc.want {
			t.Errorf("%s's history shows %q, want %q", tc.name, got, tc.want)
		}
		for _, m := range hist {
			if m.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_REACTION && strings.Contains(chips(m.GetReactions()), "*") {
				t.Errorf("%s's history: a REACTION event carries me: %v", tc.name, m)
			}
		}
		inbox, err := tc.rest.Inbox(ctx)
		if err != nil || len(inbox) != 1 {
			t.Fatalf("%s's inbox: %v %v", tc.name, inbox, err)
		}
		last := inbox[0].GetLastMessage()
		if last.GetSeq() != msg || chips(last.GetReactions()) != tc.want {
			t.Errorf("%s's inbox shows %v as the last message, want seq %d with %q", tc.name, last, msg, tc.want)
		}
		if tc.name != "alice" && inbox[0].GetUnread() != 1 {
			t.Errorf("%s's unread = %d, want 1 (reactions are not unread)", tc.name, inbox[0].GetUnread())
		}
	}
	// The same over WebSocket history (JSON) and sync (Protobuf).
	f = carol.reply(carol.write(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_History{History: &parleyv1.History{ConversationId: conv}}}))
	for _, m := range f.GetHistoryResult().GetMessages() {
		if m.GetSeq() == msg && chips(m.GetReactions()) != "👍2* ❤️1" {
			t.Errorf("carol's WebSocket history shows %q", chips(m.GetReactions()))
		}
	}
	f = bob.reply(bob.write(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Sync{Sync: &parleyv1.Sync{
		Cursors: []*parleyv1.Cursor{{ConversationId: conv, Seq: msg - 1}}}}}))
	if cs := f.GetSyncResult().GetConversations(); len(cs) != 1 || chips(cs[0].GetMessages()[0].GetReactions()) != "👍2* ❤️1" {
		t.Errorf("bob's sync shows %v", cs)
	}
}

// TestReactionBadInput: every refused reaction gets its stable code over
// REST and both subprotocols, and nothing stored changes.
func TestReactionBadInput(t *testing.T) {
	p := startServer(t, "")
	ctx := ctxT(t, 2*time.Minute)
	const n = 7 // 7 users × 3 emoji each reach the 20 distinct emoji of a message
	rests := make([]*client.REST, n)
	users := make([]string, n)
	for i := range n {
		users[i] = fmt.Sprintf("u%d", i)
		rests[i] = client.NewREST(p.HTTP(), p.token(users[i], "rest", time.Hour))
	}
	owner := rests[0]
	conv, err := owner.CreateGroup(ctx, "limits", users[1:])
	if err != nil {
		t.Fatal(err)
	}
	dave := client.NewREST(p.HTTP(), p.token("dave", "rest", time.Hour))
	msg, err := owner.Send(ctx, conv, "", "react")
	if err != nil {
		t.Fatal(err)
	}
	gone, err := owner.Send(ctx, conv, "", "to be deleted")
	if err != nil {
		t.Fatal(err)
	}
	del, err := owner.Delete(ctx, conv, gone.GetSeq())
	if err != nil {
		t.Fatal(err)
	}
	// 20 distinct emoji, 3 from each of the first six users, 2 from the last.
	for i := range 20 {
		if _, err := rests[i/3].React(ctx, conv, msg.GetSeq(), fmt.Sprintf("e%02d", i)); err != nil {
			t.Fatalf("reaction %d: %v", i+1, err)
		}
	}
	head := headSeq(t, ctx, owner, conv)
	lastReaction := head
	pbConn := openRaw(t, p, p.token(users[1], "desk", time.Hour), wire.SubprotocolProto)
	jsonConn := openRaw(t, p, p.token(users[6], "desk", time.Hour), wire.SubprotocolJSON)

	long := strings.Repeat("x", rules.MaxEmojiBytes+1)
	for _, tc := range []struct {
		name string
		do   func() error
		code string
	}{
		{"a 4th emoji of one user", func() error { _, err := rests[1].React(ctx, conv, msg.GetSeq(), "e00"); return err }, wire.CodeTooManyReactions},
		{"a 21st distinct emoji", func() error { _, err := rests[6].React(ctx, conv, msg.GetSeq(), "🆕"); return err }, wire.CodeTooManyReactions},
		{"no such seq", func() error { _, err := owner.React(ctx, conv, head+1, "👍"); return err }, wire.CodeNotFound},
		{"a system event", func() error { _, err := owner.React(ctx, conv, 1, "👍"); return err }, wire.CodeInvalid},
		{"a reaction event", func() error { _, err := owner.React(ctx, conv, lastReaction, "👍"); return err }, wire.CodeInvalid},
		{"a delete event", func() error { _, err := owner.React(ctx, conv, del.GetSeq(), "👍"); return err }, wire.CodeInvalid},
		{"a deleted message", func() error { _, err := owner.React(ctx, conv, gone.GetSeq(), "e00"); return err }, wire.CodeNotFound},
		{"empty emoji", func() error { _, err := owner.React(ctx, conv, msg.GetSeq(), ""); return err }, wire.CodeInvalid},
		{"emoji with a space", func() error { _, err := owner.React(ctx, conv, msg.GetSeq(), "👍 👍"); return err }, wire.CodeInvalid},
		{"emoji with a control character", func() error { _, err := owner.React(ctx, conv, msg.GetSeq(), "\x1b[2J"); return err }, wire.CodeInvalid},
		{"emoji over MaxEmojiBytes", func() error { _, err := owner.React(ctx, conv, msg.GetSeq(), long); return err }, wire.CodeTooLarge},
		{"a non-member", func() error { _, err := dave.React(ctx, conv, msg.GetSeq(), "e00"); return err }, wire.CodeNotMember},
		{"a non-member removes", func() error { _, err := dave.Unreact(ctx, conv, msg.GetSeq(), "e00"); return err }, wire.CodeNotMember},
		{"an unknown group", func() error { _, err := owner.React(ctx, "g:12345", 1, "👍"); return err }, wire.CodeNotFound},
	} {
		wantCode(t, tc.name, tc.do(), tc.code)
	}
	pbConn.wantError(pbConn.write(reactFrame(conv, msg.GetSeq(), "e19", false)), false, wire.CodeTooManyReactions)
	pbConn.wantError(pbConn.write(reactFrame(conv, msg.GetSeq(), "", false)), false, wire.CodeInvalid)
	pbConn.wantError(pbConn.write(reactFrame(conv, 0, "👍", false)), false, wire.CodeInvalid)
	jsonConn.wantError(jsonConn.write(reactFrame(conv, msg.GetSeq(), "🆕", false)), false, wire.CodeTooManyReactions)
	jsonConn.wantError(jsonConn.write(reactFrame(conv, head+5, "👍", false)), false, wire.CodeNotFound)
	jsonConn.wantError(jsonConn.write(reactFrame(conv, msg.GetSeq(), long, false)), false, wire.CodeTooLarge)

	// REST: the status of too_many_reactions, a bad seq, a strict body.
	tok := p.token(users[1], "rest", time.Hour)
	url := fmt.Sprintf("%s/v1/messages/%s/%d/reactions", p.HTTP(), conv, msg.GetSeq())
	for _, tc := range []struct {
		method, url, body string
		status            int
		code              string
	}{
		{http.MethodPost, url, `{"emoji":"e19"}`, http.StatusConflict, wire.CodeTooManyReactions},
		{http.MethodPost, p.HTTP() + "/v1/messages/" + conv + "/abc/reactions", `{"emoji":"👍"}`, http.StatusBadRequest, wire.CodeInvalid},
		{http.MethodPost, url, `{"emoji":"👍","extra":1}`, http.StatusBadRequest, wire.CodeInvalid},
		{http.MethodDelete, url, ``, http.StatusBadRequest, wire.CodeInvalid},
		{http.MethodPut, url, `{"emoji":"👍"}`, http.StatusMethodNotAllowed, wire.CodeMethodNotAllowed},
	} {
		var body []byte
		if tc.body != "" {
			body = []byte(tc.body)
		}
		status, b := restCall(t, tc.method, tc.url, tok, body)
		if code, _ := errorBody(b); status != tc.status || code != tc.code {
			t.Errorf("%s %s %s = %d %s, want %d %s", tc.method, tc.url, tc.body, status, b, tc.status, tc.code)
		}
	}

	if h := headSeq(t, ctx, owner, conv); h != head {
		t.Fatalf("refused reactions moved the head from %d to %d", head, h)
	}
	hist := allHistory(t, ctx, rests[1], conv)
	if got := pageAt(t, hist, msg.GetSeq()).GetReactions(); len(got) != 20 {
		t.Fatalf("the message has %d distinct reactions after refusals, want 20: %s", len(got), chips(got))
	}
	if m := pageAt(t, hist, gone.GetSeq()); len(m.GetReactions()) != 0 {
		t.Errorf("the deleted message has reactions: %v", m)
	}
	// Taking one back makes room for another user's new emoji.
	if _, err := rests[0].Unreact(ctx, conv, msg.GetSeq(), "e00"); err != nil {
		t.Fatal(err)
	}
	if ev, err := rests[6].React(ctx, conv, msg.GetSeq(), "🆕"); err != nil || len(ev.GetReactions()) != 20 {
		t.Fatalf("a new emoji after one left: %v %v", ev, err)
	}
}
