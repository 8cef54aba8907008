package region

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/chat"
	"github.com/parleychat/parley/runtime/chat/ingress"
	"github.com/parleychat/parley/runtime/presence"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// RelayGroup is the consumer group that routes relayed deliveries.
const RelayGroup = "parley.relay"

// relayCommitEvery spaces the relay group's offset commits: relayed
// deliveries are best effort (a replay after a failover pushes some twice,
// which clients drop by seq).
const relayCommitEvery = time.Second

// Relay routes the deliveries other regions relay to this one
// (ingress.RelayTopic) to this region's gateways through its own session
// registry (chat.Router.PublishLocal), so every region pushes to the
// sessions it holds.
type Relay struct {
	m      *Mesh
	b      bus.Bus
	r      *chat.Router
	member string
	log    *slog.Logger
	joined chan struct{}
	// statuses, when set, keeps the presence other regions announce
	// (StorePresence), judged by presenceCfg's remote window.
	statuses    presence.Registry
	presenceCfg presence.Config

	mu         sync.Mutex
	membership bus.Membership
	next       map[int32]int64 // offset to commit per partition
	last       map[int32]time.Time
}

// NewRelay returns the relay consumer of m's region on b, routing with r.
func NewRelay(m *Mesh, b bus.Bus, r *chat.Router, member string) *Relay {
	return &Relay{m: m, b: b, r: r, member: member, joined: make(chan struct{}),
		next: map[int32]int64{}, last: map[int32]time.Time{}, log: m.log.With("component", "region.relay")}
}

// StorePresence makes the relay write every presence change another region
// announces into reg under presence.RemoteStatusID, so this region's presence
// reads (presence.Service.SetRemoteRegions) see users online elsewhere, not
// only the changes pushed live. cfg is the presence timing of the fleet
// (presence.Config.RemoteOnline). Call before Run.
func (rl *Relay) StorePresence(reg presence.Registry, cfg presence.Config) {
	rl.statuses, rl.presenceCfg = reg, cfg
}

// remoteStatusTTL keeps a remote status as long as a local one (last seen).
const remoteStatusTTL = 30 * 24 * time.Hour

