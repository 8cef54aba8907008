package chat

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

func TestQueries(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	g := e.createGroup(t, "alice", "book club", "bob", "carol")
	for i := range 60 {
		e.mustSend(t, "alice", g, fmt.Sprint(i), fmt.Sprint("msg ", i)) // seqs 2..61
	}
	dm := rules.DMID("alice", "dave")
	e.mustSend(t, "dave", dm, "x", "hey") // seqs 1, 2
	if _, err := e.call(readRec("bob", g, 11)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.call(removeRec("carol", g, "carol")); err != nil { // seq 62
		t.Fatal(err)
	}
	waitFor(t, "bob's read pointer and alice's (moved by her sends, flushed) stored", func() bool {
		r, _ := e.st.Receipt(e.ctx, g, "bob")
		a, _ := e.st.Receipt(e.ctx, g, "alice")
		return r.ReadSeq == 11 && a.ReadSeq == 61
	})

	t.Run("history", func(t *testing.T) {
		h, err := e.q.History(e.ctx, "bob", &parleyv1.History{ConversationId: g})
		if err != nil || len(h.GetMessages()) != 50 || h.GetMessages()[0].GetSeq() != 62 || !h.GetHasMore() {
			t.Fatalf("newest page: %d messages, has_more %v, %v", len(h.GetMessages()), h.GetHasMore(), err)
		}
		h, err = e.q.History(e.ctx, "bob", &parleyv1.History{ConversationId: g, After: proto.Uint64(55), Limit: 5})
		if err != nil || len(h.GetMessages()) != 5 || h.GetMessages()[0].GetSeq() != 56 || !h.GetHasMore() {
			t.Fatalf("after 55: %v %v", h, err)
		}
		// after present and 0: from the very start, oldest first (not the
		// newest page, as an unset after is).
		h, err = e.q.History(e.ctx, "bob", &parleyv1.History{ConversationId: g, After: proto.Uint64(0), Limit: 3})
		if err != nil || len(h.GetMessages()) != 3 || h.GetMessages()[0].GetSeq() != 1 || h.GetMessages()[2].GetSeq() != 3 || !h.GetHasMore() {
			t.Fatalf("after 0: %v %v", h, err)
		}
		// before present and 0 counts as unset: the newest page.
		h, err = e.q.History(e.ctx, "bob", &parleyv1.History{ConversationId: g, Before: proto.Uint64(0), Limit: 2})
		if err != nil || len(h.GetMessages()) != 2 || h.GetMessages()[0].GetSeq() != 62 || !h.GetHasMore() {
			t.Fatalf("before 0: %v %v", h, err)
		}
		h, err = e.q.History(e.ctx, "bob", &parleyv1.History{ConversationId: g, Before: proto.Uint64(3), Limit: 200})
		if err != nil || len(h.GetMessages()) != 2 || h.GetMessages()[0].GetSeq() != 2 || h.GetHasMore() {
			t.Fatalf("before 3: %v %v", h, err)
		}
		for _, tc := range []struct {
			user string
			h    *parleyv1.History
			code string
		}{
			{"bob", &parleyv1.History{ConversationId: g, Limit: 201}, wire.CodeInvalid},
			{"bob", &parleyv1.History{ConversationId: g, Before: proto.Uint64(5), After: proto.Uint64(1)}, wire.CodeInvalid},
			{"bob", &parleyv1.History{ConversationId: g, Before: proto.Uint64(5), After: proto.Uint64(0)}, wire.CodeInvalid},
			{"bob", &parleyv1.History{ConversationId: "g:404"}, wire.CodeNotFound},
			{"dave", &parleyv1.History{ConversationId: g}, wire.CodeNotMember},
			{"carol", &parleyv1.History{ConversationId: g}, wire.CodeNotMember}, // left
			{"bob", &parleyv1.History{}, wire.CodeInvalid},
		} {
			if _, err := e.q.History(e.ctx, tc.user, tc.h); code(err) != tc.code {
				t.Errorf("%s %v: %v, want %s", tc.user, tc.h, err, tc.code)
			}
		}
	})

	t.Run("inbox", func(t *testing.T) {
		states, err := e.q.Inbox(e.ctx, "alice")
		if err != nil || len(states) != 2 {
			t.Fatalf("inbox %v %v", states, err)
		}
		byID := map[string]*parleyv1.ConversationState{}
		for _, s := range states {
			byID[s.GetConversationId()] = s
		}
		gs := byID[g]
		if gs.GetKind() != "group" || gs.GetTitle() != "book club" || gs.GetHeadSeq() != 62 ||
			gs.GetLastMessage().GetSeq() != 62 || gs.GetJoinedSeq() != 1 || len(gs.GetMessages()) != 0 {
			t.Fatalf("group state %v", gs)
		}
		// Alice's own sends moved her read pointer to 61; the removal event
		// above it is not a message anyone wrote: nothing unread.
		if gs.GetReadSeq() != 61 || gs.GetUnread() != 0 {
			t.Fatalf("alice read %d unread %d", gs.GetReadSeq(), gs.GetUnread())
		}
		// The DM holds its creation event and dave's one message: one unread.
		if ds := byID[dm]; ds.GetKind() != "dm" || ds.GetHeadSeq() != 2 || ds.GetUnread() != 1 {
			t.Fatalf("dm state %v", ds)
		}
		// Carol left: listed, but without head or messages, and joined_seq 0.
		states, err = e.q.Inbox(e.ctx, "carol")
		if err != nil || len(states) != 1 {
			t.Fatalf("carol's inbox %v %v", states, err)
		}
		if cs := states[0]; cs.GetJoinedSeq() != 0 || cs.GetHeadSeq() != 0 || cs.GetLastMessage() != nil {
			t.Fatalf("former member's state %v", cs)
		}
		peers, err := e.q.DMPeers(e.ctx, "dave")
		if err != nil || len(peers) != 1 || peers[0] != "alice" {
			t.Fatalf("dave's DM peers %v %v", peers, err)
		}
	})

	t.Run("sync", func(t *testing.T) {
		r, err := e.q.Sync(e.ctx, "bob", &parleyv1.Sync{})
		if err != nil || len(r.GetConversations()) != 1 || len(r.GetConversations()[0].GetMessages()) != 0 {
			t.Fatalf("sync without cursors: %v %v", r, err)
		}
		r, err = e.q.Sync(e.ctx, "bob", &parleyv1.Sync{Limit: 20, Cursors: []*parleyv1.Cursor{
			{ConversationId: g, Seq: 30}, {ConversationId: dm, Seq: 0}, {ConversationId: "g:404"},
		}})
		if err != nil || len(r.GetConversations()) != 1 {
			t.Fatalf("sync: %v %v", r, err)
		}
		cs := r.GetConversations()[0]
		// Unread: alice's 50 messages above bob's read pointer, not carol's removal.
		if cs.GetHeadSeq() != 62 || cs.GetReadSeq() != 11 || cs.GetUnread() != 50 || len(cs.GetMessages()) != 20 ||
			cs.GetMessages()[0].GetSeq() != 31 || !cs.GetHasMore() {
			t.Fatalf("bob's group state: head %d read %d unread %d, %d messages from %d, has_more %v",
				cs.GetHeadSeq(), cs.GetReadSeq(), cs.GetUnread(), len(cs.GetMessages()), cs.GetMessages()[0].GetSeq(), cs.GetHasMore())
		}
		// Cursor 0: the log from its start, oldest first.
		r, err = e.q.Sync(e.ctx, "dave", &parleyv1.Sync{Cursors: []*parleyv1.Cursor{{ConversationId: dm}}})
		if err != nil || len(r.GetConversations()[0].GetMessages()) != 2 || r.GetConversations()[0].GetMessages()[0].GetSeq() != 1 ||
			r.GetConversations()[0].GetHasMore() {
			t.Fatalf("dave's sync from 0: %v %v", r, err)
		}
		// Caught up: no messages.
		r, err = e.q.Sync(e.ctx, "bob", &parleyv1.Sync{Cursors: []*parleyv1.Cursor{{ConversationId: g, Seq: 62}}})
		if err != nil || len(r.GetConversations()[0].GetMessages()) != 0 || r.GetConversations()[0].GetHasMore() {
			t.Fatalf("caught-up sync: %v %v", r, err)
		}
		// A former member gets the conversation without messages.
		r, err = e.q.Sync(e.ctx, "carol", &parleyv1.Sync{Cursors: []*parleyv1.Cursor{{ConversationId: g, Seq: 5}}})
		if err != nil || len(r.GetConversations()) != 1 || len(r.GetConversations()[0].GetMessages()) != 0 {
			t.Fatalf("former member's sync: %v %v", r, err)
		}
		many := make([]*parleyv1.Cursor, MaxSyncCursors+1)
		for i := range many {
			many[i] = &parleyv1.Cursor{ConversationId: g}
		}
		if _, err := e.q.Sync(e.ctx, "bob", &parleyv1.Sync{Cursors: many}); code(err) != wire.CodeInvalid {
			t.Fatalf("too many cursors: %v", err)
		}
		if _, err := e.q.Sync(e.ctx, "bob", &parleyv1.Sync{Limit: 201}); code(err) != wire.CodeInvalid {
			t.Fatalf("limit 201: %v", err)
		}
	})

	t.Run("read by", func(t *testing.T) {
		rs, err := e.q.ReadBy(e.ctx, "bob", g, 11)
		if err != nil || len(rs) != 2 { // alice (her sends) and bob; carol left
			t.Fatalf("read by at 11: %v %v", rs, err)
		}
		rs, err = e.q.ReadBy(e.ctx, "bob", g, 12)
		if err != nil || len(rs) != 1 || rs[0].UserID != "alice" {
			t.Fatalf("read by at 12: %v %v", rs, err)
		}
		if _, err := e.q.ReadBy(e.ctx, "bob", g, 0); code(err) != wire.CodeInvalid {
			t.Fatalf("seq 0: %v", err)
		}
		if _, err := e.q.ReadBy(e.ctx, "carol", g, 1); code(err) != wire.CodeNotMember {
			t.Fatalf("former member: %v", err)
		}
	})

	t.Run("member ids", func(t *testing.T) {
		ids, err := e.q.MemberIDs(e.ctx, g)
		slices.Sort(ids)
		if err != nil || !slices.Equal(ids, []string{"alice", "bob"}) { // carol left
			t.Fatalf("members of the group: %v %v", ids, err)
		}
		ids, err = e.q.MemberIDs(e.ctx, dm)
		slices.Sort(ids)
		if err != nil || !slices.Equal(ids, []string{"alice", "dave"}) {
			t.Fatalf("members of the dm: %v %v", ids, err)
		}
	})
}

// TestPagesBoundedBySize: pages of large messages end by size (about
// MaxPageBytes) with has_more, and paging on, in either direction and
// through sync, still returns every message exactly once.
func TestPagesBoundedBySize(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	dm := rules.DMID("big1", "big2")
	// Quotes take two bytes each in JSON: messageSize counts them so, and
	// 200 of these messages (about 1.6 MB as JSON) do not fit one page.
	big := strings.Repeat(`"`, DefaultConfig().MaxMessageBytes)
	const n = 200
	for i := range n {
		e.mustSend(t, "big1", dm, fmt.Sprint("m", i), big) // seqs 2..201 (1 is the DM's creation)
	}
	const head = n + 1
	size := func(msgs []*parleyv1.Message) (total int) {
		for _, m := range msgs {
			total += messageSize(m)
		}
		return total
	}
	check := func(t *testing.T, what string, msgs []*parleyv1.Message, more bool) {
		t.Helper()
		if len(msgs) == 0 || len(msgs) >= n || !more {
			t.Fatalf("%s: %d messages, has_more %v; want a page cut by size", what, len(msgs), more)
		}
		if got, last := size(msgs), messageSize(msgs[len(msgs)-1]); got-last >= MaxPageBytes || got > MaxPageBytes+last {
			t.Fatalf("%s: %d bytes in %d messages, budget %d", what, got, len(msgs), MaxPageBytes)
		}
	}
	seen := func(t *testing.T, what string, pages [][]*parleyv1.Message) {
		t.Helper()
		got := map[uint64]int{}
		for _, p := range pages {
			for _, m := range p {
				got[m.GetSeq()]++
			}
		}
		for seq := uint64(1); seq <= head; seq++ {
			if got[seq] != 1 {
				t.Fatalf("%s: seq %d returned %d times", what, seq, got[seq])
			}
		}
		if len(got) != head {
			t.Fatalf("%s: %d seqs returned, want %d", what, len(got), head)
		}
	}

	t.Run("forward", func(t *testing.T) {
		var pages [][]*parleyv1.Message
		after := uint64(0)
		for i := 0; ; i++ {
			h, err := e.q.History(e.ctx, "big2", &parleyv1.History{ConversationId: dm, After: proto.Uint64(after), Limit: 200})
			if err != nil {
				t.Fatal(err)
			}
			msgs := h.GetMessages()
			if i == 0 {
				check(t, "first forward page", msgs, h.GetHasMore())
				if msgs[0].GetSeq() != 1 {
					t.Fatalf("after 0 starts at seq %d", msgs[0].GetSeq())
				}
			}
			pages = append(pages, msgs)
			if !h.GetHasMore() {
				break
			}
			if len(msgs) == 0 || i > n {
				t.Fatalf("page %d: has_more with %d messages", i, len(msgs))
			}
			after = msgs[len(msgs)-1].GetSeq()
		}
		seen(t, "forward", pages)
	})

	t.Run("backward", func(t *testing.T) {
		var pages [][]*parleyv1.Message
		h := &parleyv1.History{ConversationId: dm, Limit: 200}
		for i := 0; ; i++ {
			res, err := e.q.History(e.ctx, "big1", h)
			if err != nil {
				t.Fatal(err)
			}
			msgs := res.GetMessages()
			if i == 0 {
				check(t, "newest page", msgs, res.GetHasMore())
				if msgs[0].GetSeq() != head {
					t.Fatalf("newest page starts at seq %d", msgs[0].GetSeq())
				}
			}
			pages = append(pages, msgs)
			if !res.GetHasMore() {
				break
			}
			if len(msgs) == 0 || i > n {
				t.Fatalf("page %d: has_more with %d messages", i, len(msgs))
			}
			h.Before = proto.Uint64(msgs[len(msgs)-1].GetSeq())
		}
		seen(t, "backward", pages)
	})

	t.Run("sync", func(t *testing.T) {
		r, err := e.q.Sync(e.ctx, "big2", &parleyv1.Sync{Limit: 200, Cursors: []*parleyv1.Cursor{{ConversationId: dm}}})
		if err != nil || len(r.GetConversations()) != 1 {
			t.Fatalf("sync: %v %v", r, err)
		}
		cs := r.GetConversations()[0]
		check(t, "sync page", cs.GetMessages(), cs.GetHasMore())
		pages := [][]*parleyv1.Message{cs.GetMessages()}
		after := cs.GetMessages()[len(cs.GetMessages())-1].GetSeq()
		for more := true; more; {
			h, err := e.q.History(e.ctx, "big2", &parleyv1.History{ConversationId: dm, After: proto.Uint64(after), Limit: 200})
			if err != nil || len(h.GetMessages()) == 0 {
				t.Fatalf("history after %d: %v %v", after, h, err)
			}
			pages = append(pages, h.GetMessages())
			after, more = h.GetMessages()[len(h.GetMessages())-1].GetSeq(), h.GetHasMore()
		}
		seen(t, "sync then history", pages)
	})
}

func TestMessageSize(t *testing.T) {
	plain := &parleyv1.Message{Text: "hello"}
	if got, want := messageSize(plain), proto.Size(plain); got != want {
		t.Errorf("plain text: %d, want the proto size %d", got, want)
	}
	// Each control byte is \u00XX (six bytes) in JSON; quote and backslash
	// are two.
	esc := &parleyv1.Message{Text: "\x01\x02\"\\"}
	if got, want := messageSize(esc), proto.Size(esc)+5+5+1+1; got != want {
		t.Errorf("escaped text: %d, want %d", got, want)
	}
}

// TestUnreadCountsOthersMessagesOnly: unread counts the messages other
// members wrote above the read pointer, past unreadScan too; system events
// and one's own messages never count (issue 13, honest inbox).
func TestUnreadCountsOthersMessagesOnly(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	g := e.createGroup(t, "alice", "long", "bob") // seq 1, an event
	for i := range unreadScan + 30 {
		e.mustSend(t, "bob", g, fmt.Sprint("b", i), fmt.Sprint("msg ", i))
	}
	unread := func(user string) uint64 {
		t.Helper()
		states, err := e.q.Inbox(e.ctx, user)
		if err != nil || len(states) != 1 {
			t.Fatalf("%s's inbox: %v %v", user, states, err)
		}
		return states[0].GetUnread()
	}
	// More than unreadScan seqs above alice's pointer: the newest
	// unreadScan are counted, the older seqs (creation event included)
	// count as unread, an upper bound where clients show "99+".
	if got := unread("alice"); got != unreadScan+31 {
		t.Errorf("alice's unread %d, want %d (the upper bound past unreadScan)", got, unreadScan+31)
	}
	waitFor(t, "bob's read pointer (moved by his sends) stored", func() bool {
		r, _ := e.st.Receipt(e.ctx, g, "bob")
		return r.ReadSeq == unreadScan+31
	})
	if got := unread("bob"); got != 0 {
		t.Errorf("bob's unread %d, want 0 (his own messages, the creation event)", got)
	}
	if _, err := e.call(readRec("alice", g, 100)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "alice's read pointer stored", func() bool {
		r, _ := e.st.Receipt(e.ctx, g, "alice")
		return r.ReadSeq == 100
	})
	// Within unreadScan the count is exact: bob's messages at 101..231.
	if got, want := unread("alice"), uint64(unreadScan+30+1-100); got != want {
		t.Errorf("alice's unread after reading up to 100: %d, want %d", got, want)
	}
	// An event above the pointer does not count.
	if _, err := e.call(addRec("alice", g, "carol")); err != nil {
		t.Fatal(err)
	}
	if got, want := unread("alice"), uint64(unreadScan+30+1-100); got != want {
		t.Errorf("alice's unread after adding carol: %d, want still %d", got, want)
	}
}

// TestCheckMemberHidesOthersDMs: a DM whose id does not name the caller is
// not_member whether it exists or not (history, members, receipts and mute
// all ask CheckMember), so nobody learns who has a DM with whom; the
// caller's own DM that was never written is not_found.
func TestCheckMemberHidesOthersDMs(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	e.mustSend(t, "alice", rules.DMID("alice", "carol"), "c1", "hi carol")
	for _, conv := range []string{rules.DMID("alice", "carol"), rules.DMID("carol", "dave")} {
		if _, err := e.q.CheckMember(e.ctx, "bob", conv); code(err) != wire.CodeNotMember {
			t.Errorf("bob on %s: %v, want not_member", conv, err)
		}
	}
	if _, err := e.q.CheckMember(e.ctx, "bob", rules.DMID("bob", "dave")); code(err) != wire.CodeNotFound {
		t.Errorf("bob on his own unwritten DM: %v, want not_found", err)
	}
}
