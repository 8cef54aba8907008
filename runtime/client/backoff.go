package client

import (
	"math/rand/v2"
	"time"
)

// Backoff defaults.
const (
	DefaultBackoffMin = 250 * time.Millisecond
	DefaultBackoffMax = 30 * time.Second
)

// Backoff bounds the jittered exponential delay between reconnect attempts
// (and between retries of a send the server could not take).
type Backoff struct {
	// Min is the nominal delay of the first attempt, default 250ms.
	Min time.Duration
	// Max caps the nominal delay, default 30s.
	Max time.Duration
}

func (b Backoff) withDefaults() Backoff {
	if b.Min <= 0 {
		b.Min = DefaultBackoffMin
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoffMax
	}
	if b.Max < b.Min {
		b.Max = b.Min
	}
	return b
}

// Delay returns the wait before attempt n (1-based; n < 1 counts as 1): a
// uniformly random duration in [d/2, d] where d = min(Max, Min·2^(n-1)).
// The random half spreads a crowd of clients that lost their gateway at the
// same instant; the fixed half keeps each client from retrying at once.
func (b Backoff) Delay(attempt int) time.Duration {
	b = b.withDefaults()
	if attempt < 1 {
		attempt = 1
	}
	d := b.Min
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(d-half)+1))
}
