package gateway

import (
	"sync"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// maxQueuedPresence bounds the broadcast presence changes waiting for
// PresenceChanged; beyond it the oldest are dropped (presence is best effort
// and a later change supersedes an earlier one).
const maxQueuedPresence = 10_000

// presenceFanout runs PresenceChanged off the deliver partition's goroutine:
// it may wait on the store for DM peers, and messages must not wait behind
// it. Its goroutine exists only while changes are queued.
type presenceFanout struct {
	mu      sync.Mutex
	queue   []*parleyv1.Presence
	running bool
}

// queuePresence queues a broadcast presence change for PresenceChanged.
func (g *Gateway) queuePresence(p *parleyv1.Presence) {
	if g.hub.count.Load() == 0 {
		return
	}
	f := &g.fanout
	f.mu.Lock()
	if len(f.queue) >= maxQueuedPresence {
		f.queue = f.queue[1:]
	}
	f.queue = append(f.queue, p)
	start := !f.running
	f.running = true
	f.mu.Unlock()
	if start {
		go g.runPresenceFanout(f)
	}
}

func (g *Gateway) runPresenceFanout(f *presenceFanout) {
	for {
		f.mu.Lock()
		if len(f.queue) == 0 {
			f.queue = nil
			f.running = false
			f.mu.Unlock()
			return
		}
		p := f.queue[0]
		f.queue[0] = nil
		f.queue = f.queue[1:]
		f.mu.Unlock()
		g.PresenceChanged(p)
	}
}
