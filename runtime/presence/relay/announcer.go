package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/presence"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// commitEvery is how often the Announcer commits handled offsets. Events
// replayed after a crash are harmless (see Announcer).
const commitEvery = time.Second

// broadcastMax bounds the presence changes in one broadcast record.
const broadcastMax = 1000

// AnnouncerConfig configures an Announcer.
type AnnouncerConfig struct {
	// Topic is the presence topic (Topic(region)); DeliverTopic the deliver
	// topic whose every partition (one per gateway) gets the changes.
	Topic, DeliverTopic string
	// Member is this process's static member id in GroupName (the pod name).
	Member string
	// Presence holds heartbeat, TTL and grace.
	Presence presence.Config
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Relay, when set (multi-region), also gets every broadcast's
	// deliveries, to carry them to the other regions' gateways
	// (region.Mesh.RelayBroadcast). It must not block.
	Relay func(ctx context.Context, ds []*parleyv1.Delivery)
	// Refresh, when set (multi-region), gets every Presence.Heartbeat the
	// users online through this announcer (presence.Service.Online), in
	// chunks of at most broadcastMax, so the other regions catch up on
	// changes lost while a link was down and a region that joins learns who
	// is online (region.Mesh.RelayPresenceRefresh). It must not block.
	Refresh func(ctx context.Context, ds []*parleyv1.Delivery)
}

// Announcer is the presence role: it consumes the session events gateways
// report (Reporter), decides online and offline with a presence.Service
// (grace period, expiry of sessions that stopped heartbeating) and
// broadcasts each announced change to every gateway.
//
// The registry passed to it is used for statuses and reads only: gateways
// write the sessions themselves, so the service's own session writes are
// skipped. Events older than the session TTL are not replayed into the
// service (a consumer resuming after downtime would otherwise bring long
// gone sessions back online for a TTL); disconnects are always applied.
type Announcer struct {
	cfg AnnouncerConfig
	b   bus.Bus
	svc *presence.Service
	log *slog.Logger

	joined chan struct{}

	mu       sync.Mutex
	m        bus.Membership
	offsets  bus.Offsets // handled progress per owned partition
	pending  []*parleyv1.Presence
	kick     chan struct{}
	parts    int32
	lastWarn time.Time
}

// NewAnnouncer returns an announcer over reg (statuses and session reads).
func NewAnnouncer(reg presence.Registry, b bus.Bus, cfg AnnouncerConfig) *Announcer {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Presence = cfg.Presence.WithDefaults()
	a := &Announcer{
		cfg:    cfg,
		b:      b,
		log:    cfg.Logger.With("component", "presence.announcer", "member", cfg.Member),
		joined: make(chan struct{}),
		kick:   make(chan struct{}, 1),
	}
	a.svc = presence.NewService(readOnlySessions{reg}, cfg.Presence, a.changed)
	return a
}

// Service returns the presence service the announcer drives.
func (a *Announcer) Service() *presence.Service { return a.svc }

// Joined is closed once Run has joined the consumer group.
func (a *Announcer) Joined() <-chan struct{} { return a.joined }

// Run joins GroupName on the presence topic and runs the service and the
// broadcaster until ctx ends; then it commits, leaves the group and returns
// nil. It fails if it cannot join or the deliver topic does not exist.
func (a *Announcer) Run(ctx context.Context) error {
	n, err := a.b.Partitions(a.cfg.DeliverTopic)
	if err != nil {
		return fmt.Errorf("presence announcer: %w", err)
	}
	a.mu.Lock()
	a.parts = n
	a.mu.Unlock()

	m, err := a.b.Join(context.WithoutCancel(ctx), GroupName, a.cfg.Topic, a.cfg.Member, a)
	if err != nil {
		return fmt.Errorf("join %s on %s: %w", GroupName, a.cfg.Topic, err)
	}
	a.mu.Lock()
	a.m = m
	a.mu.Unlock()
	close(a.joined)

	var wg sync.WaitGroup
	wg.Go(func() { a.svc.Run(ctx) })
	wg.Go(func() { a.broadcastLoop(ctx) })
	if a.cfg.Refresh != nil {
		wg.Go(func() { a.refreshLoop(ctx) })
	}
	t := time.NewTicker(commitEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := m.Leave(); err != nil && !errors.Is(err, bus.ErrClosed) {
				a.log.Warn("leave group", "err", err)
			}
			wg.Wait()
			return nil
		case <-t.C:
			a.commit(nil)
		}
	}
}

// Assigned is a bus.GroupHandler callback: nothing to load, the service
// learns the users of new partitions from their next events.
func (a *Announcer) Assigned(partitions []int32) {
	a.log.Debug("presence partitions assigned", "partitions", partitions)
}

// Revoked commits the revoked partitions' offsets. The service keeps the
// users it knows: it only announces offline for one whose sessions are gone
// from the registry too, which is right whoever owns the user now.
func (a *Announcer) Revoked(partitions []int32) {
	a.commit(partitions)
	a.offsets.Forget(partitions)
}

