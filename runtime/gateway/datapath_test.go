package gateway

import (
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

func sendFrame(conv, clientMsgID, text string) *parleyv1.ClientFrame {
	return &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Send{Send: &parleyv1.Send{
		ConversationId: conv, ClientMsgId: clientMsgID, Content: &parleyv1.Send_Text{Text: text}}}}
}

func isMessage(f *parleyv1.ServerFrame) bool { return f.GetMessage() != nil }

func TestSendDeliversToMembers(t *testing.T) {
	h := newHarness(t)
	conv := h.createDM("alice", "bob")
	phone := h.dial("alice", "phone", wire.SubprotocolProto)
	laptop := h.dial("alice", "laptop", wire.SubprotocolJSON)
	bob := h.dial("bob", "phone", wire.SubprotocolJSON)

	id := phone.sendFrame(sendFrame(conv, "m1", "hello"))
	ok := phone.reply(id).GetSendOk()
	if ok == nil || ok.GetConversationId() != conv || ok.GetSeq() != 2 || ok.GetMessageId() == 0 {
		t.Fatalf("send_ok %v", ok)
	}
	for _, c := range []*wsClient{bob, laptop} {
		m := c.nextMatching("message", isMessage).GetMessage()
		if m.GetSeq() != 2 || m.GetText() != "hello" || m.GetSenderId() != "alice" || m.GetClientMsgId() != "m1" {
			t.Fatalf("message %v", m)
		}
	}
	// A retry with the same client_msg_id is answered with the first outcome.
	id = phone.sendFrame(sendFrame(conv, "m1", "hello"))
	if again := phone.reply(id).GetSendOk(); again.GetSeq() != ok.GetSeq() || again.GetMessageId() != ok.GetMessageId() {
		t.Fatalf("retry send_ok %v, want %v", again, ok)
	}
	// The sending session got send_ok, not its own message.
	for _, f := range phone.roundTrip() {
		if isMessage(f) {
			t.Fatalf("sender's session got its own message %v", f)
		}
	}
	eventually(t, "messages delivered counted", func() bool { return counter(h.m.MessagesDelivered) >= 2 })
	var hist dto.Metric
	if err := h.m.SendToDeliver.Write(&hist); err != nil || hist.GetHistogram().GetSampleCount() == 0 {
		t.Fatalf("send-to-deliver not observed: %v %v", err, hist.GetHistogram())
	}
}

func TestSendRejected(t *testing.T) {
	h := newHarness(t, func(o *harnessOpts) { o.cfg.MaxMessageBytes = 10 })
	conv := h.createDM("alice", "bob")
	c := h.dial("alice", "d", wire.SubprotocolJSON)
	tests := []struct {
		name     string
		send     *parleyv1.Send
		code     string
		contains string
	}{
		{"no conversation", &parleyv1.Send{ClientMsgId: "a", Content: &parleyv1.Send_Text{Text: "x"}}, wire.CodeInvalid, "conversation_id"},
		{"bad conversation", &parleyv1.Send{ConversationId: "room1", ClientMsgId: "a", Content: &parleyv1.Send_Text{Text: "x"}}, wire.CodeInvalid, "conversation_id"},
		{"no client_msg_id", &parleyv1.Send{ConversationId: conv, Content: &parleyv1.Send_Text{Text: "x"}}, wire.CodeInvalid, "client_msg_id"},
		{"long client_msg_id", &parleyv1.Send{ConversationId: conv, ClientMsgId: strings.Repeat("a", 65), Content: &parleyv1.Send_Text{Text: "x"}}, wire.CodeInvalid, "client_msg_id"},
		{"no content", &parleyv1.Send{ConversationId: conv, ClientMsgId: "a"}, wire.CodeInvalid, "text or media"},
		{"empty text", &parleyv1.Send{ConversationId: conv, ClientMsgId: "a", Content: &parleyv1.Send_Text{Text: ""}}, wire.CodeInvalid, "empty"},
		{"text too large", &parleyv1.Send{ConversationId: conv, ClientMsgId: "a", Content: &parleyv1.Send_Text{Text: "12345678901"}}, wire.CodeTooLarge, "11 bytes"},
		{"media without url", &parleyv1.Send{ConversationId: conv, ClientMsgId: "a", Content: &parleyv1.Send_Media{Media: &parleyv1.Media{Mime: "image/png"}}}, wire.CodeInvalid, "media.url"},
		{"not a member", &parleyv1.Send{ConversationId: "dm:carol:dave", ClientMsgId: "a", Content: &parleyv1.Send_Text{Text: "x"}}, wire.CodeNotMember, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := c.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Send{Send: tc.send}})
			e := c.reply(id).GetError()
			if e.GetCode() != tc.code || !strings.Contains(e.GetMessage(), tc.contains) {
				t.Fatalf("error %v, want %s mentioning %q", e, tc.code, tc.contains)
			}
		})
	}
	c.roundTrip() // the connection is still open
}

