package chat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

func TestConcurrentSendsGetDenseSeqs(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	users := []string{"alice", "bob", "carol", "dave"}
	conv := e.createGroup(t, "alice", "team", users[1:]...)

	const perUser = 30
	var mu sync.Mutex
	seqs := make(map[uint64]string)
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perUser {
				cmid := fmt.Sprintf("%s-%d", u, i)
				rep, err := e.send(u, conv, cmid, "hello "+cmid)
				if err != nil {
					t.Errorf("send %s: %v", cmid, err)
					return
				}
				mu.Lock()
				if other, dup := seqs[rep.GetSendOk().GetSeq()]; dup {
					t.Errorf("seq %d given to %s and %s", rep.GetSendOk().GetSeq(), other, cmid)
				}
				seqs[rep.GetSendOk().GetSeq()] = cmid
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	log := e.log(t, conv)
	if want := 1 + len(users)*perUser; len(log) != want {
		t.Fatalf("log has %d entries, want %d", len(log), want)
	}
	for _, m := range log[1:] {
		if seqs[m.GetSeq()] != m.GetClientMsgId() {
			t.Fatalf("seq %d stored %q but send_ok'd %q", m.GetSeq(), m.GetClientMsgId(), seqs[m.GetSeq()])
		}
	}
}

func TestRetryIsIdempotent(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	e.online(t, "bob", 0)
	dm := rules.DMID("alice", "bob")
	first := e.mustSend(t, "alice", dm, "m1", "hi")
	again := e.mustSend(t, "alice", dm, "m1", "hi (retry)")
	if !proto.Equal(first, again) {
		t.Fatalf("retry got %v, first %v", again, first)
	}
	// Concurrent retries land in one batch or in several: one copy either way.
	var wg sync.WaitGroup
	res := make([]*parleyv1.SendOk, 8)
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := e.send("alice", dm, "m2", "again")
			if err != nil {
				t.Error(err)
				return
			}
			res[i] = rep.GetSendOk()
		}()
	}
	wg.Wait()
	for _, r := range res[1:] {
		if !proto.Equal(r, res[0]) {
			t.Fatalf("concurrent retries got %v and %v", r, res[0])
		}
	}
	log := e.log(t, dm)
	if len(log) != 3 { // created, m1, m2
		t.Fatalf("log has %d entries, want 3: %v", len(log), log)
	}
	if log[1].GetText() != "hi" {
		t.Fatalf("stored %q: a retry must not replace the first copy", log[1].GetText())
	}
	// The retry re-publishes the stored message (its first push may be lost).
	waitFor(t, "bob gets m1 twice", func() bool { return len(e.pushes(0, "bob", isMessage(first.GetSeq()))) >= 2 })
}

func TestDMAutoCreate(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	e.online(t, "bob", 1)
	dm := rules.DMID("bob", "alice")
	ok := e.mustSend(t, "alice", dm, "c1", "hello bob")
	if ok.GetSeq() != 2 {
		t.Fatalf("first message seq %d, want 2 (1 is the creation event)", ok.GetSeq())
	}
	log := e.log(t, dm)
	if log[0].GetKind() != parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED || strings.Join(log[0].GetMembers(), ",") != "alice,bob" {
		t.Fatalf("seq 1 = %v, want the creation event with both users", log[0])
	}
	c, err := e.st.Conversation(e.ctx, dm)
	if err != nil || c.Kind != store.KindDM {
		t.Fatalf("conversation %v, %v", c, err)
	}
	for _, u := range []string{"alice", "bob"} {
		if _, err := e.q.CheckMember(e.ctx, u, dm); err != nil {
			t.Fatalf("%s: %v", u, err)
		}
	}
	waitFor(t, "bob's gateway pushes the message", func() bool { return len(e.pushes(1, "bob", isMessage(2))) == 1 })
	// Bob answers in the existing DM.
	if ok := e.mustSend(t, "bob", dm, "c1", "hi alice"); ok.GetSeq() != 3 {
		t.Fatalf("reply seq %d, want 3", ok.GetSeq())
	}
	peers, err := e.q.DMPeers(e.ctx, "alice")
	if err != nil || len(peers) != 1 || peers[0] != "bob" {
		t.Fatalf("DMPeers = %v, %v", peers, err)
	}

	for _, tc := range []struct {
		name, user, conv, code string
	}{
		{"stranger", "mallory", dm, wire.CodeNotMember},
		{"stranger in new dm", "mallory", rules.DMID("alice", "carol"), wire.CodeNotMember},
		{"dm with oneself", "alice", "dm:alice:alice", wire.CodeInvalid},
		{"unordered dm id", "bob", "dm:bob:alice", wire.CodeInvalid},
		{"invalid peer", "alice", "dm:alice:b c", wire.CodeInvalid},
		{"unknown group", "alice", "g:123", wire.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.send(tc.user, tc.conv, "x", "hi")
			if code(err) != tc.code {
				t.Fatalf("got %v, want %s", err, tc.code)
			}
		})
	}
}

