package fleet

import (
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
)

// TestGatewayKilled: kill -9 a gateway while messages flow. Its clients
// (behind a load balancer, as behind a Service) reconnect to the other
// gateway, sync, and end with every acknowledged message, none lost, none
// twice, none out of order.
func TestGatewayKilled(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	c.chat(0)
	g0, g1 := c.gateway(0), c.gateway(1)
	front := newLB(t, g0.Addr, g1.Addr) // gateway 0 first, while it lives
	ctx := ctxT(t, 90*time.Second)

	rest := client.NewREST(g1.HTTP(), c.token("bob", "phone"))
	group, err := rest.CreateGroup(ctx, "failover", []string{"alice", "carol"})
	if err != nil {
		t.Fatalf("create group: %v", err)
	}
	alice := c.connect(front.URL(), "alice", "phone") // on gateway 0
	carol := c.connect(front.URL(), "carol", "phone") // on gateway 0, only reads
	bob := c.connect(g1.WS(), "bob", "phone")         // on gateway 1 throughout
	if gw := alice.Welcome().GetGatewayId(); gw != "gw-0" {
		t.Fatalf("alice is on %s, want gw-0", gw)
	}

	const perSender = 60
	var acks ackLog
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, d := range []*device{alice, bob} {
		wg.Go(func() {
			for i := range perSender {
				text := fmt.Sprintf("%s %d", d.name, i)
				ok, err := d.Send(ctx, group, text)
				if err != nil {
					errs <- fmt.Errorf("%s: send %d: %w", d.name, i, err)
					return
				}
				acks.add(group, text, ok)
			}
		})
	}
	waitFor(t, 30*time.Second, "20 messages sent", func() bool { return acks.count() >= 20 })
	g0.signal(syscall.SIGKILL)
	<-g0.exited
	t.Logf("killed gw-0 after %d send_oks", acks.count())
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	head := c.checkAcked(group, acks.all())
	if want := uint64(1 + 2*perSender); head != want {
		t.Fatalf("group head %d, want %d", head, want)
	}
	stored := c.storedLog(group)
	for _, d := range []*device{alice, carol, bob} {
		waitFor(t, 30*time.Second, d.name+" has every message", func() bool { return d.hasSeq(group, head) })
		checkLog(t, d, group, head, stored)
	}
	for _, d := range []*device{alice, carol} {
		if d.Reconnects() == 0 {
			t.Fatalf("%s did not reconnect", d.name)
		}
		if gw := d.Welcome().GetGatewayId(); gw != "gw-1" {
			t.Fatalf("%s is on %s after the kill, want gw-1", d.name, gw)
		}
	}
}
