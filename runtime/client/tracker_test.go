package client

import (
	"math/rand/v2"
	"slices"
	"testing"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

func msg(conv string, seq uint64) *parleyv1.Message {
	return &parleyv1.Message{ConversationId: conv, Seq: seq}
}

func msgs(conv string, seqs ...uint64) []*parleyv1.Message {
	out := make([]*parleyv1.Message, len(seqs))
	for i, s := range seqs {
		out[i] = msg(conv, s)
	}
	return out
}

func seqs(ms []*parleyv1.Message) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.GetSeq()
	}
	return out
}

func TestTrackerPushInOrderAndDuplicates(t *testing.T) {
	tr := newTracker(8)
	var got []uint64
	for _, s := range []uint64{1, 2, 2, 1, 3} {
		out, _ := tr.push(msg("c", s), 10)
		got = append(got, seqs(out)...)
	}
	if !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("emitted %v, want [1 2 3]", got)
	}
	if out, dup := tr.push(msg("c", 3), 10); !dup || len(out) != 0 {
		t.Fatalf("repeat of 3: out %v dup %v, want nothing and dup", seqs(out), dup)
	}
	if tr.behind() {
		t.Fatal("tracker behind after contiguous pushes")
	}
}

func TestTrackerGapIsPulledAndEarlyMessagesWait(t *testing.T) {
	tr := newTracker(8)
	out, _ := tr.push(msg("c", 3), 10)
	if len(out) != 0 {
		t.Fatalf("seq 3 after cursor 0 emitted %v; it must wait for 1 and 2", seqs(out))
	}
	rel, conv, after, head, ok := tr.fillWork(10)
	if !ok || conv != "c" || after != 0 || head != 3 || len(rel) != 0 {
		t.Fatalf("fillWork = %v %q after %d head %d ok %v; want c after 0 head 3", seqs(rel), conv, after, head, ok)
	}
	out, dups := tr.page("c", 0, msgs("c", 1, 2, 3), false, 0, 10)
	// 3 was released from the buffer when 2 arrived; the page's copy is a duplicate.
	if got := seqs(out); !slices.Equal(got, []uint64{1, 2, 3}) || dups != 1 {
		t.Fatalf("page emitted %v (dups %d), want [1 2 3] and 1 duplicate", got, dups)
	}
	if tr.behind() {
		t.Fatal("still behind after the gap was filled")
	}
}

func TestTrackerRoom(t *testing.T) {
	tr := newTracker(8)
	tr.setCursor("c", 4)
	// A full queue takes nothing; the message is remembered by its head.
	if out, _ := tr.push(msg("c", 5), 0); len(out) != 0 {
		t.Fatalf("emitted %v with no room", seqs(out))
	}
	if !tr.behind() {
		t.Fatal("not behind after a message was left out")
	}
	// It waits in the buffer: fillWork releases it once there is room and
	// asks for no pull.
	rel, _, _, _, ok := tr.fillWork(0)
	if len(rel) != 0 || ok {
		t.Fatalf("fillWork without room released %v ok %v", seqs(rel), ok)
	}
	rel, _, _, _, ok = tr.fillWork(1)
	if got := seqs(rel); !slices.Equal(got, []uint64{5}) || ok {
		t.Fatalf("fillWork(1) released %v ok %v, want [5] and no pull", got, ok)
	}
	// A page stops at the room it is given; the rest is pulled again.
	out, _ := tr.page("c", 5, msgs("c", 6, 7, 8, 9), false, 0, 2)
	if got := seqs(out); !slices.Equal(got, []uint64{6, 7}) {
		t.Fatalf("page with room 2 emitted %v, want [6 7]", got)
	}
	_, _, after, head, ok := tr.fillWork(10)
	if !ok || after != 7 || head != 9 {
		t.Fatalf("fillWork after a partial page: after %d head %d ok %v, want 7 9 true", after, head, ok)
	}
}