// Handle applies one record's events to the service.
func (a *Announcer) Handle(ctx context.Context, rec bus.Record) {
	evs, err := decode(rec.Value)
	if err != nil {
		a.log.Warn("undecodable presence record", "partition", rec.Partition, "offset", rec.Offset, "err", err)
	}
	ttl := a.ttl()
	now := time.Now()
	for _, e := range evs {
		sess := presence.Session{UserID: e.User, DeviceID: e.Device, SessionID: e.Session, GatewayID: e.Gateway}
		var err error
		switch e.Kind {
		case kindConnected, kindHeartbeat:
			if now.Sub(e.at()) > ttl {
				continue // stale replay: the session has expired since
			}
			if e.Kind == kindConnected {
				err = a.svc.Connected(ctx, sess)
			} else {
				err = a.svc.Heartbeat(ctx, sess)
			}
		case kindDisconnected:
			err = a.svc.Disconnected(ctx, sess)
		default:
			continue // a kind from a newer version
		}
		if err != nil {
			a.log.Debug("presence event", "kind", e.Kind, "user", e.User, "err", err)
		}
	}
	a.offsets.Handled(rec)
}

func (a *Announcer) ttl() time.Duration { return a.cfg.Presence.TTL }

// commit commits the handled offsets of partitions (all when nil).
func (a *Announcer) commit(partitions []int32) {
	a.mu.Lock()
	m := a.m
	a.mu.Unlock()
	if m == nil {
		return
	}
	if err := a.offsets.Commit(m, partitions); err != nil {
		a.log.Debug("commit presence offsets", "err", err)
	}
}

// changed is the service's onChange: it queues p for the broadcaster.
func (a *Announcer) changed(p *parleyv1.Presence) {
	a.mu.Lock()
	a.pending = append(a.pending, p)
	a.mu.Unlock()
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// refreshLoop re-announces the users online through this announcer to the
// other regions every heartbeat (AnnouncerConfig.Refresh).
func (a *Announcer) refreshLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.Presence.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		online := a.svc.Online()
		for len(online) > 0 {
			n := min(len(online), broadcastMax)
			ds := make([]*parleyv1.Delivery, n)
			for i, p := range online[:n] {
				ds[i] = &parleyv1.Delivery{Body: &parleyv1.Delivery_Presence{Presence: p}}
			}
			a.cfg.Refresh(ctx, ds)
			online = online[n:]
		}
	}
}

// broadcastLoop publishes queued changes to every deliver partition, all
// changes queued meanwhile in one record per partition.
func (a *Announcer) broadcastLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		}
		for {
			a.mu.Lock()
			ps := a.pending
			if len(ps) > broadcastMax {
				ps = ps[:broadcastMax]
				a.pending = a.pending[broadcastMax:]
			} else {
				a.pending = nil
			}
			n := a.parts
			a.mu.Unlock()
			if len(ps) == 0 {
				break
			}
			a.broadcast(ctx, ps, n)
		}
	}
}

func (a *Announcer) broadcast(ctx context.Context, ps []*parleyv1.Presence, n int32) {
	dr := &parleyv1.DeliverRecord{}
	for _, p := range ps {
		dr.Deliveries = append(dr.Deliveries, &parleyv1.Delivery{Body: &parleyv1.Delivery_Presence{Presence: p}})
	}
	if a.cfg.Relay != nil {
		a.cfg.Relay(ctx, dr.Deliveries)
	}
	v, err := proto.Marshal(dr)
	if err != nil {
		a.log.Warn("encode presence broadcast", "err", err)
		return
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []int32
	var last error
	for p := int32(0); p < n; p++ {
		wg.Go(func() {
			if err := a.b.Publish(ctx, a.cfg.DeliverTopic, p, nil, v); err != nil {
				mu.Lock()
				failed, last = append(failed, p), err
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failed) > 0 {
		// Presence is best effort: subscribers read it again on their next
		// presence_sub; a later change supersedes this one.
		a.mu.Lock()
		warn := time.Since(a.lastWarn) > 10*time.Second
		if warn {
			a.lastWarn = time.Now()
		}
		a.mu.Unlock()
		if warn {
			a.log.Warn("presence broadcast failed on some gateways", "partitions", len(failed), "changes", len(ps), "err", last)
		}
	}
}

// readOnlySessions is the announcer's view of the registry: gateways own
// the session entries, so the service's Touch and Remove are no-ops, and
// everything else goes to the registry.
type readOnlySessions struct{ presence.Registry }

func (readOnlySessions) Touch(context.Context, presence.Session) error { return nil }
func (readOnlySessions) Remove(context.Context, string, string) error  { return nil }

// Close does not close the shared registry: its owner does.
func (readOnlySessions) Close() error { return nil }