func TestSendValidation(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	dm := rules.DMID("alice", "bob")
	e.mustSend(t, "alice", dm, "first", "hi")
	rec := func(cmid string, content any) *parleyv1.IngressRecord {
		s := &parleyv1.Send{ConversationId: dm, ClientMsgId: cmid}
		switch c := content.(type) {
		case string:
			s.Content = &parleyv1.Send_Text{Text: c}
		case *parleyv1.Media:
			s.Content = &parleyv1.Send_Media{Media: c}
		}
		return &parleyv1.IngressRecord{Origin: origin("alice"), ConversationId: dm, Op: &parleyv1.IngressRecord_Send{Send: s}}
	}
	for _, tc := range []struct {
		name string
		rec  *parleyv1.IngressRecord
		code string
	}{
		{"ok at the limit", rec("a", strings.Repeat("é", 2048)), ""},
		{"too large", rec("b", strings.Repeat("x", 4097)), wire.CodeTooLarge},
		{"empty text", rec("c", ""), wire.CodeInvalid},
		{"no content", rec("d", nil), wire.CodeInvalid},
		{"invalid utf-8", rec("e", "a\xffb"), wire.CodeInvalid},
		{"empty client_msg_id", rec("", "x"), wire.CodeInvalid},
		{"long client_msg_id", rec(strings.Repeat("k", 65), "x"), wire.CodeInvalid},
		{"media", rec("f", &parleyv1.Media{Url: "https://m/1", Mime: "image/png", Size: 10}), ""},
		{"media without size", rec("g", &parleyv1.Media{Url: "https://m/1", Mime: "image/png"}), wire.CodeInvalid},
		{"media without url", rec("h", &parleyv1.Media{Mime: "image/png", Size: 1}), wire.CodeInvalid},
		{"no conversation", sendRec("alice", "", "j", "x"), wire.CodeInvalid},
		{"malformed conversation", sendRec("alice", "team-chat", "k", "x"), wire.CodeInvalid},
		{"mismatched conversation", &parleyv1.IngressRecord{Origin: origin("alice"), ConversationId: dm, Op: sendRec("alice", "g:1", "l", "x").Op}, wire.CodeInvalid},
		{"no origin user", &parleyv1.IngressRecord{Origin: &parleyv1.Origin{}, ConversationId: dm, Op: rec("i", "x").Op}, wire.CodeInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.call(tc.rec)
			if code(err) != tc.code {
				t.Fatalf("got %v, want %q", err, tc.code)
			}
		})
	}
	head, _ := e.st.Head(e.ctx, dm)
	if head != 4 { // created, first, "ok at the limit", media
		t.Fatalf("head %d, want 4", head)
	}
}