func TestSendRateLimited(t *testing.T) {
	h := newHarness(t, func(o *harnessOpts) { o.cfg.SendRate, o.cfg.SendBurst = 0.5, 2 })
	conv := h.createDM("alice", "bob")
	c := h.dial("alice", "d", wire.SubprotocolProto)
	var limited *parleyv1.Error
	for i := range 3 {
		id := c.sendFrame(sendFrame(conv, string(rune('a'+i)), "hi"))
		if e := c.reply(id).GetError(); e != nil {
			limited = e
		}
	}
	if limited.GetCode() != wire.CodeRateLimited || limited.GetRetryAfterMs() == 0 {
		t.Fatalf("third send: %v, want rate_limited with retry_after_ms", limited)
	}
	if got := counter(h.m.Errors.WithLabelValues(wire.CodeRateLimited)); got != 1 {
		t.Fatalf("rate_limited counted %v", got)
	}
}

func TestReceipts(t *testing.T) {
	h := newHarness(t)
	conv := h.createDM("alice", "bob")
	alice := h.dial("alice", "d", wire.SubprotocolProto)
	bob := h.dial("bob", "d", wire.SubprotocolJSON)
	alice.reply(alice.sendFrame(sendFrame(conv, "m1", "hello")))

	bob.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Read{Read: &parleyv1.Read{ConversationId: conv, Seq: 2}}})
	r := alice.nextMatching("receipt", func(f *parleyv1.ServerFrame) bool { return f.GetReceipt() != nil }).GetReceipt()
	if r.GetUserId() != "bob" || r.GetSeq() != 2 || r.GetKind() != parleyv1.ReceiptKind_RECEIPT_KIND_READ {
		t.Fatalf("receipt %v", r)
	}
	id := bob.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Ack{Ack: &parleyv1.Ack{ConversationId: conv}}})
	if e := bob.reply(id).GetError(); e.GetCode() != wire.CodeInvalid || !strings.Contains(e.GetMessage(), "seq") {
		t.Fatalf("ack without seq: %v", e)
	}
}

