package cassandra

import (
	"fmt"
	"math/rand/v2"
	"testing"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/parleychat/parley/runtime/store"
)

// TestPackReceipts checks packReceipts on random flushes (a unit test of one
// function: a batch over the limits is only a warning in Cassandra's log,
// so the conformance suite cannot see it): no batch spans more than
// receiptConvsPerBatch conversations or receiptsPerBatch users, every
// non-zero pointer of a valid conversation is written exactly once, in a
// batch that lists its conversation, and invalid conversations and zero
// pointers are written nowhere.
func TestPackReceipts(t *testing.T) {
	type key struct{ conv, user string }
	writes := func(conv string, r store.Receipt) []gocql.BatchEntry {
		if r.DeliveredSeq == 0 && r.ReadSeq == 0 {
			return nil
		}
		return []gocql.BatchEntry{{Args: []any{conv, r.UserID}}}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		var cs []store.ConversationReceipts
		want := make(map[key]bool)
		invalid := make(map[int]bool)
		for i := range rng.IntN(40) {
			c := store.ConversationReceipts{ConversationID: fmt.Sprintf("g:r%d-c%d", round, i)}
			bad := rng.IntN(10) == 0
			// Mostly small conversations (DMs: the conversation bound
			// decides), some past a batch's users (the users bound).
			n := rng.IntN(6)
			if rng.IntN(4) == 0 {
				n = rng.IntN(350)
			}
			for j := range n {
				r := store.Receipt{UserID: fmt.Sprintf("u%d", j)}
				if rng.IntN(4) > 0 {
					r.DeliveredSeq = uint64(1 + rng.IntN(9))
				}
				if bad && j == 0 {
					r.UserID = ""
				}
				c.Receipts = append(c.Receipts, r)
			}
			if bad && len(c.Receipts) > 0 {
				invalid[i] = true
			} else {
				for _, r := range c.Receipts {
					if r.DeliveredSeq > 0 {
						want[key{c.ConversationID, r.UserID}] = true
					}
				}
			}
			cs = append(cs, c)
		}
		batches, errs := packReceipts(cs, writes)
		if len(errs) != len(cs) {
			t.Fatalf("round %d: %d errors for %d conversations", round, len(errs), len(cs))
		}
		for i, err := range errs {
			if (err != nil) != invalid[i] {
				t.Fatalf("round %d: conversation %d (invalid %v): error %v", round, i, invalid[i], err)
			}
		}
		got := make(map[key]int)
		for bi, b := range batches {
			convs := make(map[string]bool)
			users := 0
			for _, e := range b.entries {
				k := key{e.Args[0].(string), e.Args[1].(string)}
				got[k]++
				convs[k.conv] = true
				users++
			}
			listed := make(map[string]bool)
			for _, i := range b.elems {
				listed[cs[i].ConversationID] = true
			}
			if len(b.entries) == 0 || len(listed) != len(b.elems) || len(listed) > receiptConvsPerBatch || users > receiptsPerBatch {
				t.Fatalf("round %d batch %d: %d entries, %d users, conversations %d listed (%d distinct)", round, bi, len(b.entries), users, len(b.elems), len(listed))
			}
			for c := range convs {
				if !listed[c] {
					t.Fatalf("round %d batch %d writes %s without listing it", round, bi, c)
				}
			}
		}
		for k, n := range got {
			if !want[k] || n != 1 {
				t.Fatalf("round %d: pointer %v written %d times (wanted: %v)", round, k, n, want[k])
			}
		}
		if len(got) != len(want) {
			t.Fatalf("round %d: %d pointers written, want %d", round, len(got), len(want))
		}
	}
}