func TestGroupMembership(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		e.online(t, u, 0)
	}
	conv := e.createGroup(t, "alice", "crew", "bob", "bob", "alice")
	if !rules.IsGroup(conv) {
		t.Fatalf("group id %q", conv)
	}
	ms, _ := e.st.Members(e.ctx, conv)
	if len(ms) != 2 {
		t.Fatalf("members %v, want alice and bob", ms)
	}
	if m, _ := e.q.CheckMember(e.ctx, "alice", conv); m.Role != store.RoleOwner {
		t.Fatalf("creator role %q", m.Role)
	}

	// bob (a member, not an admin) may not add; carol (not a member) may
	// not; alice (the owner) may.
	if _, err := e.call(addRec("bob", conv, "carol")); code(err) != wire.CodeForbidden {
		t.Fatalf("a plain member adds: %v, want forbidden", err)
	}
	rep, err := e.call(addRec("alice", conv, "carol", "bob"))
	if err != nil || rep.GetEvent().GetKind() != parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED ||
		strings.Join(rep.GetEvent().GetMembers(), ",") != "carol" {
		t.Fatalf("add carol: %v %v", rep, err)
	}
	addSeq := rep.GetEvent().GetSeq()
	waitFor(t, "alice learns carol joined", func() bool { return len(e.pushes(0, "alice", isMessage(addSeq))) == 1 })
	waitFor(t, "carol learns she joined", func() bool { return len(e.pushes(0, "carol", isMessage(addSeq))) == 1 })
	if _, err := e.call(addRec("dave", conv, "dave")); code(err) != wire.CodeNotMember {
		t.Fatalf("non-member add: %v", err)
	}
	// Adding existing members is a no-op with an empty reply.
	if rep, err := e.call(addRec("alice", conv, "bob")); err != nil || rep.GetEvent() != nil {
		t.Fatalf("re-add: %v %v", rep, err)
	}
	if _, err := e.call(addRec("alice", conv, "no good")); code(err) != wire.CodeInvalid {
		t.Fatalf("invalid id: %v", err)
	}

	// Only the owner removes others; anyone may leave.
	if _, err := e.call(removeRec("bob", conv, "carol")); code(err) != wire.CodeForbidden {
		t.Fatalf("a plain member removes: %v", err)
	}
	rep, err = e.call(removeRec("alice", conv, "carol"))
	if err != nil || rep.GetEvent().GetKind() != parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED {
		t.Fatalf("owner removes carol: %v %v", rep, err)
	}
	rmSeq := rep.GetEvent().GetSeq()
	waitFor(t, "carol learns she was removed", func() bool { return len(e.pushes(0, "carol", isMessage(rmSeq))) == 1 })
	after := e.mustSend(t, "alice", conv, "after-removal", "carol can't see this")
	if _, err := e.send("carol", conv, "x", "let me in"); code(err) != wire.CodeNotMember {
		t.Fatalf("removed member sends: %v", err)
	}
	if _, err := e.call(removeRec("bob", conv, "bob")); err != nil {
		t.Fatalf("bob leaves: %v", err)
	}
	last := e.mustSend(t, "alice", conv, "last", "only me")
	waitFor(t, "alice gets her last message on her other devices", func() bool {
		return len(e.pushes(0, "alice", isMessage(last.GetSeq()))) == 1
	})
	if n := len(e.pushes(0, "carol", isMessage(after.GetSeq()))); n != 0 {
		t.Fatalf("removed carol got %d pushes of a later message", n)
	}
	if n := len(e.pushes(0, "bob", isMessage(last.GetSeq()))); n != 0 {
		t.Fatalf("bob got a message after leaving")
	}
	// The sender's own session is skipped; its other devices are not.
	for _, d := range e.pushes(0, "alice", isMessage(last.GetSeq())) {
		if d.GetExceptSessionId() != "sess-alice" {
			t.Fatalf("except_session_id %q", d.GetExceptSessionId())
		}
	}

	dm := rules.DMID("alice", "bob")
	e.mustSend(t, "alice", dm, "d", "hi")
	if _, err := e.call(addRec("alice", dm, "carol")); code(err) != wire.CodeInvalid {
		t.Fatalf("add to dm: %v", err)
	}
}

func TestGroupFull(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	var others []string
	for i := range DefaultMaxGroupMembers { // 500 others + creator = 501
		others = append(others, fmt.Sprintf("u%03d", i))
	}
	_, err := e.call(&parleyv1.IngressRecord{Origin: origin("owner"), Op: &parleyv1.IngressRecord_CreateGroup{
		CreateGroup: &parleyv1.CreateGroup{Members: others}}})
	if code(err) != wire.CodeGroupFull {
		t.Fatalf("501 members at creation: %v", err)
	}
	conv := e.createGroup(t, "owner", "big", others[:DefaultMaxGroupMembers-2]...) // 499 members
	if _, err := e.call(addRec("owner", conv, "x1", "x2")); code(err) != wire.CodeGroupFull {
		t.Fatalf("adding two to 499: %v", err)
	}
	ms, _ := e.st.Members(e.ctx, conv)
	if len(ms) != 499 {
		t.Fatalf("members %d after a refused add, want 499", len(ms))
	}

	// Two concurrent adds race for the last place: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.call(addRec("owner", conv, fmt.Sprintf("late%d", i)))
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch code(err) {
		case "":
			won++
		case wire.CodeGroupFull:
		default:
			t.Fatalf("unexpected: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d adds won the last place: %v", won, errs)
	}
	ms, _ = e.st.Members(e.ctx, conv)
	if len(ms) != 500 {
		t.Fatalf("members %d, want 500", len(ms))
	}
}

func TestJoinedSeqHidesEarlierHistory(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	conv := e.createGroup(t, "alice", "g", "bob")
	for i := range 3 {
		e.mustSend(t, "alice", conv, fmt.Sprint(i), "before carol")
	}
	rep, err := e.call(addRec("alice", conv, "carol"))
	if err != nil {
		t.Fatal(err)
	}
	joined := rep.GetEvent().GetSeq() // 5
	e.mustSend(t, "bob", conv, "b", "welcome carol")

	h, err := e.q.History(e.ctx, "carol", &parleyv1.History{ConversationId: conv})
	if err != nil {
		t.Fatal(err)
	}
	if len(h.GetMessages()) != 2 || h.GetMessages()[1].GetSeq() != joined || h.GetHasMore() {
		t.Fatalf("carol's history %v", h.GetMessages())
	}
	h, _ = e.q.History(e.ctx, "bob", &parleyv1.History{ConversationId: conv})
	if len(h.GetMessages()) != 6 {
		t.Fatalf("bob sees %d messages, want 6", len(h.GetMessages()))
	}
	sr, err := e.q.Sync(e.ctx, "carol", &parleyv1.Sync{Cursors: []*parleyv1.Cursor{{ConversationId: conv}}})
	if err != nil {
		t.Fatal(err)
	}
	cs := sr.GetConversations()[0]
	// Unread: bob's welcome; the event that added carol is not a message.
	if cs.GetJoinedSeq() != joined || len(cs.GetMessages()) != 2 || cs.GetMessages()[0].GetSeq() != joined || cs.GetUnread() != 1 {
		t.Fatalf("carol's sync %v", cs)
	}
}