func TestSyncAndHistory(t *testing.T) {
	h := newHarness(t)
	conv := h.createDM("alice", "bob")
	alice := h.dial("alice", "d", wire.SubprotocolProto)
	alice.reply(alice.sendFrame(sendFrame(conv, "m1", "one")))
	alice.reply(alice.sendFrame(sendFrame(conv, "m2", "two")))

	bob := h.dial("bob", "d", wire.SubprotocolJSON)
	id := bob.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Sync{Sync: &parleyv1.Sync{
		Cursors: []*parleyv1.Cursor{{ConversationId: conv, Seq: 2}}}}})
	res := bob.reply(id).GetSyncResult()
	if len(res.GetConversations()) != 1 {
		t.Fatalf("sync result %v", res)
	}
	cs := res.GetConversations()[0]
	if cs.GetHeadSeq() != 3 || len(cs.GetMessages()) != 1 || cs.GetMessages()[0].GetText() != "two" {
		t.Fatalf("conversation state %v", cs)
	}
	id = bob.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Sync{Sync: &parleyv1.Sync{}}})
	if inbox := bob.reply(id).GetSyncResult().GetConversations(); len(inbox) != 1 || inbox[0].GetConversationId() != conv {
		t.Fatalf("inbox heads %v", inbox)
	}

	id = bob.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_History{History: &parleyv1.History{ConversationId: conv, Before: proto.Uint64(4), Limit: 2}}})
	hist := bob.reply(id).GetHistoryResult()
	if len(hist.GetMessages()) != 2 || hist.GetMessages()[0].GetText() != "two" || !hist.GetHasMore() {
		t.Fatalf("history %v", hist)
	}
	carol := h.dial("carol", "d", wire.SubprotocolProto)
	id = carol.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_History{History: &parleyv1.History{ConversationId: conv}}})
	if e := carol.reply(id).GetError(); e.GetCode() != wire.CodeNotMember {
		t.Fatalf("history of a non-member: %v", e)
	}
	id = carol.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_History{History: &parleyv1.History{ConversationId: conv, Limit: 201}}})
	if e := carol.reply(id).GetError(); e.GetCode() != wire.CodeInvalid {
		t.Fatalf("history over the page limit: %v", e)
	}
}

func TestTyping(t *testing.T) {
	h := newHarness(t)
	conv := h.createDM("alice", "bob")
	alice := h.dial("alice", "phone", wire.SubprotocolProto)
	bob := h.dial("bob", "phone", wire.SubprotocolJSON)
	alice.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Typing{Typing: &parleyv1.Typing{ConversationId: conv, UserId: "mallory"}}})
	ty := bob.nextMatching("typing", func(f *parleyv1.ServerFrame) bool { return f.GetTyping() != nil }).GetTyping()
	if ty.GetConversationId() != conv || ty.GetUserId() != "alice" {
		t.Fatalf("typing %v, want from alice (the token's user)", ty)
	}
	// A second session of alice typing within the interval adds nothing:
	// one fan-out per user and conversation (issue 14).
	bob.roundTrip()
	laptop := h.dial("alice", "laptop", wire.SubprotocolJSON)
	laptop.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Typing{Typing: &parleyv1.Typing{ConversationId: conv}}})
	laptop.roundTrip()
	time.Sleep(200 * time.Millisecond) // a fan-out would be on its way by now
	for _, f := range bob.roundTrip() {
		if f.GetTyping() != nil {
			t.Fatalf("bob got a second typing frame from alice's other session within the interval: %v", f)
		}
	}
	carol := h.dial("carol", "d", wire.SubprotocolProto)
	id := carol.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Typing{Typing: &parleyv1.Typing{ConversationId: conv}}})
	if e := carol.reply(id).GetError(); e.GetCode() != wire.CodeNotMember {
		t.Fatalf("typing of a non-member: %v", e)
	}
}

// TestTypingFromBlockedUser (issue 13 item 6): while alice blocks bob, his
// typing in their DM reaches none of her devices; carol's typing, sent
// after bob's was handled, is the next thing alice sees; after the unblock
// bob's typing arrives again.
func TestTypingFromBlockedUser(t *testing.T) {
	h := newHarness(t)
	dm := h.createDM("alice", "bob")
	other := h.createDM("alice", "carol")
	alice := h.dial("alice", "phone", wire.SubprotocolProto)
	bob := h.dial("bob", "phone", wire.SubprotocolJSON)
	carol := h.dial("carol", "phone", wire.SubprotocolProto)
	typing := func(conv string) *parleyv1.ClientFrame {
		return &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Typing{Typing: &parleyv1.Typing{ConversationId: conv}}}
	}
	block := func(remove bool) {
		t.Helper()
		id := alice.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Block{Block: &parleyv1.Block{UserId: "bob", Remove: remove}}})
		if f := alice.reply(id); f.GetBlock().GetUserId() != "bob" {
			t.Fatalf("alice's block (remove %v) answered %v", remove, f)
		}
	}

	block(false)
	bob.sendFrame(typing(dm))
	bob.roundTrip() // his typing is handled: fanned out or dropped
	carol.sendFrame(typing(other))
	ty := alice.nextMatching("typing", func(f *parleyv1.ServerFrame) bool { return f.GetTyping() != nil }).GetTyping()
	if ty.GetUserId() != "carol" {
		t.Fatalf("alice, who blocks bob, got typing %v before carol's", ty)
	}

	// The unblock: bob types until the once-a-second gate lets it through.
	block(true)
	deadline := time.Now().Add(waitFor)
	for {
		if time.Now().After(deadline) {
			t.Fatal("bob's typing did not reach alice after the unblock")
		}
		bob.sendFrame(typing(dm))
		if f, ok := alice.tryNext(50 * time.Millisecond); ok && f.GetTyping().GetUserId() == "bob" {
			break
		}
	}
}

