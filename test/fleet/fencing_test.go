package fleet

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/client"
)

// owned returns the ingress partitions a chat process says it owns
// (GET /v1/chat/partitions), or nil when it does not answer.
func owned(p *proc) []int32 {
	hc := http.Client{Timeout: time.Second}
	resp, err := hc.Get(p.HTTP() + "/v1/chat/partitions")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var body struct {
		Partitions []int32 `json:"partitions"`
	}
	if json.NewDecoder(resp.Body).Decode(&body) != nil {
		return nil
	}
	return body.Partitions
}

// senders keeps devices sending to conv, one send at a time each, until
// stop; every send_ok goes to acks. A send that fails (the SDK already
// retries timeouts, unavailable and lost connections with the same
// client_msg_id) is an error.
type senders struct {
	acks ackLog
	stop atomic.Bool
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

func startSenders(t *testing.T, conv string, devs ...*device) *senders {
	s := &senders{}
	ctx := ctxT(t, 3*time.Minute)
	for _, d := range devs {
		s.wg.Go(func() {
			for i := 0; !s.stop.Load(); i++ {
				text := fmt.Sprintf("%s %d", d.name, i)
				ok, err := d.Send(ctx, conv, text)
				if err != nil {
					s.mu.Lock()
					s.errs = append(s.errs, fmt.Errorf("%s: %q: %w", d.name, text, err))
					s.mu.Unlock()
					return
				}
				s.acks.add(conv, text, ok)
			}
		})
	}
	return s
}

// finish stops the senders, waits for their last sends and fails on errors.
func (s *senders) finish(t *testing.T) {
	t.Helper()
	s.stop.Store(true)
	s.wg.Wait()
	for _, err := range s.errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
}

// TestFencing: the chat process owning a busy partition is paused (SIGSTOP)
// past its Kafka session timeout, at least 100 sends land through the new
// owner, then the old one resumes (SIGCONT) with its stale state; later the
// current owner is killed with -9 mid-stream. Every (conversation, seq,
// message_id) that any send_ok returned is in the store exactly as
// acknowledged, no text is stored twice and no seq is skipped.
func TestFencing(t *testing.T) {
	const partitions = 2
	c := newCluster(t, clusterOpts{ingress: partitions})
	chats := []*proc{c.chat(0), c.chat(1)}
	// Requests outlive the pause (the sequencer drops expired ones), so the
	// paused owner resumes with live records and its writes must be fenced.
	gw := c.gateway(0, "--request-timeout", "25s")
	ctx := ctxT(t, 3*time.Minute)
	waitFor(t, 30*time.Second, "both chat processes own a partition", func() bool {
		return len(owned(chats[0])) == 1 && len(owned(chats[1])) == 1
	})

	rest := client.NewREST(gw.HTTP(), c.token("alice", "phone"))
	group, err := rest.CreateGroup(ctx, "busy", []string{"bob", "carol", "dave"})
	if err != nil {
		t.Fatalf("create group: %v", err)
	}
	part := bus.PartitionFor([]byte(group), partitions)
	ownerOf := func() int {
		for i, p := range chats {
			if slices.Contains(owned(p), part) {
				return i
			}
		}
		return -1
	}
	var devs []*device
	// Twelve devices sending one message at a time each keep records in
	// flight at the owner most of the time, so the stale owner usually has
	// work to resume (its refused appends are logged below).
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		for _, dev := range []string{"phone", "laptop", "tablet"} {
			devs = append(devs, c.connect(gw.WS(), u, dev))
		}
	}
	s := startSenders(t, group, devs...)
	waitFor(t, 30*time.Second, "30 sends", func() bool { return s.acks.count() >= 30 })

	// Pause the owner past its session timeout.
	old := ownerOf()
	if old < 0 {
		t.Fatalf("no chat process owns partition %d", part)
	}
	next := 1 - old
	chats[old].signal(syscall.SIGSTOP)
	stoppedAt := time.Now()
	t.Logf("SIGSTOP %s (owner of partition %d) after %d sends", chats[old].name, part, s.acks.count())
	waitFor(t, 40*time.Second, chats[next].name+" takes partition over", func() bool {
		return slices.Contains(owned(chats[next]), part)
	})
	takeover := s.acks.count()
	t.Logf("%s owns partition %d after %s", chats[next].name, part, time.Since(stoppedAt).Round(100*time.Millisecond))
	waitFor(t, 40*time.Second, "100 sends through the new owner", func() bool { return s.acks.count() >= takeover+100 })

	// Resume the stale owner: whatever it had in flight is fenced by the
	// conditional append.
	chats[old].signal(syscall.SIGCONT)
	t.Logf("SIGCONT %s after %s, %d sends", chats[old].name, time.Since(stoppedAt).Round(100*time.Millisecond), s.acks.count())
	resumed := s.acks.count()
	waitFor(t, 40*time.Second, "50 more sends", func() bool { return s.acks.count() >= resumed+50 })
	// After the old member rejoins, either process may own the partition.
	waitFor(t, 30*time.Second, "one owner", func() bool { return ownerOf() >= 0 })

	// Kill the current owner mid-stream; the other takes over after the
	// session timeout.
	cur := ownerOf()
	chats[cur].signal(syscall.SIGKILL)
	<-chats[cur].exited
	killedAt := time.Now()
	t.Logf("kill -9 %s (owner of partition %d) after %d sends", chats[cur].name, part, s.acks.count())
	other := chats[1-cur]
	waitFor(t, 40*time.Second, other.name+" takes partition over", func() bool {
		return slices.Contains(owned(other), part)
	})
	afterKill := s.acks.count()
	t.Logf("%s owns partition %d after %s", other.name, part, time.Since(killedAt).Round(100*time.Millisecond))
	waitFor(t, 40*time.Second, "50 sends after the kill", func() bool { return s.acks.count() >= afterKill+50 })
	s.finish(t)

	for _, p := range chats {
		// Not asserted (it depends on what was in flight at SIGSTOP), but
		// it shows whether the stale owner's writes were refused.
		t.Logf("%s: %d conditional appends refused (seq taken)", p.name, p.count("seq taken"))
		if os.Getenv("FLEET_DEBUG") != "" {
			t.Logf("%s log:\n%s", p.name, p.tail(80))
		}
	}
	head := c.checkAcked(group, s.acks.all())
	if got := uint64(s.acks.count()) + 1; head != got {
		// created + one stored message per send_ok'd send: anything else
		// is a message stored without any send_ok (or twice).
		t.Fatalf("store head %d, want %d (group created + %d acknowledged sends)", head, got, s.acks.count())
	}
}