func TestReceipts(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	for _, u := range []string{"alice", "bob", "carol"} {
		e.online(t, u, 0)
	}
	dm := rules.DMID("alice", "bob")
	for i := range 5 {
		e.mustSend(t, "alice", dm, fmt.Sprint(i), "m")
	}
	// Forward only: 5, then 3, then 99 (clamped to the head 6).
	for _, seq := range []uint64{5, 3} {
		if _, err := e.call(readRec("bob", dm, seq)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "bob's read pointer stored", func() bool {
		r, _ := e.st.Receipt(e.ctx, dm, "bob")
		return r.ReadSeq == 5 && r.DeliveredSeq == 5
	})
	if _, err := e.call(ackRec("bob", dm, 99)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's delivered pointer clamped to the head", func() bool {
		r, _ := e.st.Receipt(e.ctx, dm, "bob")
		return r.ReadSeq == 5 && r.DeliveredSeq == 6
	})
	// DM: the peer gets bob's receipts — once per move, none for the backwards read.
	reads := e.pushes(0, "alice", isReceipt(parleyv1.ReceiptKind_RECEIPT_KIND_READ))
	if len(reads) != 1 || reads[0].GetReceipt().GetSeq() != 5 || reads[0].GetReceipt().GetUserId() != "bob" {
		t.Fatalf("alice got read receipts %v", reads)
	}
	if _, err := e.call(readRec("carol", dm, 1)); code(err) != wire.CodeNotMember {
		t.Fatalf("non-member read: %v", err)
	}
	if _, err := e.call(readRec("carol", "g:1", 1)); code(err) != wire.CodeNotFound {
		t.Fatalf("read in unknown conversation: %v", err)
	}

	// Group: a member's receipts go to its own devices only; one
	// READ_BY_ALL reaches the sender once everyone has read.
	g := e.createGroup(t, "alice", "g", "bob", "carol")
	ok := e.mustSend(t, "alice", g, "hello", "read me")
	if _, err := e.call(readRec("bob", g, ok.GetSeq())); err != nil {
		t.Fatal(err)
	}
	if n := len(e.pushes(0, "bob", func(d *parleyv1.Delivery) bool {
		return d.GetReceipt().GetConversationId() == g && d.GetReceipt().GetUserId() == "bob"
	})); n != 1 {
		t.Fatalf("bob's devices got %d receipts of his read", n)
	}
	if _, err := e.call(readRec("carol", g, ok.GetSeq())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice gets read-by-all", func() bool {
		return len(e.pushes(0, "alice", func(d *parleyv1.Delivery) bool {
			r := d.GetReceipt()
			return r.GetConversationId() == g && r.GetKind() == parleyv1.ReceiptKind_RECEIPT_KIND_READ_BY_ALL && r.GetSeq() == ok.GetSeq()
		})) == 1
	})
	for _, d := range e.pushes(0, "alice", func(d *parleyv1.Delivery) bool { return d.GetReceipt().GetConversationId() == g }) {
		if r := d.GetReceipt(); r.GetKind() == parleyv1.ReceiptKind_RECEIPT_KIND_READ {
			t.Fatalf("alice got a group member's read receipt %v", r)
		}
	}
	// The read-by-all was pushed only once bob and carol had both read.
	waitFor(t, "receipts stored", func() bool {
		rs, _ := e.q.ReadBy(e.ctx, "alice", g, ok.GetSeq())
		return len(rs) == 3 // alice (sending reads), bob, carol
	})
	if _, err := e.q.ReadBy(e.ctx, "dave", g, 1); code(err) != wire.CodeNotMember {
		t.Fatalf("ReadBy by a non-member: %v", err)
	}
}

