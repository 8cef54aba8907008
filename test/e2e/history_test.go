package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// sendN sends n texts "<prefix> i" from d to conv and returns the last send_ok.
func sendN(t *testing.T, d *device, conv, prefix string, n int) *parleyv1.SendOk {
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	var last *parleyv1.SendOk
	for i := 0; i < n; i++ {
		ok, err := d.Send(ctx, conv, fmt.Sprintf("%s %d", prefix, i))
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		last = ok
	}
	return last
}

// TestHistoryPaging: 250 messages paged back 50 at a time return every
// message exactly once, in order; paging forward with after likewise; over
// WebSocket and REST.
func TestHistoryPaging(t *testing.T) {
	p := startServer(t, "", "--send-rate", "1000", "--send-burst", "1000")
	const conv, n = "dm:alice:bob", 250
	alice := connect(t, p, "alice", "phone")
	last := sendN(t, alice, conv, "m", n)
	first := last.Seq - n + 1 // seq 1 is the DM's creation event
	ctx := ctxT(t, 60*time.Second)
	rest := client.NewREST(p.HTTP(), p.token("bob", "web", time.Hour))

	type pager func(before, after uint64) (*parleyv1.HistoryResult, error)
	for _, pg := range []struct {
		name string
		get  pager
		from func(after uint64) (*parleyv1.HistoryResult, error) // after sent even when 0
	}{
		{"ws", func(b, a uint64) (*parleyv1.HistoryResult, error) { return alice.History(ctx, conv, b, a, 50) },
			func(a uint64) (*parleyv1.HistoryResult, error) { return alice.HistoryAfter(ctx, conv, a, 50) }},
		{"rest", func(b, a uint64) (*parleyv1.HistoryResult, error) { return rest.History(ctx, conv, b, a, 50) },
			func(a uint64) (*parleyv1.HistoryResult, error) { return rest.HistoryAfter(ctx, conv, a, 50) }},
	} {
		// after=0 is the very start of the log, oldest first: seq 1 (the
		// creation event), 2, ...; not the newest page.
		t.Run(pg.name+"/after0", func(t *testing.T) {
			var got []*parleyv1.Message
			after := uint64(0)
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatal("paging forward did not end")
				}
				res, err := pg.from(after)
				if err != nil {
					t.Fatal(err)
				}
				if pages == 0 && (len(res.Messages) != 50 || res.Messages[0].Seq != 1 || res.Messages[49].Seq != 50 || !res.HasMore) {
					t.Fatalf("after=0: %d messages from seq %d, has_more %v; want seqs 1..50 oldest first",
						len(res.Messages), res.Messages[0].GetSeq(), res.HasMore)
				}
				got = append(got, res.Messages...)
				if !res.HasMore {
					break
				}
				after = res.Messages[len(res.Messages)-1].Seq
			}
			assertDense(t, got, 1)
			checkTexts(t, got[1:], first, n)
		})
		t.Run(pg.name+"/before", func(t *testing.T) {
			var got []*parleyv1.Message
			before := last.Seq + 1
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatal("paging back did not end")
				}
				res, err := pg.get(before, 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(res.Messages) > 50 {
					t.Fatalf("page of %d messages, limit 50", len(res.Messages))
				}
				got = append(got, res.Messages...)
				if !res.HasMore {
					break
				}
				before = res.Messages[len(res.Messages)-1].Seq
			}
			// Newest first: reverse, then drop the creation event.
			for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
				got[i], got[j] = got[j], got[i]
			}
			checkTexts(t, got[1:], first, n)
		})
		t.Run(pg.name+"/after", func(t *testing.T) {
			var got []*parleyv1.Message
			after := first - 1
			for pages := 0; ; pages++ {
				if pages > 10 {
					t.Fatal("paging forward did not end")
				}
				res, err := pg.get(0, after)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, res.Messages...)
				if !res.HasMore {
					break
				}
				after = res.Messages[len(res.Messages)-1].Seq
			}
			checkTexts(t, got, first, n)
		})
	}
}

func checkTexts(t *testing.T, got []*parleyv1.Message, first uint64, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("paged %d messages, want %d", len(got), n)
	}
	assertDense(t, got, first)
	for i, m := range got {
		if want := fmt.Sprintf("m %d", i); m.Text != want {
			t.Fatalf("message %d text %q, want %q", i, m.Text, want)
		}
	}
}

