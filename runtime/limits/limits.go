// Package limits enforces per-user rates where requests enter (gateway and
// REST), with a token bucket per user (golang.org/x/time/rate).
package limits

import (
	"hash/maphash"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults from the issue: 20 sends/s with a burst of 40 per user; reads
// (sync, history, inbox, receipts) 20/s with a burst of 100 (issue 14: a
// client catching up opens many conversations at once).
const (
	DefaultRate      = 20
	DefaultBurst     = 40
	DefaultReadRate  = 20
	DefaultReadBurst = 100
)

// shardCount is the number of independently locked bucket maps. Every send
// of every connection calls Allow; with one mutex, a holder descheduled on
// a busy machine made hundreds of session goroutines queue behind it (a
// mutex profile of `parley bench dm` showed Allow as the most contended lock
// of the server).
const shardCount = 32

// Users is a token bucket per user. Idle buckets are forgotten after they
// would have refilled, so memory follows active users only.
type Users struct {
	limit  rate.Limit
	burst  int
	seed   maphash.Seed
	shards [shardCount]shard
}

// shard holds the buckets of the users whose id hashes to it.
type shard struct {
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
	u := &Users{limit: l, burst: burst, seed: maphash.MakeSeed()}
	now := time.Now()
	for i := range u.shards {
		u.shards[i] = shard{buckets: make(map[string]*rate.Limiter), swept: now}
	}
	return u
}

// Allow takes one token from user's bucket. When none is left it returns
// false and how long until one is, for retry_after_ms.
func (u *Users) Allow(user string) (ok bool, retryAfter time.Duration) {
	now := time.Now()
	sh := &u.shards[maphash.String(u.seed, user)%shardCount]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if now.Sub(sh.swept) > time.Minute {
		sh.sweep(now, u.burst)
	}
	b := sh.buckets[user]
	if b == nil {
		b = rate.NewLimiter(u.limit, u.burst)
		sh.buckets[user] = b
	}
	r := b.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep drops full buckets: a new bucket starts full, so forgetting one is
// unobservable. sh.mu is held.
func (sh *shard) sweep(now time.Time, burst int) {
	for user, b := range sh.buckets {
		if b.TokensAt(now) >= float64(burst) {
			delete(sh.buckets, user)
		}
	}
	sh.swept = now
}