func TestReadByAllNotBeforeEveryoneRead(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	e.online(t, "alice", 0)
	g := e.createGroup(t, "alice", "g", "bob", "carol")
	ok := e.mustSend(t, "alice", g, "m", "x")
	if _, err := e.call(readRec("bob", g, ok.GetSeq())); err != nil {
		t.Fatal(err)
	}
	// A later message through the same queue orders after bob's read.
	e.mustSend(t, "bob", g, "n", "y")
	waitFor(t, "alice gets bob's message", func() bool { return len(e.pushes(0, "alice", isMessage(ok.GetSeq()+1))) == 1 })
	if n := len(e.pushes(0, "alice", isReceipt(parleyv1.ReceiptKind_RECEIPT_KIND_READ_BY_ALL))); n != 0 {
		t.Fatalf("read-by-all pushed while carol had not read")
	}
	// Carol leaves without reading: everyone left has read.
	if _, err := e.call(removeRec("carol", g, "carol")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "read-by-all after carol left", func() bool {
		return len(e.pushes(0, "alice", isReceipt(parleyv1.ReceiptKind_RECEIPT_KIND_READ_BY_ALL))) == 1
	})
}

// TestReadByAllFollowsTheLastReader: read-by-all moves to the lowest read
// pointer of the members each time the last member at the old minimum
// reads past it, and only then, whichever order they read in (the
// sequencer counts the members at the minimum instead of looking at every
// member on every receipt).
func TestReadByAllFollowsTheLastReader(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	e.online(t, "alice", 0)
	g := e.createGroup(t, "alice", "g", "bob", "carol", "dave")
	first := e.mustSend(t, "alice", g, "m1", "one").GetSeq()
	second := e.mustSend(t, "alice", g, "m2", "two").GetSeq()
	readByAll := func() []uint64 {
		var seqs []uint64
		for _, d := range e.pushes(0, "alice", isReceipt(parleyv1.ReceiptKind_RECEIPT_KIND_READ_BY_ALL)) {
			seqs = append(seqs, d.GetReceipt().GetSeq())
		}
		return seqs
	}
	for _, step := range []struct {
		user string
		seq  uint64
		want []uint64
	}{
		{"bob", second, nil},
		{"carol", first, nil},
		{"dave", first, []uint64{first}}, // everyone has read the first
		{"dave", second, []uint64{first}},
		{"carol", second, []uint64{first, second}},
	} {
		if _, err := e.call(readRec(step.user, g, step.seq)); err != nil {
			t.Fatal(err)
		}
		// A send through the same queue orders after the read (alice's: a
		// reader's own send would move its read pointer too).
		ok := e.mustSend(t, "alice", g, fmt.Sprint(step.user, step.seq, len(step.want)), "x")
		waitFor(t, "alice gets her message", func() bool { return len(e.pushes(0, "alice", isMessage(ok.GetSeq()))) == 1 })
		if got := readByAll(); !slices.Equal(got, step.want) {
			t.Fatalf("after %s read %d: read-by-all pushed at %v, want %v", step.user, step.seq, got, step.want)
		}
	}
}

func TestExpiredRecordsAreDropped(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	dm := rules.DMID("alice", "bob")
	// Published directly, as a gateway whose client already timed out.
	expired := sendRec("alice", dm, "late", "too late")
	expired.Origin.GatewayId, expired.Origin.RequestId = "gateway-0", 1<<40
	expired.Deadline = time.Now().Add(-time.Second).UnixMilli()
	v, _ := proto.Marshal(expired)
	if err := e.b.Publish(e.ctx, e.cfg.IngressTopic, -1, []byte(dm), v); err != nil {
		t.Fatal(err)
	}
	// Same key, same queue: processed after the expired one.
	if ok := e.mustSend(t, "alice", dm, "fresh", "on time"); ok.GetSeq() != 2 {
		t.Fatalf("seq %d, want 2: the expired send must not be stored", ok.GetSeq())
	}
	// The retry of the expired one is processed normally.
	if ok := e.mustSend(t, "alice", dm, "late", "too late"); ok.GetSeq() != 3 {
		t.Fatalf("retry seq %d, want 3", ok.GetSeq())
	}
}

func TestFencingStaleWrite(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	dm := rules.DMID("alice", "bob")
	e.mustSend(t, "alice", dm, "a", "one") // seq 2
	// Another writer (an old owner that woke up, or a new one) takes seq 3
	// behind the sequencer's back.
	stale := &parleyv1.Message{ConversationId: dm, Seq: 3, MessageId: 1, SenderId: "bob", ClientMsgId: "stale",
		Kind: parleyv1.MessageKind_MESSAGE_KIND_TEXT, Text: "from the other writer", CreatedAt: time.Now().UnixMilli()}
	if err := e.st.Append(e.ctx, dm, []*parleyv1.Message{stale}); err != nil {
		t.Fatal(err)
	}
	// The sequencer's append at 3 is refused; it reloads and re-sequences.
	ok := e.mustSend(t, "alice", dm, "b", "two")
	if ok.GetSeq() != 4 {
		t.Fatalf("seq %d after a lost conditional append, want 4", ok.GetSeq())
	}
	log := e.log(t, dm)
	if log[2].GetClientMsgId() != "stale" || log[3].GetClientMsgId() != "b" {
		t.Fatalf("log %v", log)
	}
	// The reload also rebuilt dedupe: the other writer's message is known.
	if rep, err := e.send("bob", dm, "stale", "from the other writer"); err != nil || rep.GetSendOk().GetSeq() != 3 {
		t.Fatalf("retry of the other writer's message: %v %v", rep, err)
	}
}

