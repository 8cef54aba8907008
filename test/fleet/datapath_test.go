package fleet

import (
	"fmt"
	"io"
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

// TestAcrossGateways: 2 gateways, 2 chat processes and 1 presence process.
// Alice on gateway 0 (and a second device on gateway 1) and bob on gateway 1
// chat; a group with members spread over both gateways gets every message on
// every online device, in order, exactly once; presence changes cross
// gateways through the presence role.
func TestAcrossGateways(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	chat0, chat1 := c.chat(0), c.chat(1)
	c.presence(0)
	g0, g1 := c.gateway(0), c.gateway(1)
	ctx := ctxT(t, 90*time.Second)

	// The DM exists before anyone connects: gateways cache a user's DM
	// peers for a few seconds (presence pushes), from the first change.
	dm := rules.DMID("alice", "bob")
	if _, err := client.NewREST(g0.HTTP(), c.token("alice", "phone")).Send(ctx, dm, client.NewClientMsgID(), "hi"); err != nil {
		t.Fatalf("first DM: %v", err)
	}

	alice := c.connect(g0.WS(), "alice", "phone")
	alice2 := c.connect(g1.WS(), "alice", "laptop")
	bob := c.connect(g1.WS(), "bob", "phone")
	carol := c.connect(g0.WS(), "carol", "phone")
	dave := c.connect(g1.WS(), "dave", "phone")

	// send sends n messages from each device concurrently and records the
	// send_oks.
	send := func(conv string, n int, devs ...*device) *ackLog {
		t.Helper()
		var acks ackLog
		var wg sync.WaitGroup
		errs := make(chan error, len(devs))
		for _, d := range devs {
			wg.Go(func() {
				for i := range n {
					text := fmt.Sprintf("%s %d", d.name, i)
					ok, err := d.Send(ctx, conv, text)
					if err != nil {
						errs <- fmt.Errorf("%s: %w", d.name, err)
						return
					}
					acks.add(conv, text, ok)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		return &acks
	}

	// The DM across gateways, both sides sending at once.
	acks := send(dm, 15, alice, bob)
	head := c.checkAcked(dm, acks.all())
	for _, d := range []*device{alice, alice2, bob} {
		waitFor(t, 20*time.Second, d.name+" has the whole DM", func() bool { return d.hasSeq(dm, head) })
	}
	stored := c.storedLog(dm)
	for _, d := range []*device{alice, alice2, bob} {
		checkLog(t, d, dm, head, stored)
		// Connected after "hi" (seq 2): each device starts at the head.
		if got := d.Messages(dm)[0].Seq; got != 3 {
			t.Fatalf("%s: DM starts at seq %d, want 3", d.name, got)
		}
	}

	// A group spread over both gateways, every device sending at once.
	rest := client.NewREST(g0.HTTP(), c.token("alice", "phone"))
	group, err := rest.CreateGroup(ctx, "team", []string{"bob", "carol", "dave"})
	if err != nil {
		t.Fatalf("create group: %v", err)
	}
	members := []*device{alice, alice2, bob, carol, dave}
	acks = send(group, 10, members...)
	head = c.checkAcked(group, acks.all())
	if want := uint64(1 + 10*len(members)); head != want {
		t.Fatalf("group head %d, want %d (created + %d sends)", head, want, 10*len(members))
	}
	for _, d := range members {
		waitFor(t, 20*time.Second, d.name+" has the whole group", func() bool { return d.hasSeq(group, head) })
	}
	stored = c.storedLog(group)
	for _, d := range members {
		checkLog(t, d, group, head, stored)
		if got := d.Messages(group)[0].Seq; got != 1 {
			t.Fatalf("%s: group starts at seq %d, want 1", d.name, got)
		}
	}

	// The data path is observable stage by stage (issue 11): the chat
	// processes appended, published deliveries and consumed ingress
	// records, and counted their Kafka requests and conditional batches;
	// the gateways published ingress, consumed deliveries and wrote to
	// sockets. 81 messages were sent: "hi", 30 in the DM, 50 in the group.
	sum := func(name string, ps ...*proc) float64 {
		var n float64
		for _, p := range ps {
			n += scrape(t, p, name)
		}
		return n
	}
	for _, m := range []struct {
		name string
		ps   []*proc
		min  float64
	}{
		{`parley_stage_seconds_count{stage="ingress_publish"}`, []*proc{g0, g1}, 80},
		{`parley_stage_seconds_count{stage="ingress_consume"}`, []*proc{chat0, chat1}, 80},
		{`parley_stage_seconds_count{stage="append"}`, []*proc{chat0, chat1}, 1},
		{`parley_stage_seconds_count{stage="deliver_publish"}`, []*proc{chat0, chat1}, 1},
		{`parley_stage_seconds_count{stage="deliver_consume"}`, []*proc{g0, g1}, 1},
		{`parley_stage_seconds_count{stage="socket_write"}`, []*proc{g0, g1}, 80},
		{`parley_kafka_requests_total{api="Produce"}`, []*proc{chat0, chat1, g0, g1}, 2},
		{`parley_kafka_requests_total{api="Fetch"}`, []*proc{chat0, chat1, g0, g1}, 2},
		{`parley_cassandra_statements_total{kind="batch of conditional insert messages"}`, []*proc{chat0, chat1}, 1},
	} {
		if got := sum(m.name, m.ps...); got < m.min {
			t.Errorf("%s = %v over %d processes, want at least %v", m.name, got, len(m.ps), m.min)
		}
	}
	// Every stored message went through one conditional append: no more
	// appends than messages (group commit may fold several into one).
	if appends, sent := sum(`parley_stage_seconds_count{stage="append"}`, chat0, chat1), sum(`parley_messages_sent_total{kind="text"}`, chat0, chat1); appends > sent+2 || sent != 81 {
		t.Errorf("%v appends for %v stored text messages, want 81 messages and at most one append each (+2 for the group's and the DM's creation)", appends, sent)
	}

	// Presence crosses gateways: carol (gateway 0) follows dave (gateway 1).
	if err := carol.SubscribePresence(ctx, []string{"dave"}); err != nil {
		t.Fatal(err)
	}
	online, offline := parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE, parleyv1.PresenceStatus_PRESENCE_STATUS_OFFLINE
	waitFor(t, 10*time.Second, "carol sees dave online", func() bool {
		p := carol.lastPresence("dave")
		return p != nil && p.Status == online
	})
	_ = dave.Close()
	waitFor(t, 15*time.Second, "carol sees dave go offline (after the grace period)", func() bool {
		p := carol.lastPresence("dave")
		return p != nil && p.Status == offline
	})
	// DM peers get presence without subscribing: alice's devices leave, bob
	// (gateway 1) sees her offline; she comes back on gateway 0, he sees her
	// online.
	_ = alice.Close()
	_ = alice2.Close()
	waitFor(t, 15*time.Second, "bob sees alice offline", func() bool {
		p := bob.lastPresence("alice")
		return p != nil && p.Status == offline
	})
	c.connect(g0.WS(), "alice", "tablet")
	waitFor(t, 15*time.Second, "bob sees alice online again", func() bool {
		p := bob.lastPresence("alice")
		return p != nil && p.Status == online
	})
}

// scrape returns the value of one sample of p's /metrics, by its exact name
// and labels as Prometheus' text format writes them; 0 when absent.
func scrape(t *testing.T, p *proc, sample string) float64 {
	t.Helper()
	resp, err := http.Get(p.HTTP() + "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", p.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s /metrics: %v", p.name, err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s /metrics: %q: %v", p.name, line, err)
			}
			return f
		}
	}
	return 0
}
