package pebble

import "sync"

// keyLocks hands out one mutex per key (a conversation id), alive only
// while it is held or waited for. Unlike a fixed set of striped mutexes,
// two keys never share one: a lock held across a synced commit (Append,
// CreateConversation) holds up only its own conversation, so concurrent
// appends of different conversations all reach Pebble's commit pipeline
// and share its fsyncs. (Striped, the appends of the conversations of one
// stripe queued behind each other's fsync: 93% of the blocked time in
// `parley bench dm`, docs/benchmarks.md.)
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	sync.Mutex
	refs int // holders and waiters; guarded by keyLocks.mu
}

// lock locks key and returns its unlock.
func (k *keyLocks) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[string]*keyLock)
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
