package gateway

import (
	"context"
	"fmt"
	"time"

	"github.com/parleychat/parley/runtime/wire"
)

// tickInterval is the period of the shared ticker: a quarter heartbeat,
// within [10ms, 1s]. Idle timeouts and token expiry are enforced to within
// one tick.
func (g *Gateway) tickInterval() time.Duration {
	return min(max(g.cfg.Heartbeat/4, 10*time.Millisecond), time.Second)
}

// runTicker is the one timer of all sessions (no timer per connection).
func (g *Gateway) runTicker(ctx context.Context) {
	t := time.NewTicker(g.tickInterval())
	defer t.Stop()
	var all []*session
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			all = g.tick(now, all[:0])
		}
	}
}

// tick checks every session once: idle past IdleFactor×Heartbeat → close
// (heartbeat timeout); token expired → token_expired error, then close; a
// presence heartbeat due → hand it to the heartbeat worker. all is reused
// between ticks.
func (g *Gateway) tick(now time.Time, all []*session) []*session {
	all = g.hub.snapshot(all)
	ns := now.UnixNano()
	var due []*session
	for _, s := range all {
		if s.closing.Load() {
			continue
		}
		switch {
		case ns-s.conn.LastRead() > g.idle:
			s.close(wire.CloseHeartbeatTimeout, fmt.Sprintf("nothing received for %s", time.Duration(g.idle)), true)
		case s.expiry != 0 && ns >= s.expiry:
			s.expire()
		case ns >= s.nextBeat:
			due = append(due, s)
		}
	}
	if len(due) > 0 {
		select {
		case g.beats <- due:
			for _, s := range due {
				s.nextBeat = ns + int64(g.cfg.Heartbeat)
			}
		default:
			// The worker is still on the previous batch (slow registry):
			// these stay due and go with a later tick.
		}
	}
	g.members.sweep(now)
	g.dmPeers.sweep(now)
	clear(all)
	return all
}

// expire tells the client its token expired, then closes the session with
// wire.CloseTokenExpired: it reconnects only with a fresh token.
func (s *session) expire() {
	f := wire.ErrorFrame(0, wire.CodeTokenExpired, "the token expired; reconnect with a fresh token", 0)
	if s.closeWith(f, wire.CloseTokenExpired, "token expired", true) {
		s.g.countError(wire.CodeTokenExpired)
	}
}

// runHeartbeats refreshes sessions in the presence registry, off the
// ticker's goroutine so that a slow registry delays heartbeats, never idle
// checks.
func (g *Gateway) runHeartbeats(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case due := <-g.beats:
			for _, s := range due {
				if ctx.Err() != nil {
					return
				}
				g.heartbeat(ctx, s)
			}
		}
	}
}

func (g *Gateway) heartbeat(ctx context.Context, s *session) {
	s.presMu.Lock()
	defer s.presMu.Unlock()
	if s.closing.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.RequestTimeout)
	defer cancel()
	if err := g.ps.Heartbeat(ctx, s.presenceSession()); err != nil {
		g.log.Debug("presence heartbeat", "user", s.user, "session", s.id, "err", err)
	}
}