// storePresence writes the presence changes among ds, announced by region
// from, and returns the ones to broadcast to this region's gateways: all of
// them for live changes; for a refresh (Mesh.RelayPresenceRefresh), only the
// users this region did not show online from that region (an online change
// lost on the way, or a region that just joined), and none whose stored
// status is newer (an offline that overtook the refresh is kept).
func (rl *Relay) storePresence(ctx context.Context, from string, ds []*parleyv1.Delivery, refresh bool) []*parleyv1.Delivery {
	if rl.statuses == nil {
		if refresh {
			return nil
		}
		return ds
	}
	var prev map[string]presence.Status
	if refresh {
		keys := make([]string, 0, len(ds))
		for _, d := range ds {
			keys = append(keys, presence.RemoteStatusID(d.GetPresence().GetUserId(), from))
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var err error
		prev, err = rl.statuses.Statuses(rctx, keys)
		cancel()
		if err != nil {
			rl.log.Warn("read presence before a refresh", "from", from, "users", len(keys), "err", err)
			return nil // the next refresh tries again
		}
	}
	now := time.Now()
	var show []*parleyv1.Delivery
	sts := make(map[string]presence.Status, len(ds))
	for _, d := range ds {
		p := d.GetPresence()
		if p == nil || p.GetUserId() == "" {
			continue
		}
		st := presence.Status{Online: p.GetStatus() == parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE}
		if p.GetLastActive() > 0 {
			st.LastActive = time.UnixMilli(p.GetLastActive())
		}
		key := presence.RemoteStatusID(p.GetUserId(), from)
		if refresh {
			old, known := prev[key]
			if known && old.LastActive.After(st.LastActive) {
				continue
			}
			if !rl.presenceCfg.RemoteOnline(old, now) {
				show = append(show, d)
			}
		} else {
			show = append(show, d)
		}
		if old, dup := sts[key]; !dup || !old.LastActive.After(st.LastActive) {
			sts[key] = st // of one user's changes in one record, the newest
		}
	}
	// One round trip for the record (up to a broadcast's worth of users: a
	// refresh carries every user online in the other region, and one write
	// per user in turn could not keep up with a heartbeat at scale).
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	if err := rl.statuses.SetStatuses(wctx, sts, remoteStatusTTL); err != nil {
		rl.log.Warn("store relayed presence", "from", from, "users", len(sts), "err", err)
	}
	cancel()
	return show
}

// Joined is closed once Run has joined the group.
func (rl *Relay) Joined() <-chan struct{} { return rl.joined }

// Run consumes until ctx ends, then commits and leaves.
func (rl *Relay) Run(ctx context.Context) error {
	mb, err := rl.b.Join(context.WithoutCancel(ctx), RelayGroup, ingress.RelayTopic(rl.m.Local()), rl.member, rl)
	if err != nil {
		return fmt.Errorf("join %s: %w", RelayGroup, err)
	}
	rl.mu.Lock()
	rl.membership = mb
	rl.mu.Unlock()
	close(rl.joined)
	<-ctx.Done()
	if err := mb.Leave(); err != nil && !errors.Is(err, bus.ErrClosed) {
		rl.log.Warn("leave group", "err", err)
	}
	return nil
}

// Assigned implements bus.GroupHandler.
func (rl *Relay) Assigned([]int32) {}

// Revoked implements bus.GroupHandler: it commits what was routed.
func (rl *Relay) Revoked(partitions []int32) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	for _, p := range partitions {
		rl.commitLocked(p)
		delete(rl.next, p)
		delete(rl.last, p)
	}
}

func (rl *Relay) commitLocked(p int32) {
	off, ok := rl.next[p]
	if !ok || rl.membership == nil {
		return
	}
	if err := rl.membership.Commit(p, off); err != nil {
		rl.log.Warn("commit relay offset", "partition", p, "offset", off, "err", err)
	}
	rl.last[p] = time.Now()
}

// Handle implements bus.GroupHandler.
func (rl *Relay) Handle(ctx context.Context, rec bus.Record) {
	rr := &parleyv1.RelayRecord{}
	if err := proto.Unmarshal(rec.Value, rr); err != nil {
		rl.log.Warn("dropping undecodable relay record", "partition", rec.Partition, "offset", rec.Offset, "err", err)
	} else {
		rl.m.cfg.Metrics.relayedIn(rr.GetFromRegion(), len(rr.GetDeliveries()))
		// Deliveries without users are broadcasts (presence changes) for
		// every gateway; the others are routed to their users' sessions.
		var bcast []*parleyv1.Delivery
		routed := &parleyv1.RelayRecord{FromRegion: rr.GetFromRegion()}
		for _, d := range rr.GetDeliveries() {
			if len(d.GetUserIds()) == 0 {
				bcast = append(bcast, d)
			} else {
				routed.Deliveries = append(routed.Deliveries, d)
			}
		}
		bcast = rl.storePresence(ctx, rr.GetFromRegion(), bcast, rr.GetPresenceRefresh())
		if err := rl.r.Broadcast(ctx, bcast); err != nil {
			rl.log.Warn("broadcast relayed deliveries", "from", rr.GetFromRegion(), "err", err)
		}
		if err := rl.r.PublishLocal(ctx, chat.RelayBatch(routed)); err != nil {
			rl.log.Warn("route relayed deliveries", "from", rr.GetFromRegion(), "err", err)
		}
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	rl.next[rec.Partition] = rec.Offset + 1
	if time.Since(rl.last[rec.Partition]) >= relayCommitEvery {
		rl.commitLocked(rec.Partition)
	}
}
