// Package storetest is the conformance suite every store.MessageStore
// backend passes: call Run from the backend's tests.
//
// The suite uses only the store.MessageStore interface. Every subtest makes
// fresh conversation and user ids (unique per process run), so a backend may
// hand the same long-lived store (for example one Cassandra keyspace) to
// every subtest and to every run without truncating it.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
)

// Run runs the conformance suite against the stores newStore returns. It
// calls newStore once per subtest; newStore owns the store's lifecycle (close
// it with t.Cleanup if it is per test) and fails t if it cannot make one.
func Run(t *testing.T, newStore func(t *testing.T) store.MessageStore) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.MessageStore)
	}{
		{"EmptyConversation", testEmptyConversation},
		{"RoundTrip", testRoundTrip},
		{"PageBefore", testPageBefore},
		{"PageAfter", testPageAfter},
		{"NewestPage", testNewestPage},
		{"MinSeq", testMinSeq},
		{"InvalidPage", testInvalidPage},
		{"AppendSeqTaken", testAppendSeqTaken},
		{"AppendInvalid", testAppendInvalid},
		{"ConcurrentSameSeq", testConcurrentSameSeq},
		{"ConcurrentConversations", testConcurrentConversations},
		{"MembershipGroup", testMembershipGroup},
		{"MembershipDM", testMembershipDM},
		{"MembershipOneAppend", testMembershipOneAppend},
		{"Effects", testEffects},
		{"EffectsInvalid", testEffectsInvalid},
		{"Conversation", testConversation},
		{"Receipts", testReceipts},
		{"AdvanceReceipts", testAdvanceReceipts},
		{"AdvanceReceiptsOf", testAdvanceReceiptsOf},
		{"BucketBoundary", testBucketBoundary},
		{"CanceledContext", testCanceledContext},
		{"UserHomes", testUserHomes},
		{"ChangeEdit", testChangeEdit},
		{"ChangeDelete", testChangeDelete},
		{"ChangeSameAppend", testChangeSameAppend},
		{"ApplyChange", testApplyChange},
		{"Reactions", testReactions},
		{"ReactionsWithChanges", testReactionsWithChanges},
		{"ReactionSameAppend", testReactionSameAppend},
		{"ApplyReaction", testApplyReaction},
		{"Roles", testRoles},
		{"Rename", testRename},
		{"Mutes", testMutes},
		{"Blocks", testBlocks},
		{"PrefsInvalid", testPrefsInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

// runID keeps ids of different runs apart in a store that outlives the run.
var (
	runID   = strconv.FormatUint(rand.Uint64()>>16, 36)
	idCount atomic.Uint64
)

// newConv returns a fresh group conversation id.
func newConv() string {
	return fmt.Sprintf("g:st-%s-%d", runID, idCount.Add(1))
}

// newUser returns a fresh user id with a readable name in it.
func newUser(name string) string {
	return fmt.Sprintf("%s-%s-%d", name, runID, idCount.Add(1))
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// textMsg is message seq of conv; its fields derive from seq so a read can
// be checked against textMsg(conv, seq).
func textMsg(conv string, seq uint64) *parleyv1.Message {
	return &parleyv1.Message{
		ConversationId: conv,
		Seq:            seq,
		MessageId:      int64(seq)*1000 + 7,
		SenderId:       "sender",
		ClientMsgId:    "c" + strconv.FormatUint(seq, 10),
		Kind:           parleyv1.MessageKind_MESSAGE_KIND_TEXT,
		Text:           "message " + strconv.FormatUint(seq, 10),
		CreatedAt:      1_700_000_000_000 + int64(seq),
	}
}

// textMsgs returns textMsg(conv, from..to).
func textMsgs(conv string, from, to uint64) []*parleyv1.Message {
	var out []*parleyv1.Message
	for seq := from; seq <= to; seq++ {
		out = append(out, textMsg(conv, seq))
	}
	return out
}

func eventMsg(conv string, seq uint64, kind parleyv1.MessageKind, sender string, members ...string) *parleyv1.Message {
	return &parleyv1.Message{
		ConversationId: conv,
		Seq:            seq,
		MessageId:      int64(seq)*1000 + 9,
		SenderId:       sender,
		Kind:           kind,
		CreatedAt:      1_700_000_000_000 + int64(seq),
		Members:        members,
	}
}

func mustAppend(t *testing.T, s store.MessageStore, conv string, msgs ...*parleyv1.Message) {
	t.Helper()
	mustAppendWith(t, s, conv, msgs)
}

// mustAppendWith appends msgs with effects.
func mustAppendWith(t *testing.T, s store.MessageStore, conv string, msgs []*parleyv1.Message, effects ...store.Effect) {
	t.Helper()
	if err := s.Append(ctxFor(t), conv, msgs, effects...); err != nil {
		t.Fatalf("Append(%s, seq %d, %d msgs, %d effects): %v", conv, msgs[0].GetSeq(), len(msgs), len(effects), err)
	}
}

// join is the effect of user joining at seq with role.
func join(seq uint64, user, role string) store.Effect {
	return store.PutMember(seq, store.Member{UserID: user, JoinedSeq: seq, Role: role})
}

// list is its arguments, to pass messages and their effects to
// mustAppendWith.
func list(ms ...*parleyv1.Message) []*parleyv1.Message { return ms }

// appendRange appends textMsg(conv, from..to) in appends of at most batch.
func appendRange(t *testing.T, s store.MessageStore, conv string, from, to uint64, batch int) {
	t.Helper()
	for lo := from; lo <= to; lo += uint64(batch) {
		mustAppend(t, s, conv, textMsgs(conv, lo, min(to, lo+uint64(batch)-1))...)
	}
}

func seqs(msgs []*parleyv1.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.GetSeq()
	}
	return out
}

// seqRange returns from..to, descending when from > to.
func seqRange(from, to uint64) []uint64 {
	var out []uint64
	if from <= to {
		for s := from; s <= to; s++ {
			out = append(out, s)
		}
		return out
	}
	for s := from; s >= to; s-- {
		out = append(out, s)
	}
	return out
}

func messages(t *testing.T, s store.MessageStore, conv string, p store.Page) ([]*parleyv1.Message, bool) {
	t.Helper()
	msgs, more, err := s.Messages(ctxFor(t), conv, p)
	if err != nil {
		t.Fatalf("Messages(%s, %+v): %v", conv, p, err)
	}
	return msgs, more
}

// checkText fails t unless every message equals textMsg of its seq.
func checkText(t *testing.T, conv string, msgs []*parleyv1.Message) {
	t.Helper()
	for _, m := range msgs {
		if want := textMsg(conv, m.GetSeq()); !proto.Equal(m, want) {
			t.Fatalf("message seq %d = %v, want %v", m.GetSeq(), m, want)
		}
	}
}

func head(t *testing.T, s store.MessageStore, conv string) uint64 {
	t.Helper()
	h, err := s.Head(ctxFor(t), conv)
	if err != nil {
		t.Fatalf("Head(%s): %v", conv, err)
	}
	return h
}

func testEmptyConversation(t *testing.T, s store.MessageStore) {
	conv := newConv()
	if h := head(t, s, conv); h != 0 {
		t.Fatalf("Head = %d, want 0", h)
	}
	for _, p := range []store.Page{
		{Limit: 10},
		{Before: 5, Limit: 10},
		{After: 1, Limit: 10},
		{Limit: 10, MinSeq: 3},
	} {
		msgs, more := messages(t, s, conv, p)
		if len(msgs) != 0 || more {
			t.Errorf("Messages(%+v) = %v, %v; want empty, false", p, seqs(msgs), more)
		}
	}
	if _, err := s.Message(ctxFor(t), conv, 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Message(1) error = %v, want ErrNotFound", err)
	}
	members, err := s.Members(ctxFor(t), conv)
	if err != nil || len(members) != 0 {
		t.Errorf("Members = %v, %v; want none", members, err)
	}
	receipts, err := s.Receipts(ctxFor(t), conv)
	if err != nil || len(receipts) != 0 {
		t.Errorf("Receipts = %v, %v; want none", receipts, err)
	}
}

func testRoundTrip(t *testing.T, s store.MessageStore) {
	conv := newConv()
	media := &parleyv1.Message{
		ConversationId: conv,
		Seq:            2,
		MessageId:      1 << 40,
		SenderId:       "bob",
		ClientMsgId:    "client-2",
		Kind:           parleyv1.MessageKind_MESSAGE_KIND_MEDIA,
		Media:          &parleyv1.Media{Url: "https://media.example/a.png", Mime: "image/png", Size: 12345},
		CreatedAt:      1_700_000_000_123,
	}
	text := textMsg(conv, 1)
	text.Text = "héllo, wörld \u2603"
	// A reply carries a quote of the message it answers (Send.reply_to).
	reply := textMsg(conv, 3)
	reply.ReplyTo = &parleyv1.Quote{Seq: 1, SenderId: text.GetSenderId(), Text: "héllo", Media: false}
	mediaReply := textMsg(conv, 4)
	mediaReply.ReplyTo = &parleyv1.Quote{Seq: 2, SenderId: "bob", Media: true}
	mediaReply.Mentions = []string{"bob", "carol.d"}
	mustAppend(t, s, conv, text, media, reply, mediaReply)

	for _, want := range []*parleyv1.Message{text, media, reply, mediaReply} {
		got, err := s.Message(ctxFor(t), conv, want.Seq)
		if err != nil {
			t.Fatalf("Message(%d): %v", want.Seq, err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("Message(%d) = %v, want %v", want.Seq, got, want)
		}
	}
	msgs, _ := messages(t, s, conv, store.Page{Limit: 10})
	if len(msgs) != 4 || !proto.Equal(msgs[0], mediaReply) || !proto.Equal(msgs[1], reply) || !proto.Equal(msgs[2], media) || !proto.Equal(msgs[3], text) {
		t.Errorf("newest page = %v, want [media reply, reply, media, text]", msgs)
	}
	if _, err := s.Message(ctxFor(t), conv, 5); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Message(5) error = %v, want ErrNotFound", err)
	}
	if h := head(t, s, conv); h != 4 {
		t.Errorf("Head = %d, want 4", h)
	}
}

// pageSizes are the limits the paging tests walk a 23-message log with:
// 1, divisors-ish, non-divisors, exactly the log and more than it.
var pageSizes = []int{1, 2, 7, 10, 22, 23, 24, store.MaxLimit}

func testPageBefore(t *testing.T, s store.MessageStore) {
	const n = 23
	conv := newConv()
	appendRange(t, s, conv, 1, n, 5)
	for _, start := range []struct {
		name   string
		before uint64
	}{
		{"FromNewest", 0},
		{"FromHeadPlusOne", n + 1},
		{"FromFarAhead", 1 << 50},
	} {
		for _, limit := range pageSizes {
			t.Run(fmt.Sprintf("%s/Limit%d", start.name, limit), func(t *testing.T) {
				var got []*parleyv1.Message
				before := start.before
				for page := 0; ; page++ {
					if page > n+1 {
						t.Fatalf("paging did not end after %d pages", page)
					}
					msgs, more := messages(t, s, conv, store.Page{Before: before, Limit: limit})
					if len(msgs) > limit {
						t.Fatalf("page of %d messages, limit %d", len(msgs), limit)
					}
					got = append(got, msgs...)
					if !more {
						break
					}
					if len(msgs) == 0 {
						t.Fatalf("empty page with hasMore")
					}
					before = msgs[len(msgs)-1].GetSeq()
				}
				if want := seqRange(n, 1); !slices.Equal(seqs(got), want) {
					t.Fatalf("paged seqs = %v, want %v", seqs(got), want)
				}
				checkText(t, conv, got)
			})
		}
	}
}

func testPageAfter(t *testing.T, s store.MessageStore) {
	const n = 23
	conv := newConv()
	appendRange(t, s, conv, 1, n, 5)
	// After == 0 selects the newest page, so forward paging starts from a
	// seq the reader already has.
	for _, after := range []uint64{1, 9} {
		for _, limit := range pageSizes {
			t.Run(fmt.Sprintf("After%d/Limit%d", after, limit), func(t *testing.T) {
				var got []*parleyv1.Message
				cursor := after
				for page := 0; ; page++ {
					if page > n+1 {
						t.Fatalf("paging did not end after %d pages", page)
					}
					msgs, more := messages(t, s, conv, store.Page{After: cursor, Limit: limit})
					if len(msgs) > limit {
						t.Fatalf("page of %d messages, limit %d", len(msgs), limit)
					}
					got = append(got, msgs...)
					if !more {
						break
					}
					if len(msgs) == 0 {
						t.Fatalf("empty page with hasMore")
					}
					cursor = msgs[len(msgs)-1].GetSeq()
				}
				if want := seqRange(after+1, n); !slices.Equal(seqs(got), want) {
					t.Fatalf("paged seqs = %v, want %v", seqs(got), want)
				}
				checkText(t, conv, got)
			})
		}
	}
	msgs, more := messages(t, s, conv, store.Page{After: n, Limit: 5})
	if len(msgs) != 0 || more {
		t.Errorf("After head = %v, %v; want empty, false", seqs(msgs), more)
	}
}

func testNewestPage(t *testing.T, s store.MessageStore) {
	conv := newConv()
	appendRange(t, s, conv, 1, 23, 23)
	tests := []struct {
		limit    int
		want     []uint64
		wantMore bool
	}{
		{1, []uint64{23}, true},
		{5, seqRange(23, 19), true},
		{22, seqRange(23, 2), true},
		{23, seqRange(23, 1), false},
		{100, seqRange(23, 1), false},
	}
	for _, tc := range tests {
		msgs, more := messages(t, s, conv, store.Page{Limit: tc.limit})
		if !slices.Equal(seqs(msgs), tc.want) || more != tc.wantMore {
			t.Errorf("newest page limit %d = %v, %v; want %v, %v", tc.limit, seqs(msgs), more, tc.want, tc.wantMore)
		}
		checkText(t, conv, msgs)
	}
}

func testMinSeq(t *testing.T, s store.MessageStore) {
	conv := newConv()
	appendRange(t, s, conv, 1, 20, 10)
	tests := []struct {
		name     string
		page     store.Page
		want     []uint64
		wantMore bool
	}{
		{"NewestAll", store.Page{Limit: 10, MinSeq: 15}, seqRange(20, 15), false},
		{"NewestPartial", store.Page{Limit: 3, MinSeq: 15}, seqRange(20, 18), true},
		{"NewestExact", store.Page{Limit: 6, MinSeq: 15}, seqRange(20, 15), false},
		{"BeforeMore", store.Page{Before: 18, Limit: 2, MinSeq: 15}, []uint64{17, 16}, true},
		{"BeforeExact", store.Page{Before: 18, Limit: 3, MinSeq: 15}, []uint64{17, 16, 15}, false},
		{"BeforeAtMin", store.Page{Before: 15, Limit: 3, MinSeq: 15}, nil, false},
		{"BeforeBelowMin", store.Page{Before: 10, Limit: 3, MinSeq: 15}, nil, false},
		{"AfterBelowMin", store.Page{After: 2, Limit: 3, MinSeq: 15}, []uint64{15, 16, 17}, true},
		{"AfterAboveMin", store.Page{After: 17, Limit: 5, MinSeq: 15}, []uint64{18, 19, 20}, false},
		{"MinAboveHead", store.Page{Limit: 5, MinSeq: 21}, nil, false},
		{"MinAtHead", store.Page{Limit: 5, MinSeq: 20}, []uint64{20}, false},
		{"MinOneHidesNothing", store.Page{Limit: 30, MinSeq: 1}, seqRange(20, 1), false},
		{"ForwardFromStart", store.Page{Forward: true, Limit: 3}, []uint64{1, 2, 3}, true},
		{"ForwardFromStartAboveMin", store.Page{Forward: true, Limit: 3, MinSeq: 19}, []uint64{19, 20}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msgs, more := messages(t, s, conv, tc.page)
			if !slices.Equal(seqs(msgs), tc.want) || more != tc.wantMore {
				t.Errorf("Messages(%+v) = %v, %v; want %v, %v", tc.page, seqs(msgs), more, tc.want, tc.wantMore)
			}
		})
	}
}

func testInvalidPage(t *testing.T, s store.MessageStore) {
	conv := newConv()
	appendRange(t, s, conv, 1, 3, 3)
	for _, p := range []store.Page{
		{Limit: 0},
		{Limit: -1},
		{Limit: store.MaxLimit + 1},
		{Before: 3, After: 1, Limit: 5},
		{Before: 3, Forward: true, Limit: 5},
	} {
		if msgs, _, err := s.Messages(ctxFor(t), conv, p); err == nil {
			t.Errorf("Messages(%+v) = %v, nil error; want an error", p, seqs(msgs))
		}
	}
}

func testAppendSeqTaken(t *testing.T, s store.MessageStore) {
	tests := []struct {
		name   string
		stored [][2]uint64 // seq ranges appended first
		try    [2]uint64   // range that must be refused
	}{
		{"Single", [][2]uint64{{1, 3}}, [2]uint64{3, 3}},
		{"FirstTaken", [][2]uint64{{1, 3}}, [2]uint64{3, 5}},
		{"MiddleTaken", [][2]uint64{{1, 1}, {5, 5}}, [2]uint64{4, 6}},
		// A gap below a stored seq (an old owner raced ahead): only the
		// last seq of the batch is taken.
		{"OnlyLastTaken", [][2]uint64{{1, 3}, {6, 6}}, [2]uint64{4, 6}},
		{"AllTaken", [][2]uint64{{1, 3}}, [2]uint64{1, 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conv := newConv()
			stored := map[uint64]bool{}
			var top uint64
			for _, r := range tc.stored {
				appendRange(t, s, conv, r[0], r[1], 10)
				for seq := r[0]; seq <= r[1]; seq++ {
					stored[seq] = true
				}
				top = max(top, r[1])
			}
			// The refused batch adds a member first: its effect must not
			// apply either.
			intruder := newUser("intruder")
			batch := textMsgs(conv, tc.try[0], tc.try[1])
			batch[0] = eventMsg(conv, tc.try[0], parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED, "x", intruder)
			for _, m := range batch[1:] {
				m.Text = "impostor"
			}
			err := s.Append(ctxFor(t), conv, batch, join(tc.try[0], intruder, store.RoleMember))
			if !errors.Is(err, store.ErrSeqTaken) {
				t.Fatalf("Append(%v) error = %v, want ErrSeqTaken", tc.try, err)
			}
			for seq := tc.try[0]; seq <= tc.try[1]; seq++ {
				m, err := s.Message(ctxFor(t), conv, seq)
				switch {
				case stored[seq]:
					if err != nil || !proto.Equal(m, textMsg(conv, seq)) {
						t.Errorf("Message(%d) = %v, %v; want the original", seq, m, err)
					}
				case !errors.Is(err, store.ErrNotFound):
					t.Errorf("Message(%d) = %v, %v; want ErrNotFound", seq, m, err)
				}
			}
			if h := head(t, s, conv); h != top {
				t.Errorf("Head = %d, want %d", h, top)
			}
			if _, ok, err := s.Member(ctxFor(t), conv, intruder); err != nil || ok {
				t.Errorf("Member(intruder) = %v, %v; want not a member", ok, err)
			}
			inbox, err := s.Inbox(ctxFor(t), intruder)
			if err != nil || len(inbox) != 0 {
				t.Errorf("Inbox(intruder) = %v, %v; want empty", inbox, err)
			}
		})
	}
}

func testAppendInvalid(t *testing.T, s store.MessageStore) {
	conv := newConv()
	appendRange(t, s, conv, 1, 2, 2)
	tests := []struct {
		name string
		msgs []*parleyv1.Message
	}{
		{"SeqZero", textMsgs(conv, 0, 1)},
		{"Gap", []*parleyv1.Message{textMsg(conv, 3), textMsg(conv, 5)}},
		{"Descending", []*parleyv1.Message{textMsg(conv, 4), textMsg(conv, 3)}},
	}
	for _, tc := range tests {
		if err := s.Append(ctxFor(t), conv, tc.msgs); err == nil || errors.Is(err, store.ErrSeqTaken) {
			t.Errorf("%s: Append error = %v, want a non-ErrSeqTaken error", tc.name, err)
		}
	}
	if h := head(t, s, conv); h != 2 {
		t.Errorf("Head = %d after refused appends, want 2", h)
	}
}

func testConcurrentSameSeq(t *testing.T, s store.MessageStore) {
	const (
		rounds  = 10
		racers  = 6
		baseSeq = 1
	)
	conv := newConv()
	for round := range uint64(rounds) {
		// Racers alternate between two overlapping shapes: [seq] and
		// [seq, seq+1]. Any two overlap in seq, so exactly one may win.
		seq := baseSeq + 2*round
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			errs    = make([]error, racers)
			batches = make([][]*parleyv1.Message, racers)
		)
		for i := range racers {
			batch := textMsgs(conv, seq, seq+uint64(i%2))
			for _, m := range batch {
				m.MessageId = int64(i)
				m.Text = fmt.Sprintf("racer %d", i)
			}
			batches[i] = batch
			wg.Go(func() {
				<-start
				errs[i] = s.Append(ctxFor(t), conv, batch)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					t.Fatalf("round %d: racers %d and %d both appended seq %d", round, winner, i, seq)
				}
				winner = i
			case !errors.Is(err, store.ErrSeqTaken):
				t.Fatalf("round %d: racer %d: %v", round, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: no racer appended seq %d", round, seq)
		}
		got, err := s.Message(ctxFor(t), conv, seq)
		if err != nil || got.GetMessageId() != int64(winner) {
			t.Fatalf("round %d: Message(%d) = %v, %v; want racer %d's", round, seq, got, err, winner)
		}
		if len(batches[winner]) == 1 {
			// Keep the log dense for the next round.
			mustAppend(t, s, conv, textMsg(conv, seq+1))
		}
	}
	if h := head(t, s, conv); h != baseSeq+2*rounds-1 {
		t.Errorf("Head = %d, want %d", h, baseSeq+2*rounds-1)
	}
}

func testConcurrentConversations(t *testing.T, s store.MessageStore) {
	const (
		convs   = 6
		appends = 15
	)
	ids := make([]string, convs)
	errs := make([]error, convs)
	var wg sync.WaitGroup
	for i := range convs {
		ids[i] = newConv()
		wg.Go(func() {
			for seq := uint64(1); seq <= appends; seq++ {
				if err := s.Append(ctxFor(t), ids[i], textMsgs(ids[i], seq, seq)); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for i, conv := range ids {
		if errs[i] != nil {
			t.Fatalf("conversation %s: %v", conv, errs[i])
		}
		if h := head(t, s, conv); h != appends {
			t.Errorf("Head(%s) = %d, want %d", conv, h, appends)
		}
		msgs, more := messages(t, s, conv, store.Page{Limit: appends})
		if !slices.Equal(seqs(msgs), seqRange(appends, 1)) || more {
			t.Errorf("Messages(%s) = %v, %v; want %d..1", conv, seqs(msgs), more, appends)
		}
		checkText(t, conv, msgs)
	}
}

func members(t *testing.T, s store.MessageStore, conv string) []store.Member {
	t.Helper()
	ms, err := s.Members(ctxFor(t), conv)
	if err != nil {
		t.Fatalf("Members(%s): %v", conv, err)
	}
	return ms
}

// sortedMembers sorts ms by user id, the order Members returns.
func sortedMembers(ms ...store.Member) []store.Member {
	slices.SortFunc(ms, func(a, b store.Member) int {
		switch {
		case a.UserID < b.UserID:
			return -1
		case a.UserID > b.UserID:
			return 1
		}
		return 0
	})
	return ms
}

func inboxHas(t *testing.T, s store.MessageStore, user, conv string) bool {
	t.Helper()
	inbox, err := s.Inbox(ctxFor(t), user)
	if err != nil {
		t.Fatalf("Inbox(%s): %v", user, err)
	}
	return slices.Contains(inbox, conv)
}

func createConv(t *testing.T, s store.MessageStore, conv, kind, creator string) {
	t.Helper()
	c := store.Conversation{ID: conv, Kind: kind, Title: "t", HomeRegion: "local", CreatedBy: creator,
		CreatedAt: time.UnixMilli(1_700_000_000_000).UTC()}
	if err := s.CreateConversation(ctxFor(t), c); err != nil {
		t.Fatalf("CreateConversation(%s): %v", conv, err)
	}
}

func testMembershipGroup(t *testing.T, s store.MessageStore) {
	const (
		created = parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED
		added   = parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED
		removed = parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED
	)
	conv := newConv()
	alice, bob, carol := newUser("alice"), newUser("bob"), newUser("carol")
	createConv(t, s, conv, store.KindGroup, alice)

	// The effects are the chat role's for these events
	// (runtime/chat/effects.go); the store persists them as given.
	mustAppendWith(t, s, conv, list(eventMsg(conv, 1, created, alice, alice, bob)),
		join(1, alice, store.RoleOwner), join(1, bob, store.RoleMember))
	owner := store.Member{UserID: alice, JoinedSeq: 1, Role: store.RoleOwner}
	bobM := store.Member{UserID: bob, JoinedSeq: 1, Role: store.RoleMember}
	if got, want := members(t, s, conv), sortedMembers(owner, bobM); !slices.Equal(got, want) {
		t.Fatalf("after CREATED: Members = %v, want %v", got, want)
	}
	for _, u := range []string{alice, bob} {
		if !inboxHas(t, s, u, conv) {
			t.Errorf("after CREATED: Inbox(%s) lacks %s", u, conv)
		}
	}
	if inboxHas(t, s, carol, conv) {
		t.Errorf("Inbox(carol) has %s before she is added", conv)
	}

	mustAppendWith(t, s, conv, list(textMsg(conv, 2), eventMsg(conv, 3, added, alice, carol)), join(3, carol, store.RoleMember))
	carolM := store.Member{UserID: carol, JoinedSeq: 3, Role: store.RoleMember}
	if m, ok, err := s.Member(ctxFor(t), conv, carol); err != nil || !ok || m != carolM {
		t.Errorf("Member(carol) = %v, %v, %v; want %v", m, ok, err, carolM)
	}
	if !inboxHas(t, s, carol, conv) {
		t.Errorf("Inbox(carol) lacks %s after MEMBER_ADDED", conv)
	}

	mustAppendWith(t, s, conv, list(eventMsg(conv, 4, removed, alice, bob)), store.RemoveMember(4, bob))
	if m, ok, err := s.Member(ctxFor(t), conv, bob); err != nil || ok {
		t.Errorf("Member(bob) after removal = %v, %v, %v; want not a member", m, ok, err)
	}
	if got, want := members(t, s, conv), sortedMembers(owner, carolM); !slices.Equal(got, want) {
		t.Errorf("after REMOVED: Members = %v, want %v", got, want)
	}
	if !inboxHas(t, s, bob, conv) {
		t.Errorf("Inbox(bob) lost %s on removal; the entry is kept", conv)
	}

	// Re-adding a removed member starts its history at the new seq; naming
	// a current member again changes nothing (the owner stays owner: the
	// chat role gives alice no effect, TestEffects in runtime/chat).
	mustAppendWith(t, s, conv, list(eventMsg(conv, 5, added, alice, bob, alice)), join(5, bob, store.RoleMember))
	bobM = store.Member{UserID: bob, JoinedSeq: 5, Role: store.RoleMember}
	if got, want := members(t, s, conv), sortedMembers(owner, bobM, carolM); !slices.Equal(got, want) {
		t.Errorf("after re-add: Members = %v, want %v", got, want)
	}
	if m, ok, err := s.Member(ctxFor(t), conv, alice); err != nil || !ok || m != owner {
		t.Errorf("Member(alice) = %v, %v, %v; want %v", m, ok, err, owner)
	}
	// Removing a user who is not a member is a no-op.
	stranger := newUser("stranger")
	mustAppendWith(t, s, conv, list(eventMsg(conv, 6, removed, alice, stranger)), store.RemoveMember(6, stranger))
	if got := members(t, s, conv); len(got) != 3 {
		t.Errorf("after removing a stranger: Members = %v, want 3", got)
	}
}

func testMembershipDM(t *testing.T, s store.MessageStore) {
	a, b := newUser("a"), newUser("b")
	conv := "dm:" + min(a, b) + ":" + max(a, b)
	createConv(t, s, conv, store.KindDM, a)
	// Only a group's creator becomes owner: a DM has two equal members (the
	// chat role's rule, runtime/chat/effects.go).
	mustAppendWith(t, s, conv, list(eventMsg(conv, 1, parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED, a, a, b)),
		join(1, a, store.RoleMember), join(1, b, store.RoleMember))
	want := sortedMembers(
		store.Member{UserID: a, JoinedSeq: 1, Role: store.RoleMember},
		store.Member{UserID: b, JoinedSeq: 1, Role: store.RoleMember},
	)
	if got := members(t, s, conv); !slices.Equal(got, want) {
		t.Errorf("Members = %v, want %v", got, want)
	}
	for _, u := range []string{a, b} {
		if !inboxHas(t, s, u, conv) {
			t.Errorf("Inbox(%s) lacks %s", u, conv)
		}
	}
}

func testMembershipOneAppend(t *testing.T, s store.MessageStore) {
	conv := newConv()
	alice, bob, carol := newUser("alice"), newUser("bob"), newUser("carol")
	createConv(t, s, conv, store.KindGroup, alice)
	// Effects of one Append apply in order, as if appended one by one.
	mustAppendWith(t, s, conv,
		list(
			eventMsg(conv, 1, parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED, alice, alice, bob),
			textMsg(conv, 2),
			eventMsg(conv, 3, parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED, alice, carol),
			eventMsg(conv, 4, parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED, alice, bob),
			eventMsg(conv, 5, parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED, alice, carol),
			eventMsg(conv, 6, parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED, alice, carol),
		),
		join(1, alice, store.RoleOwner), join(1, bob, store.RoleMember),
		join(3, carol, store.RoleMember),
		store.RemoveMember(4, bob),
		store.RemoveMember(5, carol),
		join(6, carol, store.RoleMember),
	)
	want := sortedMembers(
		store.Member{UserID: alice, JoinedSeq: 1, Role: store.RoleOwner},
		store.Member{UserID: carol, JoinedSeq: 6, Role: store.RoleMember},
	)
	if got := members(t, s, conv); !slices.Equal(got, want) {
		t.Errorf("Members = %v, want %v", got, want)
	}
	for _, u := range []string{alice, bob, carol} {
		if !inboxHas(t, s, u, conv) {
			t.Errorf("Inbox(%s) lacks %s", u, conv)
		}
	}
	if h := head(t, s, conv); h != 6 {
		t.Errorf("Head = %d, want 6", h)
	}
}

func testConversation(t *testing.T, s store.MessageStore) {
	conv := newConv()
	want := store.Conversation{
		ID:         conv,
		Kind:       store.KindGroup,
		Title:      "Weekend plans",
		HomeRegion: "eu-west",
		CreatedBy:  newUser("alice"),
		// Backends keep millisecond precision.
		CreatedAt: time.UnixMilli(1_712_345_678_901),
	}
	if _, err := s.Conversation(ctxFor(t), conv); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Conversation of unknown id: error = %v, want ErrNotFound", err)
	}
	if err := s.CreateConversation(ctxFor(t), want); err != nil {
		t.Fatalf("CreateConversation: %v", err)
	}
	second := want
	second.Title = "overwritten"
	if err := s.CreateConversation(ctxFor(t), second); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second CreateConversation: error = %v, want ErrExists", err)
	}
	got, err := s.Conversation(ctxFor(t), conv)
	if err != nil {
		t.Fatalf("Conversation: %v", err)
	}
	if !got.CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("CreatedAt = %v, want %v", got.CreatedAt, want.CreatedAt)
	}
	got.CreatedAt = want.CreatedAt
	if got != want {
		t.Errorf("Conversation = %+v, want %+v", got, want)
	}
}

func testReceipts(t *testing.T, s store.MessageStore) {
	const (
		delivered = parleyv1.ReceiptKind_RECEIPT_KIND_DELIVERED
		read      = parleyv1.ReceiptKind_RECEIPT_KIND_READ
	)
	conv := newConv()
	alice, bob := newUser("alice"), newUser("bob")
	if r, err := s.Receipt(ctxFor(t), conv, alice); err != nil || r.DeliveredSeq != 0 || r.ReadSeq != 0 {
		t.Fatalf("Receipt before any = %+v, %v; want zero pointers", r, err)
	}
	steps := []struct {
		kind                      parleyv1.ReceiptKind
		seq                       uint64
		wantDelivered, wantReadTo uint64
	}{
		{delivered, 5, 5, 0},
		{delivered, 3, 5, 0}, // never backwards
		{delivered, 5, 5, 0},
		{read, 2, 5, 2},
		{read, 1, 5, 2},
		{read, 7, 7, 7}, // read raises delivered
		{delivered, 6, 7, 7},
		{delivered, 9, 9, 7},
		{read, 0, 9, 7},
	}
	for i, st := range steps {
		if err := s.AdvanceReceipt(ctxFor(t), conv, alice, st.kind, st.seq); err != nil {
			t.Fatalf("step %d: AdvanceReceipt(%v, %d): %v", i, st.kind, st.seq, err)
		}
		r, err := s.Receipt(ctxFor(t), conv, alice)
		if err != nil {
			t.Fatalf("step %d: Receipt: %v", i, err)
		}
		if r.UserID != alice || r.DeliveredSeq != st.wantDelivered || r.ReadSeq != st.wantReadTo {
			t.Fatalf("step %d (%v %d): Receipt = %+v, want delivered %d read %d",
				i, st.kind, st.seq, r, st.wantDelivered, st.wantReadTo)
		}
	}
	if err := s.AdvanceReceipt(ctxFor(t), conv, bob, read, 3); err != nil {
		t.Fatalf("AdvanceReceipt(bob): %v", err)
	}
	wantReceipts(t, s, conv, []store.Receipt{{UserID: alice, DeliveredSeq: 9, ReadSeq: 7}, {UserID: bob, DeliveredSeq: 3, ReadSeq: 3}})
	// Another conversation's pointers are separate.
	if r, err := s.Receipt(ctxFor(t), newConv(), alice); err != nil || r.DeliveredSeq != 0 || r.ReadSeq != 0 {
		t.Errorf("Receipt in another conversation = %+v, %v; want zero pointers", r, err)
	}
}

// testBucketBoundary crosses seq 4096, where the Cassandra backend starts a
// new partition (bucket = seq >> 12), with appends, single reads and pages.
func testBucketBoundary(t *testing.T, s store.MessageStore) {
	const n = 4100
	conv := newConv()
	appendRange(t, s, conv, 1, 4093, 250)
	mustAppend(t, s, conv, textMsgs(conv, 4094, 4098)...) // one append across the boundary
	appendRange(t, s, conv, 4099, n, 250)

	if h := head(t, s, conv); h != n {
		t.Fatalf("Head = %d, want %d", h, n)
	}
	for _, seq := range []uint64{4095, 4096, 4097} {
		m, err := s.Message(ctxFor(t), conv, seq)
		if err != nil || !proto.Equal(m, textMsg(conv, seq)) {
			t.Errorf("Message(%d) = %v, %v", seq, m, err)
		}
	}
	for _, seq := range []uint64{4096, 4095} {
		err := s.Append(ctxFor(t), conv, textMsgs(conv, seq, seq+2))
		if !errors.Is(err, store.ErrSeqTaken) {
			t.Errorf("Append at %d: error = %v, want ErrSeqTaken", seq, err)
		}
	}
	tests := []struct {
		name     string
		page     store.Page
		want     []uint64
		wantMore bool
	}{
		{"BeforeAcross", store.Page{Before: 4098, Limit: 4}, seqRange(4097, 4094), true},
		{"BeforeAtBoundary", store.Page{Before: 4096, Limit: 2}, []uint64{4095, 4094}, true},
		{"BeforeJustAbove", store.Page{Before: 4097, Limit: 2}, []uint64{4096, 4095}, true},
		{"AfterAcross", store.Page{After: 4094, Limit: 3}, seqRange(4095, 4097), true},
		{"AfterLastOfBucket", store.Page{After: 4095, Limit: 1}, []uint64{4096}, true},
		{"AfterToHead", store.Page{After: 4096, Limit: 10}, seqRange(4097, n), false},
		{"MinSeqInNewBucket", store.Page{Before: 4098, Limit: 5, MinSeq: 4096}, []uint64{4097, 4096}, false},
		{"MinSeqEndOfOldBucket", store.Page{Before: 4097, Limit: 5, MinSeq: 4095}, []uint64{4096, 4095}, false},
		{"Newest", store.Page{Limit: 6}, seqRange(n, 4095), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msgs, more := messages(t, s, conv, tc.page)
			if !slices.Equal(seqs(msgs), tc.want) || more != tc.wantMore {
				t.Errorf("Messages(%+v) = %v, %v; want %v, %v", tc.page, seqs(msgs), more, tc.want, tc.wantMore)
			}
			checkText(t, conv, msgs)
		})
	}
	t.Run("PageAllBackward", func(t *testing.T) {
		var got []uint64
		var before uint64
		for {
			msgs, more := messages(t, s, conv, store.Page{Before: before, Limit: store.MaxLimit})
			got = append(got, seqs(msgs)...)
			if !more {
				break
			}
			before = msgs[len(msgs)-1].GetSeq()
		}
		if !slices.Equal(got, seqRange(n, 1)) {
			t.Errorf("paged %d seqs, want %d..1 each once", len(got), n)
		}
	})
	t.Run("PageAllForward", func(t *testing.T) {
		var got []uint64
		after := uint64(1)
		for {
			msgs, more := messages(t, s, conv, store.Page{After: after, Limit: 999})
			got = append(got, seqs(msgs)...)
			if !more {
				break
			}
			after = msgs[len(msgs)-1].GetSeq()
		}
		if !slices.Equal(got, seqRange(2, n)) {
			t.Errorf("paged %d seqs, want 2..%d each once", len(got), n)
		}
	})
}

func testCanceledContext(t *testing.T, s store.MessageStore) {
	conv := newConv()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Append(ctx, conv, textMsgs(conv, 1, 2)); err == nil {
		t.Fatalf("Append with a canceled context succeeded")
	}
	if h := head(t, s, conv); h != 0 {
		t.Errorf("Head = %d after a canceled Append, want 0", h)
	}
	if _, _, err := s.Messages(ctx, conv, store.Page{Limit: 1}); err == nil {
		t.Errorf("Messages with a canceled context succeeded")
	}
	if err := s.CreateConversation(ctx, store.Conversation{ID: conv, Kind: store.KindGroup}); err == nil {
		t.Errorf("CreateConversation with a canceled context succeeded")
	}
	if _, err := s.Conversation(ctxFor(t), conv); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Conversation after a canceled create: error = %v, want ErrNotFound", err)
	}
}

// testAdvanceReceipts writes many users' pointers of one conversation in one
// call (more than one Cassandra batch's worth): each pointer ends at the
// highest seq written, read raises delivered, lower seqs change nothing, and
// an invalid user id fails the call before anything is written.
func testAdvanceReceipts(t *testing.T, s store.MessageStore) {
	conv := newConv()
	const users = 150
	user := func(i int) string { return newUser(fmt.Sprintf("ru%03d", i)) }
	ids := make([]string, users)
	var rs []store.Receipt
	for i := range ids {
		ids[i] = user(i)
		rs = append(rs, store.Receipt{UserID: ids[i], DeliveredSeq: uint64(10 + i%7), ReadSeq: uint64(i % 5)})
	}
	if err := s.AdvanceReceipts(ctxFor(t), conv, rs); err != nil {
		t.Fatalf("AdvanceReceipts(%d users): %v", users, err)
	}
	// Lower seqs change nothing; a higher read raises delivered.
	lower := []store.Receipt{{UserID: ids[0], DeliveredSeq: 1, ReadSeq: 0}, {UserID: ids[1], DeliveredSeq: 2, ReadSeq: 30}}
	if err := s.AdvanceReceipts(ctxFor(t), conv, lower); err != nil {
		t.Fatalf("AdvanceReceipts(lower): %v", err)
	}
	bad := []store.Receipt{{UserID: ids[2], DeliveredSeq: 99}, {UserID: "", DeliveredSeq: 99}}
	if err := s.AdvanceReceipts(ctxFor(t), conv, bad); err == nil {
		t.Errorf("AdvanceReceipts with an empty user id: no error")
	}
	got, err := s.Receipts(ctxFor(t), conv)
	if err != nil {
		t.Fatalf("Receipts: %v", err)
	}
	byUser := make(map[string]store.Receipt, len(got))
	for _, r := range got {
		byUser[r.UserID] = r
	}
	for i, id := range ids {
		want := store.Receipt{UserID: id, DeliveredSeq: uint64(10 + i%7), ReadSeq: uint64(i % 5)}
		if i == 1 {
			want.DeliveredSeq, want.ReadSeq = 30, 30
		}
		if byUser[id] != want {
			t.Errorf("user %d: %+v, want %+v", i, byUser[id], want)
		}
	}
	if len(got) != users {
		t.Errorf("Receipts returned %d users, want %d", len(got), users)
	}
}

// testAdvanceReceiptsOf writes the pointers of many conversations in one
// call, as the chat role's receipt flush does: one group of 150 users (more
// than one Cassandra batch), 23 small conversations (more than two batches'
// worth of conversations), one with only zero pointers and, in the middle,
// one with an invalid user id. Only the invalid one fails and none of its
// pointers is written; every other pointer reads back as written; a second
// call with lower seqs changes nothing; an empty call returns no errors; a
// call with a canceled context fails every conversation it had something to
// write for, writes nothing, and fails none with only zero pointers.
func testAdvanceReceiptsOf(t *testing.T, s store.MessageStore) {
	if errs := s.AdvanceReceiptsOf(ctxFor(t), nil); len(errs) != 0 {
		t.Errorf("AdvanceReceiptsOf(nil) = %v, want no errors", errs)
	}
	group := func() store.ConversationReceipts {
		c := store.ConversationReceipts{ConversationID: newConv()}
		for i := range 150 {
			c.Receipts = append(c.Receipts, store.Receipt{UserID: newUser(fmt.Sprintf("gu%03d", i)), DeliveredSeq: uint64(20 + i%9), ReadSeq: uint64(i % 4)})
		}
		return c
	}
	small := func(i int) store.ConversationReceipts {
		c := store.ConversationReceipts{ConversationID: newConv()}
		for j := range 1 + i%3 {
			c.Receipts = append(c.Receipts, store.Receipt{UserID: newUser(fmt.Sprintf("su%d", j)), DeliveredSeq: uint64(5 + i + j), ReadSeq: uint64(i)})
		}
		return c
	}
	zero := func() store.ConversationReceipts {
		return store.ConversationReceipts{ConversationID: newConv(), Receipts: []store.Receipt{{UserID: newUser("zero")}}}
	}
	cs := []store.ConversationReceipts{group()}
	for i := range 23 {
		cs = append(cs, small(i))
	}
	const bad = 12
	cs[bad].Receipts = append(cs[bad].Receipts, store.Receipt{UserID: "", DeliveredSeq: 8})
	cs = append(cs, zero())
	errs := s.AdvanceReceiptsOf(ctxFor(t), cs)
	if len(errs) != len(cs) {
		t.Fatalf("AdvanceReceiptsOf(%d conversations) returned %d errors", len(cs), len(errs))
	}
	for i, err := range errs {
		if (err != nil) != (i == bad) {
			t.Errorf("conversation %d (%s), invalid %v: error %v", i, cs[i].ConversationID, i == bad, err)
		}
	}
	// Lower seqs change nothing.
	var lower []store.ConversationReceipts
	for i, c := range cs[:len(cs)-1] {
		if i != bad {
			lower = append(lower, store.ConversationReceipts{ConversationID: c.ConversationID, Receipts: []store.Receipt{{UserID: c.Receipts[0].UserID, DeliveredSeq: 1}}})
		}
	}
	for i, err := range s.AdvanceReceiptsOf(ctxFor(t), lower) {
		if err != nil {
			t.Errorf("lower pointers of %s: %v", lower[i].ConversationID, err)
		}
	}
	for i, c := range cs {
		var want []store.Receipt
		if i != bad {
			for _, r := range c.Receipts {
				if r.DeliveredSeq > 0 || r.ReadSeq > 0 {
					want = append(want, store.Receipt{UserID: r.UserID, DeliveredSeq: max(r.DeliveredSeq, r.ReadSeq), ReadSeq: r.ReadSeq})
				}
			}
		}
		wantReceipts(t, s, c.ConversationID, want)
	}

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	cs = []store.ConversationReceipts{group(), zero(), small(1)}
	errs = s.AdvanceReceiptsOf(canceled, cs)
	if len(errs) != len(cs) || errs[0] == nil || errs[1] != nil || errs[2] == nil {
		t.Errorf("AdvanceReceiptsOf with a canceled context = %v; want errors for the group and the small conversation, none for the zero pointers", errs)
	}
	for _, c := range cs {
		wantReceipts(t, s, c.ConversationID, nil)
	}
}

// wantReceipts checks that conv's stored receipts are exactly want, in any
// order.
func wantReceipts(t *testing.T, s store.MessageStore, conv string, want []store.Receipt) {
	t.Helper()
	got, err := s.Receipts(ctxFor(t), conv)
	if err != nil {
		t.Fatalf("Receipts(%s): %v", conv, err)
	}
	byUser := func(a, b store.Receipt) int { return strings.Compare(a.UserID, b.UserID) }
	want = slices.Clone(want)
	slices.SortFunc(got, byUser)
	slices.SortFunc(want, byUser)
	if !slices.Equal(got, want) {
		t.Errorf("Receipts(%s) = %+v, want %+v", conv, got, want)
	}
}

// testUserHomes: a home is absent until set; onlyIfAbsent keeps the first;
// a plain set replaces it; bad input is an error, not a stored row.
func testUserHomes(t *testing.T, s store.MessageStore) {
	h, ok := s.(store.UserHomes)
	if !ok {
		t.Fatalf("%T does not implement store.UserHomes", s)
	}
	ctx := context.Background()
	u := newUser("roamer")
	if _, err := h.UserHome(ctx, u); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UserHome of a new user = %v, want ErrNotFound", err)
	}
	if got, err := h.SetUserHome(ctx, u, "eu", true); err != nil || got != "eu" {
		t.Fatalf("SetUserHome(eu, onlyIfAbsent) = %q, %v; want eu", got, err)
	}
	if got, err := h.SetUserHome(ctx, u, "us", true); err != nil || got != "eu" {
		t.Fatalf("SetUserHome(us, onlyIfAbsent) over eu = %q, %v; want eu kept", got, err)
	}
	if got, err := h.UserHome(ctx, u); err != nil || got != "eu" {
		t.Fatalf("UserHome = %q, %v; want eu", got, err)
	}
	if got, err := h.SetUserHome(ctx, u, "us", false); err != nil || got != "us" {
		t.Fatalf("SetUserHome(us) = %q, %v; want us", got, err)
	}
	if got, err := h.UserHome(ctx, u); err != nil || got != "us" {
		t.Fatalf("UserHome after a set = %q, %v; want us", got, err)
	}
	if _, err := h.SetUserHome(ctx, u, "", false); err == nil {
		t.Error("SetUserHome with an empty region succeeded")
	}
	if _, err := h.SetUserHome(ctx, "", "eu", false); err == nil {
		t.Error("SetUserHome of an empty user id succeeded")
	}
}