func TestTrackerPageSkipsWhatTheUserCannotSee(t *testing.T) {
	tr := newTracker(8)
	// A conversation joined at seq 5: the first visible message is 5.
	tr.observeHead("g", 7)
	out, _ := tr.page("g", 0, msgs("g", 5, 6, 7), false, 5, 10)
	if got := seqs(out); !slices.Equal(got, []uint64{5, 6, 7}) {
		t.Fatalf("emitted %v, want [5 6 7]", got)
	}
	// Duplicates in a page (pushed meanwhile) are counted, not emitted.
	tr2 := newTracker(8)
	tr2.setCursor("c", 5)
	out, dups := tr2.page("c", 2, msgs("c", 3, 4, 5, 6), false, 1, 10)
	if got := seqs(out); !slices.Equal(got, []uint64{6}) || dups != 3 {
		t.Fatalf("emitted %v dups %d, want [6] and 3", got, dups)
	}
}

// TestTrackerWaitsForHolesAboveJoined: a page from a datacenter that lags
// its home (multi-region) can miss a seq above the one the user joined at;
// the tracker waits for it instead of skipping it for good, while a hole
// below joined (messages from before the user joined) is skipped.
func TestTrackerWaitsForHolesAboveJoined(t *testing.T) {
	tr := newTracker(8)
	tr.setCursor("c", 6)
	tr.observeHead("c", 9)
	out, _ := tr.page("c", 6, msgs("c", 8, 9), false, 1, 10) // 7 not replicated here yet
	if len(out) != 0 || tr.state("c").cursor != 6 {
		t.Fatalf("emitted %v, cursor %d; want nothing and cursor 6 (7 is visible: joined at 1)", seqs(out), tr.state("c").cursor)
	}
	out, _ = tr.page("c", 6, msgs("c", 7, 8, 9), false, 1, 10) // later: it arrived
	if got := seqs(out); !slices.Equal(got, []uint64{7, 8, 9}) {
		t.Fatalf("emitted %v, want [7 8 9]", got)
	}
	// Within one page too: 3 and 5 here, 4 not yet.
	tr2 := newTracker(8)
	tr2.setCursor("d", 2)
	out, _ = tr2.page("d", 2, msgs("d", 3, 5), false, 1, 10)
	if got := seqs(out); !slices.Equal(got, []uint64{3}) {
		t.Fatalf("emitted %v, want [3] (then wait for 4)", got)
	}
}

func TestTrackerPendingIsBounded(t *testing.T) {
	tr := newTracker(2)
	for _, s := range []uint64{5, 6, 7, 8} {
		tr.push(msg("c", s), 10)
	}
	if n := len(tr.convs["c"].pending); n != 2 {
		t.Fatalf("%d pending, want the bound 2", n)
	}
	if tr.convs["c"].head != 8 {
		t.Fatalf("head %d, want 8: dropped messages must still be known", tr.convs["c"].head)
	}
	// The pull brings everything, the buffered ones included, exactly once.
	out, _ := tr.page("c", 0, msgs("c", 1, 2, 3, 4, 5, 6, 7, 8), false, 0, 100)
	if got := seqs(out); !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("emitted %v", got)
	}
}

func TestTrackerSkipAndGiveUp(t *testing.T) {
	tr := newTracker(8)
	tr.setCursor("c", 2)
	tr.push(msg("c", 8), 10)
	tr.observeHead("c", 10)
	out := tr.skip("c", 10)
	if got := seqs(out); !slices.Equal(got, []uint64{8}) {
		t.Fatalf("skip released %v, want [8] (the wait below the early message ends)", got)
	}
	if c := tr.convs["c"].cursor; c != 8 {
		t.Fatalf("cursor %d after skip, want 8", c)
	}
	tr.giveUp("c")
	if tr.behind() {
		t.Fatal("behind after giveUp")
	}
	tr.observeHead("c", 20)
	if tr.behind() {
		t.Fatal("a gone conversation's head must be ignored")
	}
	if len(tr.cursors()) != 0 {
		t.Fatalf("cursors %v include a gone conversation", tr.cursors())
	}
	// A pushed message means the user is back: tracking resumes.
	tr.push(msg("c", 22), 10)
	if !tr.behind() {
		t.Fatal("not behind after a push above the cursor of a returning conversation")
	}
}