// TestRebalance sends to many conversations while a second sequencer joins
// and the first leaves; clients retry with the same client_msg_id on
// timeout or unavailable. Every log stays dense, with each message stored
// once, at the seq its send_ok named.
func TestRebalance(t *testing.T) {
	e := newEnv(t, nil)
	_, stopA := e.startSequencer(t, "chat-a", 1)
	const convs, perConv = 12, 25
	type okKey struct {
		conv, cmid string
	}
	var mu sync.Mutex
	oks := make(map[okKey]uint64)
	var wg sync.WaitGroup
	progress := make(chan struct{}, convs*perConv)
	for c := range convs {
		dm := rules.DMID(fmt.Sprintf("u%02d", c), "zed")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perConv {
				cmid := fmt.Sprint(i)
				for attempt := 0; ; attempt++ {
					ctx, cancel := context.WithTimeout(e.ctx, 2*time.Second)
					rep, err := e.gws[0].client.Call(ctx, sendRec(fmt.Sprintf("u%02d", c), dm, cmid, "x"))
					cancel()
					if err == nil {
						mu.Lock()
						oks[okKey{dm, cmid}] = rep.GetSendOk().GetSeq()
						mu.Unlock()
						progress <- struct{}{}
						break
					}
					if c := code(err); c != wire.CodeTimeout && c != wire.CodeUnavailable && !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("send: %v", err)
						return
					}
					if attempt > 20 {
						t.Errorf("send %s %s: gave up: %v", dm, cmid, err)
						return
					}
				}
			}
		}()
	}
	for range convs * perConv / 3 {
		<-progress
	}
	sB, _ := e.startSequencer(t, "chat-b", 2)
	for range convs * perConv / 3 {
		<-progress
	}
	stopA()
	waitFor(t, "b owns every partition", func() bool { return len(sB.owned()) == 4 })
	wg.Wait()

	for c := range convs {
		dm := rules.DMID(fmt.Sprintf("u%02d", c), "zed")
		log := e.log(t, dm)
		if len(log) != perConv+1 {
			t.Fatalf("%s: %d entries, want %d", dm, len(log), perConv+1)
		}
		seen := make(map[string]bool)
		for _, m := range log[1:] {
			if seen[m.GetClientMsgId()] {
				t.Fatalf("%s: %s stored twice", dm, m.GetClientMsgId())
			}
			seen[m.GetClientMsgId()] = true
			if want := oks[okKey{dm, m.GetClientMsgId()}]; want != m.GetSeq() {
				t.Fatalf("%s: %s stored at %d, send_ok said %d", dm, m.GetClientMsgId(), m.GetSeq(), want)
			}
		}
	}
}

func TestOffsetsCommitLowestUnfinished(t *testing.T) {
	s := &Sequencer{cfg: Config{MaxInflight: 8}}
	p := newPartition(s, 0, context.Background())
	for off := int64(10); off < 15; off++ {
		p.track(off)
	}
	p.complete(12)
	p.complete(11)
	if _, ok := p.committable(); ok {
		t.Fatal("committable before offset 10 finished")
	}
	p.complete(10)
	if off, ok := p.committable(); !ok || off != 13 {
		t.Fatalf("committable %d %v, want 13", off, ok)
	}
	p.committed(13)
	p.complete(14)
	if _, ok := p.committable(); ok {
		t.Fatal("committable with 13 unfinished")
	}
	p.complete(13)
	if off, ok := p.committable(); !ok || off != 15 {
		t.Fatalf("committable %d %v, want 15", off, ok)
	}
}

func TestReceiptsFlushedOnShutdown(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ReceiptFlush = time.Hour })
	_, stop := e.startSequencer(t, "chat-0", 0)
	dm := rules.DMID("alice", "bob")
	e.mustSend(t, "alice", dm, "a", "x")
	if _, err := e.call(readRec("bob", dm, 2)); err != nil {
		t.Fatal(err)
	}
	stop()
	for _, u := range []string{"alice", "bob"} {
		r, err := e.st.Receipt(e.ctx, dm, u)
		if err != nil || r.ReadSeq != 2 {
			t.Fatalf("%s's receipt after shutdown: %+v %v", u, r, err)
		}
	}
}

