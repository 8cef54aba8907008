package limits

import (
	"fmt"
	"testing"
)

// TestAllowBurstPerUser checks that each user has its own bucket of burst
// tokens, whichever shard the user falls in.
func TestAllowBurstPerUser(t *testing.T) {
	u := NewUsers(0.001, 3) // refills far slower than the test runs
	for i := range 100 {
		user := fmt.Sprintf("u%d", i)
		for n := range 3 {
			if ok, _ := u.Allow(user); !ok {
				t.Fatalf("%s: send %d refused within the burst", user, n+1)
			}
		}
		ok, retry := u.Allow(user)
		if ok || retry <= 0 {
			t.Fatalf("%s: send past the burst = (%v, %v), want refused with a retry delay", user, ok, retry)
		}
	}
}

// TestAllowUnlimited checks that a rate <= 0 never refuses.
func TestAllowUnlimited(t *testing.T) {
	u := NewUsers(0, 1)
	for range 1000 {
		if ok, _ := u.Allow("u"); !ok {
			t.Fatal("refused with limiting disabled")
		}
	}
}
