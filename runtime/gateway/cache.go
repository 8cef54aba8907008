package gateway

import (
	"sync"
	"time"
)

// ttlCache is a small map whose entries expire after ttl. It holds at most
// max entries; when full it drops the expired ones, and if that is not
// enough, everything (the caches it backs are cheap to refill).
type ttlCache[V any] struct {
	ttl time.Duration
	max int

	mu    sync.Mutex
	m     map[string]ttlEntry[V]
	swept time.Time
}

type ttlEntry[V any] struct {
	v       V
	expires time.Time
}

func newTTLCache[V any](ttl time.Duration, max int) *ttlCache[V] {
	return &ttlCache[V]{ttl: ttl, max: max, m: make(map[string]ttlEntry[V])}
}

func (c *ttlCache[V]) get(key string, now time.Time) (V, bool) {
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if !ok || now.After(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *ttlCache[V]) put(key string, v V, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		c.sweepLocked(now)
		if len(c.m) >= c.max {
			clear(c.m)
		}
	}
	c.m[key] = ttlEntry[V]{v: v, expires: now.Add(c.ttl)}
}

// drop forgets key's entry.
func (c *ttlCache[V]) drop(key string) {
	c.mu.Lock()
	delete(c.m, key)
	c.mu.Unlock()
}

// sweep drops expired entries, at most once per ttl.
func (c *ttlCache[V]) sweep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.swept) >= c.ttl {
		c.sweepLocked(now)
	}
}

func (c *ttlCache[V]) sweepLocked(now time.Time) {
	for k, e := range c.m {
		if now.After(e.expires) {
			delete(c.m, k)
		}
	}
	c.swept = now
}
