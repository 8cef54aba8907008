package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/presence"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// MaxQueuedEvents bounds the events a Reporter holds while the bus is slow
// or down; newer events are dropped beyond it (the presence role repairs
// what they would have told it: see the package comment).
const MaxQueuedEvents = 100_000

// finalFlush bounds the last publish of queued events when Run ends, so
// the disconnects of a drained gateway still reach the presence role.
const finalFlush = 3 * time.Second

// Reporter is the gateway side of presence in the distributed mode: it
// registers sessions in the registry itself and reports connects,
// heartbeats and disconnects to the presence role over the bus. It has the
// methods the gateway needs of a presence service and is safe for
// concurrent use. Run publishes the queued events.
type Reporter struct {
	reg    presence.Registry
	b      bus.Bus
	topic  string
	cfg    presence.Config
	reader *presence.Service
	log    *slog.Logger

	parts   atomic.Int32
	dropped atomic.Uint64

	mu    sync.Mutex
	queue []event
	wake  chan struct{}
}

// NewReporter returns a reporter that registers sessions in reg (expiring
// cfg.TTL after their last heartbeat) and publishes events to topic (Topic
// of the region). Zero fields of cfg take presence.DefaultConfig's values.
func NewReporter(reg presence.Registry, b bus.Bus, topic string, cfg presence.Config) *Reporter {
	// A service that is never told of sessions: its Get reads the
	// registry, with the TTL rule and unknown on errors.
	reader := presence.NewService(reg, cfg, nil)
	cfg = cfg.WithDefaults()
	return &Reporter{
		reg:    reg,
		b:      b,
		topic:  topic,
		cfg:    cfg,
		reader: reader,
		log:    slog.Default().With("component", "presence.reporter"),
		wake:   make(chan struct{}, 1),
	}
}

// Reader returns a presence.Service that answers presence reads from the
// registry (for the REST API); it is never told of sessions.
func (r *Reporter) Reader() *presence.Service { return r.reader }

// Connected registers sess (until now + TTL) and reports it. An error
// reports a registry failure; the event is reported regardless.
func (r *Reporter) Connected(ctx context.Context, sess presence.Session) error {
	return r.touch(ctx, sess, kindConnected)
}

// Heartbeat refreshes sess (until now + TTL) and reports it.
func (r *Reporter) Heartbeat(ctx context.Context, sess presence.Session) error {
	return r.touch(ctx, sess, kindHeartbeat)
}

func (r *Reporter) touch(ctx context.Context, sess presence.Session, kind string) error {
	if sess.UserID == "" || sess.SessionID == "" {
		return errors.New("presence: session needs a user id and a session id")
	}
	now := time.Now()
	sess.Expires = now.Add(r.cfg.TTL)
	err := r.reg.Touch(ctx, sess)
	if err != nil {
		err = fmt.Errorf("presence: %s session %s of %s: %w", kind, sess.SessionID, sess.UserID, err)
	}
	r.enqueue(event{Kind: kind, User: sess.UserID, Device: sess.DeviceID, Session: sess.SessionID, Gateway: sess.GatewayID, At: now.UnixMilli()})
	return err
}

// Disconnected removes sess from the registry and reports it.
func (r *Reporter) Disconnected(ctx context.Context, sess presence.Session) error {
	if sess.UserID == "" || sess.SessionID == "" {
		return errors.New("presence: session needs a user id and a session id")
	}
	err := r.reg.Remove(ctx, sess.UserID, sess.SessionID)
	if err != nil {
		err = fmt.Errorf("presence: remove session %s of %s: %w", sess.SessionID, sess.UserID, err)
	}
	r.enqueue(event{Kind: kindDisconnected, User: sess.UserID, Device: sess.DeviceID, Session: sess.SessionID, Gateway: sess.GatewayID, At: time.Now().UnixMilli()})
	return err
}

// Get returns the presence of users as the registry has it: ONLINE, OFFLINE
// with last activity, or UNKNOWN when the registry cannot be read.
func (r *Reporter) Get(ctx context.Context, userIDs []string) (map[string]*parleyv1.Presence, error) {
	return r.reader.Get(ctx, userIDs)
}

// Dropped returns how many events were dropped (queue full or publish failed).
func (r *Reporter) Dropped() uint64 { return r.dropped.Load() }

func (r *Reporter) enqueue(e event) {
	r.mu.Lock()
	if len(r.queue) >= MaxQueuedEvents {
		r.mu.Unlock()
		if r.dropped.Add(1)%1000 == 1 {
			r.log.Warn("presence events dropped: the bus is not keeping up", "dropped", r.dropped.Load())
		}
		return
	}
	r.queue = append(r.queue, e)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run publishes queued events until ctx ends, then publishes what is still
// queued (bounded by a few seconds). Each round takes every queued event
// and publishes one record per presence partition, partitions in parallel;
// rounds are sequential, so one user's events stay in order.
func (r *Reporter) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalFlush)
			r.flush(fctx)
			cancel()
			return
		case <-r.wake:
			r.flush(ctx)
		}
	}
}

func (r *Reporter) partitions() (int32, error) {
	if n := r.parts.Load(); n > 0 {
		return n, nil
	}
	n, err := r.b.Partitions(r.topic)
	if err != nil {
		return 0, err
	}
	if n <= 0 {
		return 0, fmt.Errorf("topic %s has no partitions", r.topic)
	}
	r.parts.Store(n)
	return n, nil
}

func (r *Reporter) flush(ctx context.Context) {
	r.mu.Lock()
	evs := r.queue
	r.queue = nil
	r.mu.Unlock()
	if len(evs) == 0 {
		return
	}
	n, err := r.partitions()
	if err != nil {
		r.dropped.Add(uint64(len(evs)))
		r.log.Warn("presence events dropped", "events", len(evs), "err", err)
		return
	}
	per := make(map[int32][]event)
	for _, e := range evs {
		p := bus.PartitionFor([]byte(e.User), n)
		per[p] = append(per[p], e)
	}
	var wg sync.WaitGroup
	for p, pe := range per {
		wg.Go(func() {
			v, err := encode(pe)
			if err == nil {
				err = r.b.Publish(ctx, r.topic, p, nil, v)
			}
			if err != nil {
				r.dropped.Add(uint64(len(pe)))
				r.log.Warn("presence events dropped", "events", len(pe), "partition", p, "err", err)
			}
		})
	}
	wg.Wait()
}
