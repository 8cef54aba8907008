package gateway

import (
	"context"
	"fmt"
	"time"

	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// handleMute stores the session user's mute (or unmute) of a conversation
// and answers a mute frame with the setting as stored.
func (g *Gateway) handleMute(s *session, id uint64, m *parleyv1.Mute) {
	g.handlePref(s, id, rules.ValidateMute(m, time.Now().UnixMilli()), func(ctx context.Context) (*parleyv1.ServerFrame, error) {
		got, err := g.q.SetMute(ctx, s.user, m)
		return &parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Mute{Mute: got}}, err
	})
}

// handleBlock stores the session user's block (or unblock) of another user
// and answers a block frame with the setting as stored. The blocked user's
// devices are told at once: the blocker's presence becomes unknown (and
// after an unblock is sent again), and this gateway's cached presence
// audience of the blocker is dropped. Other gateways' caches expire within
// dmPeersTTL.
func (g *Gateway) handleBlock(s *session, id uint64, b *parleyv1.Block) {
	var got *parleyv1.Block
	g.handlePref(s, id, rules.ValidateBlock(s.user, b), func(ctx context.Context) (*parleyv1.ServerFrame, error) {
		var err error
		if got, err = g.q.SetBlock(ctx, s.user, b); err == nil {
			g.dmPeers.drop(s.user)
			defer g.tellBlocked(ctx, s.user, got)
		}
		return &parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Block{Block: got}}, err
	})
}

// handlePref answers a mute or block: invalid (the request's own check)
// at once, then like a change it spends a send token, and set stores it
// and builds the answer.
func (g *Gateway) handlePref(s *session, id uint64, invalid error, set func(ctx context.Context) (*parleyv1.ServerFrame, error)) {
	if invalid != nil {
		s.sendError(id, invalid)
		return
	}
	if ok, wait := g.sendRate.Allow(s.user); !ok {
		s.sendError(id, wire.RateLimited(fmt.Sprintf("over %g sends per second (mutes and blocks count as sends)", g.cfg.SendRate), wait))
		return
	}
	ctx, cancel := g.requestCtx()
	defer cancel()
	f, err := set(ctx)
	if err != nil {
		s.sendError(id, err)
		return
	}
	s.send(f)
}

// tellBlocked pushes to the user b names the blocker's presence as it now
// stands for them: unknown after a block; after an unblock the current
// presence, when they may see it.
func (g *Gateway) tellBlocked(ctx context.Context, blocker string, b *parleyv1.Block) {
	other := b.GetUserId()
	p := &parleyv1.Presence{UserId: blocker, Status: parleyv1.PresenceStatus_PRESENCE_STATUS_UNKNOWN}
	if b.GetRemove() {
		if visible, err := g.q.PresenceVisible(ctx, other, []string{blocker}); err != nil || (!visible[blocker] && !g.cfg.PresencePublic) {
			return // still a stranger: nothing to tell
		}
		if ps, err := g.ps.Get(ctx, []string{blocker}); err == nil && ps[blocker] != nil {
			p = ps[blocker]
		}
	}
	d := &parleyv1.Delivery{Body: &parleyv1.Delivery_Presence{Presence: p}}
	if err := g.r.Deliver(ctx, []string{other}, d); err != nil {
		g.log.Debug("block: presence to the blocked user", "err", err)
	}
}
