package gateway

import (
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/metrics"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// onDeliverRecord handles one record of this gateway's deliver partition,
// on the bus's goroutine: replies go to the waiting requests, deliveries to
// the local sessions of their users.
func (g *Gateway) onDeliverRecord(rec bus.Record) {
	g.m.ObserveSince(metrics.StageDeliverConsume, rec.Time)
	var dr parleyv1.DeliverRecord
	if err := proto.Unmarshal(rec.Value, &dr); err != nil {
		g.log.Warn("undecodable deliver record", "partition", rec.Partition, "offset", rec.Offset, "err", err)
		return
	}
	for _, rep := range dr.Replies {
		g.cc.HandleReply(rep)
	}
	for _, d := range dr.Deliveries {
		if p := d.GetPresence(); p != nil && len(d.GetUserIds()) == 0 {
			// A change broadcast by the presence role (distributed mode):
			// for the local subscribers and DM peers of its user.
			g.queuePresence(p)
			continue
		}
		g.deliver(d)
	}
}

// deliver pushes d to every local session of d's users except
// d.except_session_id, encoding the frame once per subprotocol. It returns
// the number of sessions the frame was queued on.
func (g *Gateway) deliver(d *parleyv1.Delivery) int {
	pf := pushFrame{frame: &parleyv1.ServerFrame{}, batched: true}
	var msg *parleyv1.Message
	switch b := d.GetBody().(type) {
	case *parleyv1.Delivery_Message:
		msg = b.Message
		pf.frame.Body = &parleyv1.ServerFrame_Message{Message: b.Message}
	case *parleyv1.Delivery_Receipt:
		pf.frame.Body = &parleyv1.ServerFrame_Receipt{Receipt: b.Receipt}
	case *parleyv1.Delivery_Typing:
		pf.frame.Body = &parleyv1.ServerFrame_Typing{Typing: b.Typing}
		pf.droppable = true
	case *parleyv1.Delivery_Presence:
		pf.frame.Body = &parleyv1.ServerFrame_Presence{Presence: b.Presence}
		pf.droppable = true
	default:
		return 0
	}
	except := d.GetExceptSessionId()
	n := 0
	for _, u := range d.GetUserIds() {
		g.hub.sessions(u, func(s *session) {
			if s.id != except && pf.push(g, s) {
				n++
			}
		})
	}
	pf.startWriters()
	if msg != nil && n > 0 {
		g.m.MessagesDelivered.Add(float64(n))
		if msg.GetCreatedAt() > 0 {
			g.m.SendToDeliver.Observe(max(time.Since(time.UnixMilli(msg.GetCreatedAt())).Seconds(), 0))
		}
	}
	return n
}

// PresenceChanged pushes p to the local sessions subscribed to p's user
// (presence_sub) and to the local sessions of the user's DM peers, once per
// session; never to every member of every shared group (docs/design.md §4).
// It may query the store for the DM peers (cached briefly), so call it from
// a goroutine that can wait for that, not under a hot lock.
func (g *Gateway) PresenceChanged(p *parleyv1.Presence) {
	if p.GetUserId() == "" || g.hub.count.Load() == 0 {
		return
	}
	pf := pushFrame{frame: &parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Presence{Presence: p}}, droppable: true, batched: true}
	var pushed map[*session]struct{}
	aud := g.audienceOf(p.UserId)
	g.hub.subscribers(p.UserId, func(s *session) {
		if aud.hidden[s.user] {
			return // subscribed before the user blocked it
		}
		if pf.push(g, s) {
			if pushed == nil {
				pushed = make(map[*session]struct{})
			}
			pushed[s] = struct{}{}
		}
	})
	for _, peer := range aud.peers {
		g.hub.sessions(peer, func(s *session) {
			if _, done := pushed[s]; !done {
				pf.push(g, s)
			}
		})
	}
	pf.startWriters()
}

// audience is whom a user's presence changes are pushed to beyond its
// subscribers (chat.Queries.PresenceAudience).
type audience struct {
	peers  []string        // DM peers the user does not block
	hidden map[string]bool // users the user blocks: no pushes, even subscribed
}

// audienceOf returns user's presence audience, cached for dmPeersTTL (a
// block on this gateway drops the entry); empty when the store fails
// (presence is best effort).
func (g *Gateway) audienceOf(user string) audience {
	now := time.Now()
	if a, ok := g.dmPeers.get(user, now); ok {
		return a
	}
	ctx, cancel := g.requestCtx()
	defer cancel()
	peers, hidden, err := g.q.PresenceAudience(ctx, user)
	if err != nil {
		g.log.Debug("presence: audience", "user", user, "err", err)
		return audience{}
	}
	a := audience{peers: peers, hidden: hidden}
	g.dmPeers.put(user, a, now)
	return a
}
