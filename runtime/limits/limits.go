// Package limits enforces per-user rates where requests enter (gateway and
// REST), with a token bucket per user (golang.org/x/time/rate).
package limits

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults from the issue: 20 sends/s with a burst of 40 per user.
const (
	DefaultRate  = 20
	DefaultBurst = 40
)

// Users is a token bucket per user. Idle buckets are forgotten after they
// would have refilled, so memory follows active users only.
type Users struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	swept   time.Time
}

// NewUsers returns per-user buckets of perSecond tokens per second and burst
// tokens at most. perSecond <= 0 disables limiting.
func NewUsers(perSecond float64, burst int) *Users {
	l := rate.Limit(perSecond)
	if perSecond <= 0 {
		l = rate.Inf
	}
	if burst < 1 {
		burst = 1
	}
	return &Users{limit: l, burst: burst, buckets: make(map[string]*rate.Limiter), swept: time.Now()}
}

// Allow takes one token from user's bucket. When none is left it returns
// false and how long until one is, for retry_after_ms.
func (u *Users) Allow(user string) (ok bool, retryAfter time.Duration) {
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if now.Sub(u.swept) > time.Minute {
		u.sweep(now)
	}
	b := u.buckets[user]
	if b == nil {
		b = rate.NewLimiter(u.limit, u.burst)
		u.buckets[user] = b
	}
	r := b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep drops full buckets: a new bucket starts full, so forgetting one is
// unobservable.
func (u *Users) sweep(now time.Time) {
	for user, b := range u.buckets {
		if b.TokensAt(now) >= float64(u.burst) {
			delete(u.buckets, user)
		}
	}
	u.swept = now
}
