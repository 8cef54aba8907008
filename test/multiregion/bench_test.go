package multiregion

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/chat/rules"
	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// metricSum sums the samples of a Prometheus counter at base/metrics.
func metricSum(tb testing.TB, base, name string) float64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("metrics of %s: %v", base, err)
	}
	defer res.Body.Close()
	var sum float64
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || (len(line) > len(name) && line[len(name)] != '{' && line[len(name)] != ' ') {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// BenchmarkOutboxDrain measures how fast an outbox drains after a heal:
// 40 users in us each send 40 messages to a DM homed in eu while the link is
// cut (every one answered send_accepted), then the link heals. Reported:
// heal → first forward (ms), the forward rate once draining (records/s) and
// heal → every record readable from us's datacenter (s). Run with -benchtime=1x:
//
//	eval "$(hack/regions.sh env)"; go test -run '^$' -bench OutboxDrain -benchtime=1x ./test/multiregion
func BenchmarkOutboxDrain(b *testing.B) {
	rs := regions(b)
	const users, each = 40, 40
	for range b.N {
		run := fmt.Sprintf("%d", time.Now().UnixNano()%1e9)
		bobs := make([]*person, users)
		convs := make([]string, users)
		for i := range users {
			a := connect(b, rs["eu"], fmt.Sprintf("a%s-%d", run, i), "eu") // stores alice's home: eu
			bobs[i] = connect(b, rs["us"], fmt.Sprintf("b%s-%d", run, i), "us")
			convs[i] = rules.DMID(a.user, bobs[i].user)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if _, err := bobs[i].c.Send(ctx, convs[i], "hello"); err != nil {
				b.Fatal(err)
			}
			cancel()
			_ = a.c.Close()
		}
		regionsScript(b, "partition")
		var wg sync.WaitGroup
		var mu sync.Mutex
		accepted := 0
		for i, p := range bobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range each {
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					_, err := p.c.SendMessage(ctx, &parleyv1.Send{ConversationId: convs[i], ClientMsgId: fmt.Sprintf("m%d", j),
						Content: &parleyv1.Send_Text{Text: fmt.Sprintf("drain %d", j)}})
					cancel()
					if errors.Is(err, client.ErrAccepted) {
						mu.Lock()
						accepted++
						mu.Unlock()
					} else {
						b.Errorf("send during the partition: %v (want send_accepted)", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		before := metricSum(b, rs["us"].http, "parley_outbox_forwarded_total")
		b.ResetTimer()
		regionsScript(b, "heal")
		healed := time.Now()
		var first, all time.Time
		for time.Since(healed) < 2*time.Minute {
			n := metricSum(b, rs["us"].http, "parley_outbox_forwarded_total") - before
			if n > 0 && first.IsZero() {
				first = time.Now()
			}
			if n >= float64(accepted) {
				all = time.Now()
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if all.IsZero() {
			b.Fatalf("the outbox did not forward %d records within 2 minutes of the heal", accepted)
		}
		stored := 0
		for time.Since(healed) < 2*time.Minute && stored < accepted {
			if stored > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			stored = 0
			for i := range users {
				for _, m := range history(b, bobs[i], convs[i]) {
					if strings.HasPrefix(m.GetText(), "drain ") {
						stored++
					}
				}
			}
		}
		done := time.Since(healed)
		b.StopTimer()
		b.ReportMetric(float64(first.Sub(healed).Milliseconds()), "ms-to-first-forward")
		b.ReportMetric(float64(accepted)/all.Sub(first).Seconds(), "forwards/s")
		b.ReportMetric(done.Seconds(), "s-to-all-stored")
		b.ReportMetric(float64(accepted), "accepted")
		if stored < accepted {
			b.Fatalf("%d of %d accepted sends stored", stored, accepted)
		}
	}
}