// failingReceipts fails the receipt flush of one conversation until told
// otherwise, writing the other conversations of the same call.
type failingReceipts struct {
	store.MessageStore
	mu    sync.Mutex
	conv  string
	calls int // AdvanceReceiptsOf calls that carried conv
}

func (f *failingReceipts) AdvanceReceiptsOf(ctx context.Context, cs []store.ConversationReceipts) []error {
	f.mu.Lock()
	fail := f.conv
	f.mu.Unlock()
	var pass []store.ConversationReceipts
	var at []int
	errs := make([]error, len(cs))
	for i, c := range cs {
		if c.ConversationID == fail {
			f.mu.Lock()
			f.calls++
			f.mu.Unlock()
			errs[i] = errors.New("write timed out")
			continue
		}
		pass, at = append(pass, c), append(at, i)
	}
	for j, err := range f.MessageStore.AdvanceReceiptsOf(ctx, pass) {
		errs[at[j]] = err
	}
	return errs
}

// TestReceiptFlushKeepsFailed: acks of two DMs are flushed in one call; the
// conversation whose write failed keeps its pointer for the next flush
// (stored once the store recovers), the other is stored at once.
func TestReceiptFlushKeepsFailed(t *testing.T) {
	e := newEnv(t, nil)
	bad, good := rules.DMID("alice", "bob"), rules.DMID("alice", "carol")
	f := &failingReceipts{MessageStore: e.st, conv: bad}
	e.st = f
	e.startSequencer(t, "chat-0", 0)
	e.mustSend(t, "alice", bad, "b", "to bob")
	e.mustSend(t, "alice", good, "c", "to carol")
	for _, r := range []*parleyv1.IngressRecord{ackRec("bob", bad, 2), ackRec("carol", good, 2)} {
		if _, err := e.call(r); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "carol's delivered pointer stored", func() bool {
		r, _ := f.Receipt(e.ctx, good, "carol")
		return r.DeliveredSeq == 2
	})
	waitFor(t, "bob's failed flush retried", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.calls >= 2
	})
	if r, _ := f.Receipt(e.ctx, bad, "bob"); r.DeliveredSeq != 0 {
		t.Fatalf("bob's pointer stored while its writes fail: %+v", r)
	}
	f.mu.Lock()
	f.conv = ""
	f.mu.Unlock()
	waitFor(t, "bob's delivered pointer stored after the store recovered", func() bool {
		r, _ := f.Receipt(e.ctx, bad, "bob")
		return r.DeliveredSeq == 2
	})
}

// TestNewOwnerDedupes: a sequencer that takes over a conversation rebuilds
// its dedupe cache from the log, so a retry (or a replayed record) of a
// message the old owner stored gets the stored outcome.
func TestNewOwnerDedupes(t *testing.T) {
	e := newEnv(t, nil)
	_, stopA := e.startSequencer(t, "chat-a", 1)
	dm := rules.DMID("alice", "bob")
	first := e.mustSend(t, "alice", dm, "once", "only once")
	stopA()
	e.startSequencer(t, "chat-b", 2)
	again := e.mustSend(t, "alice", dm, "once", "only once")
	if !proto.Equal(first, again) {
		t.Fatalf("new owner answered %v, first owner %v", again, first)
	}
	if n := len(e.log(t, dm)); n != 2 {
		t.Fatalf("log has %d entries, want 2", n)
	}
}

func TestSweepEvictsIdleStates(t *testing.T) {
	p := newPartition(&Sequencer{cfg: Config{MaxInflight: 8}}, 0, context.Background())
	now := time.Now()
	for id, c := range map[string]*conversation{
		"old":     {used: now.Add(-time.Hour)},
		"recent":  {used: now.Add(-time.Second)},
		"older":   {used: now.Add(-2 * time.Second)},
		"running": {used: now.Add(-time.Hour), running: true},
		"queued":  {used: now.Add(-time.Hour), queue: []*job{{}}},
	} {
		c.p, c.id = p, id
		p.convs[id] = c
	}
	p.sweep(now, time.Minute, 3)
	var kept []string
	for id := range p.convs {
		kept = append(kept, id)
	}
	slices.Sort(kept)
	if !slices.Equal(kept, []string{"queued", "recent", "running"}) {
		t.Fatalf("kept %v", kept)
	}
}