func TestTrackerSetCursorNeverMovesBack(t *testing.T) {
	tr := newTracker(8)
	tr.setCursor("c", 10)
	tr.setCursor("c", 3)
	if c := tr.convs["c"].cursor; c != 10 {
		t.Fatalf("cursor %d, want 10", c)
	}
	if _, ok := tr.toAck("c"); ok {
		t.Fatal("a baseline cursor must not need an ack")
	}
	tr.push(msg("c", 11), 10)
	if seq, ok := tr.toAck("c"); !ok || seq != 11 {
		t.Fatalf("toAck = %d %v, want 11 true", seq, ok)
	}
	tr.acked("c", 11)
	if _, ok := tr.toAck("c"); ok {
		t.Fatal("acked cursor still needs an ack")
	}
}

// TestTrackerExactlyOnceUnderChaos drives the tracker with duplicated,
// reordered and lost pushes, pages of random sizes and random room, against
// a log whose first visible seq is random, and checks that the application
// sees every visible message exactly once, in order.
func TestTrackerExactlyOnceUnderChaos(t *testing.T) {
	for round := range 200 {
		rng := rand.New(rand.NewPCG(uint64(round), 7))
		const n = 120
		joined := uint64(1 + rng.IntN(20))
		tr := newTracker(1 + rng.IntN(8))
		tr.setCursor("c", 0)
		var got []uint64
		next := uint64(1) // messages committed so far: seq < next
		for steps := 0; ; steps++ {
			if steps > 100000 {
				t.Fatalf("round %d: no convergence; got %d messages", round, len(got))
			}
			if next <= n && rng.IntN(3) > 0 {
				// Commit the next message and push it, maybe twice, maybe not at all.
				s := next
				next++
				if s < joined {
					continue
				}
				for range rng.IntN(3) {
					out, _ := tr.push(msg("c", s), rng.IntN(4))
					got = append(got, seqs(out)...)
				}
				// An old message pushed again (a retried push).
				if rng.IntN(5) == 0 && s > joined {
					out, _ := tr.push(msg("c", joined+uint64(rng.IntN(int(s-joined)))), 3)
					got = append(got, seqs(out)...)
				}
				continue
			}
			rel, conv, after, _, ok := tr.fillWork(rng.IntN(5))
			got = append(got, seqs(rel)...)
			if !ok {
				if next > n && !tr.behind() {
					break
				}
				if next > n {
					// Only room was missing: give some.
					rel, _, _, _, _ := tr.fillWork(10)
					got = append(got, seqs(rel)...)
				}
				continue
			}
			// The server's answer to History(after): visible messages, oldest first.
			limit := 1 + rng.IntN(10)
			var page []*parleyv1.Message
			more := false
			for s := max(after+1, joined); s < next; s++ {
				if len(page) == limit {
					more = true
					break
				}
				page = append(page, msg(conv, s))
			}
			out, _ := tr.page(conv, after, page, more, joined, rng.IntN(6))
			got = append(got, seqs(out)...)
			if next > n && !tr.behind() {
				break
			}
		}
		// The last committed messages may have been dropped without anything
		// announcing them (no later push): a reconnect's sync would find
		// them. Here, announce the head as the sync would, then drain.
		tr.observeHead("c", n)
		for tr.behind() {
			rel, conv, after, _, ok := tr.fillWork(100)
			got = append(got, seqs(rel)...)
			if !ok {
				continue
			}
			var page []*parleyv1.Message
			for s := max(after+1, joined); s <= n; s++ {
				page = append(page, msg(conv, s))
			}
			out, _ := tr.page(conv, after, page, false, joined, 1000)
			got = append(got, seqs(out)...)
		}
		var want []uint64
		for s := joined; s <= n; s++ {
			want = append(want, s)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("round %d (joined %d): emitted %v\nwant %v", round, joined, got, want)
		}
	}
}
