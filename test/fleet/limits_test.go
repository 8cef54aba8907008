package fleet

import (
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/chat/rules"
	"github.com/parleychat/parley/runtime/wire"
)

// TestSendBudgetAcrossGateways (issue 14): a user's send budget holds across
// the gateways of a region (kept in Redis, limits.Shared): with a burst of
// 5 and almost no refill, alice's two devices on two gateways get 5 sends
// together, not 5 each; the rest are rate_limited with a retry hint.
func TestSendBudgetAcrossGateways(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	c.chat(0)
	c.presence(0)
	budget := []string{"--send-rate", "0.01", "--send-burst", "5"}
	g0, g1 := c.gateway(0, budget...), c.gateway(1, budget...)
	ctx := ctxT(t, 90*time.Second)
	phone := c.connect(g0.WS(), "alice", "phone")
	laptop := c.connect(g1.WS(), "alice", "laptop")
	dm := rules.DMID("alice", "bob")

	ok, limited := 0, 0
	for i := range 10 {
		d := phone
		if i%2 == 1 {
			d = laptop
		}
		_, err := d.Send(ctx, dm, "hello")
		switch we := wire.AsError(err); {
		case err == nil:
			ok++
		case we.Code == wire.CodeRateLimited:
			limited++
			if we.RetryAfterMs <= 0 {
				t.Errorf("rate_limited without a retry hint: %v", we)
			}
		default:
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if ok != 5 || limited != 5 {
		t.Fatalf("two gateways allowed %d sends and refused %d, want 5 and 5 (one budget)", ok, limited)
	}
}