// TestGroupDeliveredStoredNotPushed: in a group, a member's delivered
// pointer is stored (ReadBy and sync see it) but pushed to nobody, not even
// the member's own devices; a read still reaches them.
func TestGroupDeliveredStoredNotPushed(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	for _, u := range []string{"alice", "bob", "carol"} {
		e.online(t, u, 0)
	}
	g := e.createGroup(t, "alice", "g", "bob", "carol")
	ok := e.mustSend(t, "alice", g, "hello", "hi all")
	if _, err := e.call(ackRec("bob", g, ok.GetSeq())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's delivered pointer stored", func() bool {
		r, _ := e.st.Receipt(e.ctx, g, "bob")
		return r.DeliveredSeq == ok.GetSeq()
	})
	if _, err := e.call(readRec("bob", g, ok.GetSeq())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's read pushed to his devices", func() bool {
		return len(e.pushes(0, "bob", isReceipt(parleyv1.ReceiptKind_RECEIPT_KIND_READ))) == 1
	})
	for _, u := range []string{"alice", "bob", "carol"} {
		if ds := e.pushes(0, u, isReceipt(parleyv1.ReceiptKind_RECEIPT_KIND_DELIVERED)); len(ds) != 0 {
			t.Errorf("%s got delivered receipts in a group: %v", u, ds)
		}
	}
}

// unsureStore fails the next Append as told: after storing it (the store
// lost its answer: outcome unknown) or before (store.ErrNotStored).
type unsureStore struct {
	store.MessageStore
	mu   sync.Mutex
	next string // "", "stored-then-lost", "refused"
}

func (u *unsureStore) Append(ctx context.Context, conv string, msgs []*parleyv1.Message, effects ...store.Effect) error {
	u.mu.Lock()
	mode := u.next
	u.next = ""
	u.mu.Unlock()
	switch mode {
	case "refused":
		return fmt.Errorf("append %s: %w: too few replicas", conv, store.ErrNotStored)
	case "stored-then-lost":
		if err := u.MessageStore.Append(ctx, conv, msgs, effects...); err != nil {
			return err
		}
		return errors.New("connection reset while waiting for the answer")
	}
	return u.MessageStore.Append(ctx, conv, msgs, effects...)
}

// TestAppendOutcomes (issue 14): a send whose append the store refused
// before writing is answered unavailable; one whose append may have been
// stored is answered timeout, and its retry with the same client_msg_id is
// answered with the seq it was stored at, stored once.
func TestAppendOutcomes(t *testing.T) {
	e := newEnv(t, nil)
	u := &unsureStore{MessageStore: e.st}
	e.st = u
	e.startSequencer(t, "chat-0", 0)
	dm := rules.DMID("alice", "bob")
	e.mustSend(t, "alice", dm, "first", "hello")

	u.mu.Lock()
	u.next = "refused"
	u.mu.Unlock()
	if _, err := e.send("alice", dm, "r1", "refused"); code(err) != wire.CodeUnavailable {
		t.Fatalf("append refused before writing: %v, want unavailable", err)
	}
	u.mu.Lock()
	u.next = "stored-then-lost"
	u.mu.Unlock()
	if _, err := e.send("alice", dm, "u1", "maybe stored"); code(err) != wire.CodeTimeout {
		t.Fatalf("append of unknown outcome: %v, want timeout", err)
	}
	ok := e.mustSend(t, "alice", dm, "u1", "maybe stored")
	n := 0
	for _, m := range e.log(t, dm) {
		if m.GetClientMsgId() == "u1" {
			n++
			if m.GetSeq() != ok.GetSeq() {
				t.Errorf("the retry answered seq %d, stored at %d", ok.GetSeq(), m.GetSeq())
			}
		}
		if m.GetClientMsgId() == "r1" {
			t.Errorf("the refused send is stored at %d", m.GetSeq())
		}
	}
	if n != 1 {
		t.Fatalf("the send of unknown outcome is stored %d times after its retry, want once", n)
	}
}

// TestOwnershipPassesOn (issue 13): when a group's owner leaves, the
// longest-standing member may remove others; the other members still may
// not.
func TestOwnershipPassesOn(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	for _, u := range []string{"alice", "bob", "carol"} {
		e.online(t, u, 0)
	}
	g := e.createGroup(t, "alice", "club", "bob") // alice owner; bob joined at creation
	if _, err := e.call(addRec("alice", g, "carol", "dave")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.call(removeRec("carol", g, "dave")); code(err) != wire.CodeForbidden {
		t.Fatalf("carol removes dave while alice owns the group: %v, want forbidden", err)
	}
	if _, err := e.call(removeRec("alice", g, "alice")); err != nil { // the owner leaves
		t.Fatal(err)
	}
	if _, err := e.call(removeRec("carol", g, "dave")); code(err) != wire.CodeForbidden {
		t.Fatalf("carol (joined later) removes dave after alice left: %v, want forbidden", err)
	}
	rep, err := e.call(removeRec("bob", g, "dave"))
	if err != nil || rep.GetEvent().GetKind() != parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED {
		t.Fatalf("bob, now the longest-standing member, removes dave: %v %v", rep, err)
	}
}
