package e2e

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// TestSlowConsumer: a client that connects and never reads while a group it
// is in is flooded overflows its bounded send queue (256 frames; the server
// has no flag for it) and is disconnected, counted in
// parley_slow_consumer_disconnects_total; the other member keeps receiving
// every message; and the slow user, back with the SDK, gets every message by
// sync and history.
func TestSlowConsumer(t *testing.T) {
	const (
		textBytes = 30_000 // big messages fill the socket buffers with few frames
		round     = 40     // messages per round; the metric is checked between rounds
		workers   = 4
		maxSent   = 3000
	)
	p := startServer(t, "", "--send-rate", "100000", "--send-burst", "100000", "--max-message-bytes", fmt.Sprint(textBytes))
	ctx := ctxT(t, 5*time.Minute)
	senderTok := p.token("sender", "laptop", time.Hour)
	conv, err := client.NewREST(p.HTTP(), senderTok).CreateGroup(ctx, "flood", []string{"slow", "watcher"})
	if err != nil {
		t.Fatalf("create group: %v", err)
	}
	slowTok := p.token("slow", "phone", time.Hour)
	slow := openRaw(t, p, slowTok, wire.SubprotocolJSON) // reads its Welcome, then nothing
	_, watcherEvents := dialSDK(t, p, p.token("watcher", "laptop", time.Hour), wire.SubprotocolProto, nil)
	sender, _ := dialSDK(t, p, senderTok, wire.SubprotocolProto, nil)

	// Flood until the server reports a slow consumer.
	var mu sync.Mutex
	sent := map[uint64]string{} // seq -> text
	var sendErr error
	next := 0
	for p.metric("parley_slow_consumer_disconnects_total") < 1 {
		if next >= maxSent {
			t.Fatalf("sent %d messages and the server has not disconnected the client that never reads", next)
		}
		jobs := make(chan int)
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for i := range jobs {
					text := fmt.Sprintf("flood %05d ", i)
					text += strings.Repeat(".", textBytes-len(text))
					ok, err := sender.Send(ctx, conv, text)
					mu.Lock()
					if err != nil && sendErr == nil {
						sendErr = fmt.Errorf("message %d: %w", i, err)
					} else if err == nil {
						sent[ok.GetSeq()] = text
					}
					mu.Unlock()
				}
			})
		}
		for range round {
			jobs <- next
			next++
		}
		close(jobs)
		wg.Wait()
		if sendErr != nil {
			t.Fatalf("flood: %v", sendErr)
		}
	}
	t.Logf("slow consumer disconnected after %d messages of %d bytes", len(sent), textBytes)
	seqs := make([]uint64, 0, len(sent))
	for s := range sent {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	if want := uint64(2); seqs[0] != want || seqs[len(seqs)-1] != want+uint64(len(seqs))-1 {
		t.Fatalf("flood seqs %d..%d for %d messages, want dense from %d", seqs[0], seqs[len(seqs)-1], len(seqs), want)
	}
	last := seqs[len(seqs)-1]

	// The slow connection is over: reading it now ends in close 4001 (or the
	// server dropped it), not in more and more frames.
	code, err := slow.closeCode(60 * time.Second)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the slow client's connection is still open: %v", err)
	}
	if code != 0 && code != wire.CloseSlowConsumer {
		t.Fatalf("slow client's connection closed with %d (%v), want %d or a dropped connection", code, err, wire.CloseSlowConsumer)
	}
	t.Logf("slow client's connection ended: %v", err)

	// The other member got every message, once, in full.
	waitFor(t, 120*time.Second, "the watcher to receive every flood message", func() bool {
		return len(watcherEvents.seqs(conv)) >= len(seqs) && watcherEvents.times(conv, last) > 0
	})
	for _, s := range seqs {
		if n := watcherEvents.times(conv, s); n != 1 {
			t.Fatalf("watcher received seq %d %d times, want once", s, n)
		}
		if m := watcherEvents.message(conv, s); m.GetText() != sent[s] {
			t.Fatalf("watcher's seq %d is %.20q…, want %.20q…", s, m.GetText(), sent[s])
		}
	}

	// The slow user comes back with the SDK, resuming from before the
	// flood, and gets every message: emitted by the SDK's catch-up...
	again, againEvents := dialSDK(t, p, slowTok, wire.SubprotocolProto, func(o *client.Options) {
		o.Cursors = map[string]uint64{conv: 1}
	})
	waitFor(t, 120*time.Second, "the slow user's SDK to catch up", func() bool { return againEvents.times(conv, last) > 0 })
	for _, s := range seqs {
		if n := againEvents.times(conv, s); n != 1 {
			t.Fatalf("slow user's SDK emitted seq %d %d times, want once", s, n)
		}
		if m := againEvents.message(conv, s); m.GetText() != sent[s] {
			t.Fatalf("slow user's seq %d is %.20q…, want %.20q…", s, m.GetText(), sent[s])
		}
	}
	// ...and by explicit Sync and History pages.
	res, err := again.Sync(ctx, []*parleyv1.Cursor{{ConversationId: conv, Seq: 1}})
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	if len(res.GetConversations()) != 1 || res.GetConversations()[0].GetHeadSeq() != last {
		t.Fatalf("sync: %v, want %s at head %d", res.GetConversations(), conv, last)
	}
	st := res.GetConversations()[0]
	got := slices.Clone(st.GetMessages())
	for more := st.GetHasMore(); more; {
		h, err := again.History(ctx, conv, 0, got[len(got)-1].GetSeq(), 200)
		if err != nil {
			t.Fatalf("history after %d: %v", got[len(got)-1].GetSeq(), err)
		}
		got = append(got, h.GetMessages()...)
		more = h.GetHasMore() && len(h.GetMessages()) > 0
	}
	if len(got) != len(seqs) {
		t.Fatalf("sync and history gave %d messages after seq 1, want %d", len(got), len(seqs))
	}
	for i, m := range got {
		if m.GetSeq() != seqs[i] || m.GetText() != sent[seqs[i]] {
			t.Fatalf("message %d of sync and history: seq %d %.20q…, want seq %d %.20q…", i, m.GetSeq(), m.GetText(), seqs[i], sent[seqs[i]])
		}
	}
}
