package gateway

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// hubShards spreads the hub's locks so that connects, disconnects and
// fan-out on different users rarely contend.
const hubShards = 64

// hub indexes the local sessions by user, and presence subscriptions by the
// user subscribed to. Lock order: a hub shard, then a session's mu (fan-out
// queues while holding a shard's read lock); never the reverse.
type hub struct {
	seed   maphash.Seed
	shards [hubShards]hubShard
	count  atomic.Int64
}

type hubShard struct {
	mu sync.RWMutex
	// users maps a user to its sessions on this gateway (its devices).
	users map[string][]*session
	// subs maps a user to the sessions subscribed to its presence.
	subs map[string][]*session
}

func (h *hub) init() {
	h.seed = maphash.MakeSeed()
	for i := range h.shards {
		h.shards[i].users = make(map[string][]*session)
		h.shards[i].subs = make(map[string][]*session)
	}
}

func (h *hub) shard(user string) *hubShard {
	return &h.shards[maphash.String(h.seed, user)%hubShards]
}

func (h *hub) add(s *session) {
	sh := h.shard(s.user)
	sh.mu.Lock()
	sh.users[s.user] = append(sh.users[s.user], s)
	sh.mu.Unlock()
	h.count.Add(1)
}

// remove drops s and its presence subscriptions. Called once, by the
// session's reader.
func (h *hub) remove(s *session) {
	sh := h.shard(s.user)
	sh.mu.Lock()
	removed := without(sh.users, s.user, s)
	sh.mu.Unlock()
	if removed {
		h.count.Add(-1)
	}
	h.setSubs(s, nil)
}

// without removes s from m[key], deleting the key when no session is left.
func without(m map[string][]*session, key string, s *session) bool {
	list := m[key]
	for i, x := range list {
		if x == s {
			last := len(list) - 1
			list[i] = list[last]
			list[last] = nil
			if last == 0 {
				delete(m, key)
			} else {
				m[key] = list[:last]
			}
			return true
		}
	}
	return false
}

// sessions calls fn for each local session of user, under the shard's read
// lock: fn must not block (queueing a frame does not).
func (h *hub) sessions(user string, fn func(*session)) {
	sh := h.shard(user)
	sh.mu.RLock()
	for _, s := range sh.users[user] {
		fn(s)
	}
	sh.mu.RUnlock()
}

// subscribers calls fn for each local session subscribed to user's
// presence, with sessions' rules.
func (h *hub) subscribers(user string, fn func(*session)) {
	sh := h.shard(user)
	sh.mu.RLock()
	for _, s := range sh.subs[user] {
		fn(s)
	}
	sh.mu.RUnlock()
}

// setSubs replaces s's presence subscriptions with users (deduplicated by
// the caller). Called by the session's reader only.
func (h *hub) setSubs(s *session, users []string) {
	for _, u := range s.subs {
		sh := h.shard(u)
		sh.mu.Lock()
		without(sh.subs, u, s)
		sh.mu.Unlock()
	}
	s.subs = users
	for _, u := range users {
		sh := h.shard(u)
		sh.mu.Lock()
		sh.subs[u] = append(sh.subs[u], s)
		sh.mu.Unlock()
	}
}

// snapshot appends every session to dst.
func (h *hub) snapshot(dst []*session) []*session {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.RLock()
		for _, list := range sh.users {
			dst = append(dst, list...)
		}
		sh.mu.RUnlock()
	}
	return dst
}
