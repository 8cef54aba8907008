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
	"github.com/parleychat/parley/runtime/chat/ingress"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// OutboxGroup is the consumer group of the outbox forwarders (scoped per
// region by the fleet's bus, like chat.GroupName).
const OutboxGroup = "parley.outbox"

// Outbox tuning.
const (
	// maxRun is the most records forwarded in one produce.
	maxRun = 256
	// maxQueued bounds the records one partition holds in memory; Handle
	// blocks beyond it (the rest stays in Kafka).
	maxQueued = 65536
	// retryMin and retryMax bound the wait between forwards to a region
	// that failed.
	retryMin = 200 * time.Millisecond
	retryMax = 5 * time.Second
)

// Outbox forwards the records of this region's outbox to their home regions,
// in order per conversation (the outbox is keyed by conversation, and each
// owned partition is forwarded by one goroutine, oldest first). A record's
// offset is committed only after the home region's Kafka acknowledged it, so
// a forwarder killed mid-drain leaves the rest to the next owner; records
// forwarded twice are absorbed by the home's dedupe of (sender,
// client_msg_id).
//
// While a home region is unreachable, every send waiting for it is answered
// send_accepted (once per forwarder) and marked accepted: the home then
// sequences it whatever its deadline, and pushes it to the sending session
// too. Every forwarded record has its deadline cleared, because a record
// that waited in the outbox may have been accepted by an earlier owner
// (the acceptance itself is not stored).
type Outbox struct {
	m      *Mesh
	b      bus.Bus
	reply  func(ctx context.Context, o *parleyv1.Origin, rep *parleyv1.Reply) error
	member string
	log    *slog.Logger

	mu         sync.Mutex
	base       context.Context
	membership bus.Membership
	parts      map[int32]*drain
	joined     chan struct{}
}

// NewOutbox returns the forwarder of m's outbox on b (this region's bus),
// answering send_accepted through reply (chat.Router.Reply), as consumer
// group member member.
func NewOutbox(m *Mesh, b bus.Bus, reply func(context.Context, *parleyv1.Origin, *parleyv1.Reply) error, member string) *Outbox {
	return &Outbox{m: m, b: b, reply: reply, member: member, parts: map[int32]*drain{}, joined: make(chan struct{}),
		base: context.Background(), log: m.log.With("component", "region.outbox")}
}

// Pending returns how many records of this region's outbox are not yet
// forwarded (acknowledged by their home region's Kafka), counted over every
// forwarder of the region: the lag of OutboxGroup on the outbox topic. It
// needs a bus that implements bus.Lagger.
func (o *Outbox) Pending(ctx context.Context) (int64, error) {
	lg, ok := o.b.(bus.Lagger)
	if !ok {
		return 0, fmt.Errorf("outbox of %s: bus %T cannot report a group's lag", o.m.Local(), o.b)
	}
	n, err := lg.Lag(ctx, OutboxGroup, ingress.OutboxTopic(o.m.Local()))
	if err != nil {
		return 0, fmt.Errorf("outbox of %s: %w", o.m.Local(), err)
	}
	return n, nil
}

// Joined is closed once Run has joined the group.
func (o *Outbox) Joined() <-chan struct{} { return o.joined }

// Run forwards until ctx ends, then stops its partitions and leaves.
func (o *Outbox) Run(ctx context.Context) error {
	o.mu.Lock()
	o.base = ctx
	o.mu.Unlock()
	mb, err := o.b.Join(context.WithoutCancel(ctx), OutboxGroup, ingress.OutboxTopic(o.m.Local()), o.member, o)
	if err != nil {
		return fmt.Errorf("join %s: %w", OutboxGroup, err)
	}
	o.mu.Lock()
	o.membership = mb
	o.mu.Unlock()
	close(o.joined)
	<-ctx.Done()
	if err := mb.Leave(); err != nil && !errors.Is(err, bus.ErrClosed) {
		o.log.Warn("leave group", "err", err)
	}
	o.stop(o.owned())
	return nil
}

func (o *Outbox) owned() []int32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	ids := make([]int32, 0, len(o.parts))
	for id := range o.parts {
		ids = append(ids, id)
	}
	return ids
}

// Assigned implements bus.GroupHandler.
func (o *Outbox) Assigned(partitions []int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, id := range partitions {
		if o.parts[id] != nil {
			continue
		}
		ctx, cancel := context.WithCancel(o.base)
		d := &drain{o: o, id: id, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1), done: make(chan struct{})}
		o.parts[id] = d
		go d.run()
	}
}