func TestPresence(t *testing.T) {
	h := newHarness(t, func(o *harnessOpts) { o.cfg.MaxPresenceSubs = 2 })
	// Alice shares a DM with bob, nothing with carol (issue 13: presence
	// is visible only to users who share a conversation).
	h.createDM("alice", "bob")
	bob := h.dial("bob", "d", wire.SubprotocolJSON)
	h.dial("carol", "d", wire.SubprotocolJSON)
	alice := h.dial("alice", "d", wire.SubprotocolProto)

	id := alice.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_PresenceSub{PresenceSub: &parleyv1.PresenceSub{UserIds: []string{"a", "b", "c"}}}})
	if e := alice.reply(id).GetError(); e.GetCode() != wire.CodeInvalid || !strings.Contains(e.GetMessage(), "limit of 2") {
		t.Fatalf("over the cap: %v", e)
	}
	id = alice.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_PresenceSub{PresenceSub: &parleyv1.PresenceSub{UserIds: []string{"bob", "carol", "bob"}}}})
	got := map[string]parleyv1.PresenceStatus{}
	for range 2 {
		p := alice.reply(id).GetPresence()
		got[p.GetUserId()] = p.GetStatus()
	}
	// Carol is online too, but shares no conversation with alice: unknown.
	if got["bob"] != parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE || got["carol"] != parleyv1.PresenceStatus_PRESENCE_STATUS_UNKNOWN {
		t.Fatalf("presence replies %v, want bob online and carol unknown", got)
	}
	// A subscribed user's change is pushed.
	bob.closeNormal()
	p := alice.nextMatching("presence push", func(f *parleyv1.ServerFrame) bool {
		return f.GetId() == 0 && f.GetPresence().GetUserId() == "bob"
	}).GetPresence()
	if p.GetStatus() != parleyv1.PresenceStatus_PRESENCE_STATUS_OFFLINE {
		t.Fatalf("bob's presence %v, want offline", p)
	}

	// DM peers get changes without subscribing.
	h.createDM("dave", "erin")
	erin := h.dial("erin", "d", wire.SubprotocolJSON)
	h.dial("dave", "d", wire.SubprotocolProto)
	p = erin.nextMatching("presence push", func(f *parleyv1.ServerFrame) bool { return f.GetPresence() != nil }).GetPresence()
	if p.GetUserId() != "dave" || p.GetStatus() != parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE {
		t.Fatalf("erin got %v, want dave online", p)
	}
	// A subscriber that is also a DM peer gets each change once.
	id = erin.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_PresenceSub{PresenceSub: &parleyv1.PresenceSub{UserIds: []string{"dave"}}}})
	erin.reply(id)
	h.g.PresenceChanged(&parleyv1.Presence{UserId: "dave", Status: parleyv1.PresenceStatus_PRESENCE_STATUS_OFFLINE})
	n := 0
	for _, f := range erin.roundTrip() {
		if f.GetPresence().GetUserId() == "dave" && f.GetPresence().GetStatus() == parleyv1.PresenceStatus_PRESENCE_STATUS_OFFLINE {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("erin got dave's change %d times, want once", n)
	}
}
