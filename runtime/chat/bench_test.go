package chat

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// BenchmarkSendPipeline measures the whole send path in one process:
// Client.Do -> ingress (memory bus) -> Sequencer (validate, dedupe,
// sequence, synced Pebble append with group commit) -> Reply on the deliver
// partition -> Client callback, with every member online so each send also
// fans out. Sends go to 64 DMs, up to 512 in flight. It reports sends/s.
func BenchmarkSendPipeline(b *testing.B) {
	e := newEnv(b, nil)
	e.startSequencer(b, "chat-0", 0)
	const convs, inflight = 64, 512
	users := make([]string, convs)
	for i := range users {
		users[i] = fmt.Sprintf("u%02d", i)
		e.online(b, users[i], i%2)
	}
	e.online(b, "hub", 0)
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed int
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		u := users[i%convs]
		rec := sendRec(u, rules.DMID(u, "hub"), fmt.Sprint(i), "benchmark message")
		sem <- struct{}{}
		wg.Add(1)
		e.gws[0].client.Do(e.ctx, rec, func(rep *parleyv1.Reply) {
			if rep.GetError() != nil {
				mu.Lock()
				failed++
				mu.Unlock()
			}
			<-sem
			wg.Done()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if failed > 0 {
		b.Fatalf("%d of %d sends failed", failed, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sends/s")
}