// TestIdempotentRetry: retrying a send with the same client_msg_id returns
// the same seq and stores one copy, over WebSocket and REST.
func TestIdempotentRetry(t *testing.T) {
	p := startServer(t, "")
	const conv = "dm:alice:bob"
	alice := connect(t, p, "alice", "phone")
	ctx := ctxT(t, 30*time.Second)
	send := &parleyv1.Send{ConversationId: conv, ClientMsgId: "retry-1", Content: &parleyv1.Send_Text{Text: "once"}}
	ok1, err := alice.SendMessage(ctx, send)
	if err != nil {
		t.Fatal(err)
	}
	ok2, err := alice.SendMessage(ctx, send)
	if err != nil {
		t.Fatal(err)
	}
	rest := client.NewREST(p.HTTP(), p.token("alice", "web", time.Hour))
	ok3, err := rest.Send(ctx, conv, "retry-1", "once")
	if err != nil {
		t.Fatal(err)
	}
	for _, ok := range []*parleyv1.SendOk{ok2, ok3} {
		if ok.Seq != ok1.Seq || ok.MessageId != ok1.MessageId {
			t.Fatalf("retry got seq %d id %d, first send seq %d id %d", ok.Seq, ok.MessageId, ok1.Seq, ok1.MessageId)
		}
	}
	res, err := rest.History(ctx, conv, 0, 0, 50)
	if err != nil {
		t.Fatal(err)
	}
	copies := 0
	for _, m := range res.Messages {
		if m.ClientMsgId == "retry-1" {
			copies++
		}
	}
	if copies != 1 {
		t.Fatalf("stored %d copies of the retried message, want 1", copies)
	}
	// bob's other send with the same client_msg_id is a different message.
	bob := client.NewREST(p.HTTP(), p.token("bob", "web", time.Hour))
	okBob, err := bob.Send(ctx, conv, "retry-1", "mine")
	if err != nil {
		t.Fatal(err)
	}
	if okBob.Seq == ok1.Seq {
		t.Fatalf("bob's send with alice's client_msg_id was deduped into alice's message")
	}
}

// TestOfflineDeviceSync: a device offline for 100 messages reconnects and
// sync brings all 100, in pages.
func TestOfflineDeviceSync(t *testing.T) {
	p := startServer(t, "", "--send-rate", "1000", "--send-burst", "1000")
	const conv = "dm:alice:bob"
	alice := connect(t, p, "alice", "phone")
	tablet := connect(t, p, "bob", "tablet")
	first := sendN(t, alice, conv, "before", 1)
	waitFor(t, 10*time.Second, "tablet has the first message", func() bool { return len(tablet.Messages(conv, text)) == 1 })
	cursors := tablet.Cursors()
	_ = tablet.Close()

	last := sendN(t, alice, conv, "m", 100)

	// The raw sync answers one page per conversation, never the whole backlog.
	ctx := ctxT(t, 30*time.Second)
	probe := connect(t, p, "bob", "probe")
	res, err := probe.Sync(ctx, []*parleyv1.Cursor{{ConversationId: conv, Seq: first.Seq}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Conversations) != 1 || len(res.Conversations[0].Messages) >= 100 || !res.Conversations[0].HasMore {
		t.Fatalf("sync answered %d messages in one page (has_more %v); want a bounded first page", len(res.Conversations[0].Messages), res.Conversations[0].HasMore)
	}
	if res.Conversations[0].HeadSeq != last.Seq {
		t.Fatalf("sync head %d, want %d", res.Conversations[0].HeadSeq, last.Seq)
	}

	// The SDK resumes from its cursors and pulls the pages.
	back := connect(t, p, "bob", "tablet", func(o *client.Options) { o.Cursors = cursors })
	waitFor(t, 30*time.Second, "tablet catches up", func() bool { return len(back.Messages(conv, text)) >= 100 })
	got := back.Messages(conv, text)
	if len(got) != 100 {
		t.Fatalf("tablet got %d messages after reconnect, want exactly 100", len(got))
	}
	assertDense(t, got, first.Seq+1)
	for i, m := range got {
		if want := fmt.Sprintf("m %d", i); m.Text != want {
			t.Fatalf("message %d = %q, want %q", i, m.Text, want)
		}
	}
}
