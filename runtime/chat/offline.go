package chat

import (
	"context"

	"github.com/parleychat/parley/runtime/presence"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// OnOffline sets fn to receive, for every routed delivery, the recipients
// that have no live session (the offline-push pipeline, runtime/push). fn
// is called on the publishing goroutine after the registry lookup, so it
// must not block (queue and return). It is not called while the registry
// fails: who is offline is unknown then, and degraded routing sends to
// every gateway. Set it before the router is used.
func (r *Router) OnOffline(fn func(ctx context.Context, users []string, d *parleyv1.Delivery)) {
	r.offline = fn
}

// notifyOffline passes g's users without a session to the offline hook.
func (r *Router) notifyOffline(ctx context.Context, g deliveryGroup, sessions map[string][]presence.Session) {
	var off []string
	for _, u := range g.users {
		if len(sessions[u]) == 0 {
			off = append(off, u)
		}
	}
	if len(off) == 0 {
		return
	}
	for _, d := range g.ds {
		r.offline(ctx, off, d)
	}
}
