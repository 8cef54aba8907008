package gateway

import (
	"cmp"
	"context"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"time"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// DrainReason is the reason of the Reconnect frames a drain sends.
const DrainReason = "drain"

func reconnectFrame(after time.Duration) *parleyv1.ServerFrame {
	return &parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Reconnect{Reconnect: &parleyv1.Reconnect{
		AfterMs: uint32(after.Milliseconds()), Reason: DrainReason}}}
}

// Drain moves every client to other gateways, spread over window so they do
// not reconnect all at once. Draining() is true from the start (new upgrades
// get 503). Each session gets Reconnect{after_ms: d, reason "drain"} with d
// random in [0, window), and is closed with wire.CloseDrain at d (after its
// queued frames). Drain returns nil once every session is gone; if ctx ends
// first, it drops the remaining connections and returns an error wrapping
// ctx's.
func (g *Gateway) Drain(ctx context.Context, window time.Duration) error {
	g.draining.Store(true)
	type plan struct {
		s  *session
		at time.Duration
	}
	sessions := g.hub.snapshot(nil)
	plans := make([]plan, 0, len(sessions))
	for _, s := range sessions {
		if !s.movedOn.CompareAndSwap(false, true) {
			continue // already told to reconnect (by serve or an earlier drain)
		}
		var d time.Duration
		if window > 0 {
			d = mrand.N(window)
		}
		plans = append(plans, plan{s, d})
		s.send(reconnectFrame(d))
	}
	slices.SortFunc(plans, func(a, b plan) int { return cmp.Compare(a.at, b.at) })
	g.log.Info("draining", "sessions", len(plans), "window", window)

	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for _, p := range plans {
		if wait := p.at - time.Since(start); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return g.forceClose(ctx)
			case <-timer.C:
			}
		}
		p.s.close(wire.CloseDrain, DrainReason, true)
	}
	// Wait for the sessions to go, closing any that upgraded while Drain
	// began (close is idempotent).
	for g.Connections() > 0 {
		for _, s := range g.hub.snapshot(nil) {
			s.close(wire.CloseDrain, DrainReason, true)
		}
		select {
		case <-ctx.Done():
			return g.forceClose(ctx)
		case <-g.gone:
		}
	}
	return nil
}

// forceClose drops every remaining connection without a handshake.
func (g *Gateway) forceClose(ctx context.Context) error {
	left := g.hub.snapshot(nil)
	for _, s := range left {
		s.kill()
	}
	if len(left) == 0 {
		return nil
	}
	return fmt.Errorf("drain: %d sessions still open, dropped: %w", len(left), context.Cause(ctx))
}