// Revoked implements bus.GroupHandler.
func (o *Outbox) Revoked(partitions []int32) { o.stop(partitions) }

func (o *Outbox) stop(partitions []int32) {
	o.mu.Lock()
	var ds []*drain
	for _, id := range partitions {
		if d := o.parts[id]; d != nil {
			ds = append(ds, d)
			delete(o.parts, id)
		}
	}
	o.mu.Unlock()
	for _, d := range ds {
		d.cancel()
		<-d.done
		o.m.cfg.Metrics.outbox(d.id, 0, time.Time{})
	}
}

// Handle implements bus.GroupHandler: it queues rec for its partition's
// forwarder, answering a send at once when its home is known to be down.
func (o *Outbox) Handle(ctx context.Context, rec bus.Record) {
	o.mu.Lock()
	d := o.parts[rec.Partition]
	o.mu.Unlock()
	if d == nil {
		return
	}
	or := &parleyv1.OutboxRecord{}
	if err := proto.Unmarshal(rec.Value, or); err != nil || or.GetRecord() == nil {
		o.log.Warn("dropping undecodable outbox record", "partition", rec.Partition, "offset", rec.Offset, "err", err)
		or = nil
	}
	it := &item{off: rec.Offset, or: or, at: rec.Time}
	if or != nil {
		if down, _ := o.m.Down(or.GetHomeRegion()); down {
			o.accept(ctx, it)
		}
	}
	for {
		d.mu.Lock()
		if len(d.queue) < maxQueued {
			d.queue = append(d.queue, it)
			d.mu.Unlock()
			break
		}
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-d.ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// accept answers it's send send_accepted, once, and marks it accepted.
func (o *Outbox) accept(ctx context.Context, it *item) {
	rec := it.or.GetRecord()
	send := rec.GetSend()
	if send == nil || rec.GetAccepted() {
		return
	}
	rec.Accepted = true
	home := it.or.GetHomeRegion()
	o.m.cfg.Metrics.acceptedOne(home)
	rep := &parleyv1.Reply{SendAccepted: &parleyv1.SendAccepted{
		ConversationId: rec.GetConversationId(), ClientMsgId: send.GetClientMsgId(), HomeRegion: home,
	}}
	rctx, cancel := context.WithTimeout(ctx, o.m.cfg.PublishTimeout)
	defer cancel()
	if err := o.reply(rctx, rec.GetOrigin(), rep); err != nil {
		o.log.Warn("answer send_accepted", "conversation", rec.GetConversationId(), "err", err)
	}
}

// item is one outbox record in a partition's queue; or is nil for an
// undecodable record (committed past).
type item struct {
	off int64
	or  *parleyv1.OutboxRecord
	at  time.Time
}

// maxRunsInFlight bounds the runs one partition has in flight to home
// regions when the peer's bus keeps publishes in order (asyncPublisher):
// waiting for each run's acknowledgement, one round trip, before sending
// the next would make every record that arrives meanwhile wait for it.
const maxRunsInFlight = 8

// drain forwards one owned outbox partition.
type drain struct {
	o      *Outbox
	id     int32
	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{}
	done   chan struct{}

	mu    sync.Mutex
	queue []*item // read, not yet acknowledged by the home; oldest first

	lastFailed string // home of the last failed run (owned by run)

	// Owned by run: queue[:sent] are in runs in flight.
	sent    int
	flights []*flight
	results chan *flight
}

// flight is one run handed to a home region's Kafka.
type flight struct {
	n    int
	home string
	done bool
	err  error
}

func (d *drain) run() {
	defer close(d.done)
	d.results = make(chan *flight, maxRunsInFlight)
	wait := retryMin
	failed := false
	for {
		if !failed {
			d.launch()
		}
		if len(d.flights) == 0 && failed {
			// Every run in flight has settled after a failure: accept what
			// waits, back off, then send everything unacknowledged again,
			// in order (a run after the failed one that got through is
			// sent twice; the home's dedupe absorbs it).
			d.acceptQueued(d.lastFailed)
			select {
			case <-d.ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, retryMax)
			failed = false
			d.sent = 0
			continue
		}
		select {
		case <-d.ctx.Done():
			for _, f := range d.flights { // let what is in flight settle; commit nothing more
				if !f.done {
					(<-d.results).done = true
				}
			}
			return
		case <-d.wake:
		case f := <-d.results:
			f.done = true
			for len(d.flights) > 0 && d.flights[0].done {
				f := d.flights[0]
				d.flights = d.flights[1:]
				if failed || f.err != nil {
					if !failed {
						level := slog.LevelDebug // a link that is down is logged by the mesh
						if d.o.m.peer(f.home) == nil {
							level = slog.LevelWarn
						}
						d.o.log.Log(d.ctx, level, "forward failed; retrying", "partition", d.id, "home", f.home, "records", f.n, "err", f.err, "wait", wait)
						d.lastFailed = f.home
					}
					failed = true
					continue
				}
				wait = retryMin
				d.pop(f.n)
				d.sent -= f.n
			}
		}
	}
}

// launch hands runs of unsent records to their home regions while the
// window allows: maxRunsInFlight for a peer bus that keeps order, else one.
func (d *drain) launch() {
	for {
		run := d.next()
		if run == nil {
			return
		}
		home := run[0].or.GetHomeRegion()
		p := d.o.m.peer(home)
		window := 1
		if p != nil {
			if _, ok := p.b.(asyncPublisher); ok {
				window = maxRunsInFlight
			}
		}
		if len(d.flights) >= window {
			return
		}
		f := &flight{n: len(run), home: home}
		d.flights = append(d.flights, f)
		d.sent += len(run)
		d.forward(run, func(err error) {
			f.err = err
			d.results <- f
		})
	}
}

// next returns the oldest unsent records that share a home (at most
// maxRun), committing past undecodable ones at the head; nil when none
// waits.
func (d *drain) next() []*item {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.sent == 0 && len(d.queue) > 0 && d.queue[0].or == nil {
		d.commit(d.queue[0].off)
		d.queue = d.queue[1:]
	}
	var oldest time.Time
	if len(d.queue) > 0 {
		oldest = d.queue[0].at
	}
	d.o.m.cfg.Metrics.outbox(d.id, len(d.queue), oldest)
	rest := d.queue[d.sent:]
	if len(rest) == 0 || rest[0].or == nil {
		return nil // an undecodable record waits until the runs before it are acknowledged
	}
	home := rest[0].or.GetHomeRegion()
	n := 1
	for n < len(rest) && n < maxRun && rest[n].or != nil && rest[n].or.GetHomeRegion() == home {
		n++
	}
	return rest[:n:n]
}

// forward produces run to its home region's ingress topic and calls done
// with the outcome (from another goroutine when the peer's bus is
// asynchronous).
func (d *drain) forward(run []*item, done func(error)) {
	home := run[0].or.GetHomeRegion()
	p := d.o.m.peer(home)
	if p == nil {
		// The region left the mesh while records for it waited: keep
		// them (uncommitted) and say so; an operator re-adds the region
		// or drains it first (docs/multi-region.md).
		done(fmt.Errorf("home region %q is not in this region's mesh", home))
		return
	}
	msgs := make([]bus.Message, len(run))
	sentAt := make([]int64, len(run))
	for i, it := range run {
		rec := it.or.GetRecord()
		rec.Deadline = 0
		v, err := proto.Marshal(rec)
		if err != nil {
			done(fmt.Errorf("encode: %w", err))
			return
		}
		msgs[i] = bus.Message{Topic: ingress.IngressTopic(home), Partition: -1, Key: []byte(rec.GetConversationId()), Value: v}
		sentAt[i] = rec.GetSentAt()
	}
	d.o.m.publishTo(d.ctx, p, msgs, func(errs []error) {
		err := errors.Join(errs...)
		if err == nil {
			for _, at := range sentAt {
				d.o.m.cfg.Metrics.forwardedOne(home, at)
			}
		}
		done(err)
	})
}

// acceptQueued accepts every queued send waiting for home.
func (d *drain) acceptQueued(home string) {
	d.mu.Lock()
	var its []*item
	for _, it := range d.queue {
		if it.or != nil && it.or.GetHomeRegion() == home {
			its = append(its, it)
		}
	}
	d.mu.Unlock()
	for _, it := range its {
		d.o.accept(d.ctx, it)
	}
}

// pop drops the first n records, forwarded, and commits past them.
func (d *drain) pop(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.commit(d.queue[n-1].off)
	d.queue = d.queue[n:]
}

// commit commits past off (under d.mu).
func (d *drain) commit(off int64) {
	d.o.mu.Lock()
	mb := d.o.membership
	d.o.mu.Unlock()
	if mb == nil {
		return
	}
	if err := mb.Commit(d.id, off+1); err != nil {
		d.o.log.Warn("commit outbox offset", "partition", d.id, "offset", off+1, "err", err)
	}
}
