package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/parleychat/parley/runtime/bus"
)

type memberKey struct{ group, member string }

// stopMode is how a membership ends.
type stopMode int

const (
	// stopLeave revokes (Revoked runs and may commit), then removes the
	// instance from the group so its partitions move at once.
	stopLeave stopMode = iota
	// stopReplace revokes but keeps the instance in the group: a new member
	// with the same id on this bus takes its place (and its assignment)
	// without a rebalance.
	stopReplace
	// stopClose stops without handler callbacks and keeps the instance in
	// the group until its session times out (Bus.Close).
	stopClose
	// stopFenced stops a member whose instance id another process took; kgo
	// has already reported the loss (Revoked).
	stopFenced
)

// membership is one member of a consumer group, with a kgo client of its
// own; it implements bus.Membership.
//
// Records flow from one poll loop to one worker goroutine per owned
// partition, which calls Handle in offset order. The client blocks
// rebalances from the moment a poll returns records until they are queued
// to their workers (kgo.BlockRebalanceOnPoll), so a revoke never races a
// half-dispatched poll: once a partition's worker is gone, no record of the
// old assignment can reach a later worker of the same partition.
type membership struct {
	b     *Bus
	key   memberKey
	topic string
	h     bus.GroupHandler
	cl    *kgo.Client
	log   *slog.Logger

	ctx    context.Context // poll loop and workers; cancelled when stopping
	cancel context.CancelFunc
	wg     sync.WaitGroup // poll loop and workers

	joined     chan struct{} // closed after the first assignment callback
	joinedOnce sync.Once
	quiet      atomic.Bool // no handler callbacks any more (Close)

	mu        sync.Mutex
	workers   map[int32]*worker
	owned     map[int32]bool  // from before Assigned until after Revoked returns
	committed map[int32]int64 // highest offset committed by this member, per owned partition
	left      bool
	unwatch   func() bool // stops the Join ctx watch

	stopOnce sync.Once
	stopped  chan struct{}
	stopErr  error
}

var _ bus.Membership = (*membership)(nil)

// Join joins consumer group on topic as static member member (its
// group.instance.id), with the cooperative-sticky balancer, and returns once
// the group has given it its first assignment (possibly empty) or fails
// after Config.JoinTimeout. A group without committed offsets starts at the
// oldest record. Assigned and Handle may run before Join returns.
//
// Offsets are committed only by Membership.Commit; a revoked partition's
// in-flight Handle returns before Revoked is called, so Revoked can commit
// the partition's final offset. Partitions lost to a fatal group error
// (the session expired) are reported with Revoked too; commits then fail.
//
// A second Join with the same group and member on this bus replaces the
// first (its partitions are revoked from the old handler and, being the
// same static instance, assigned to the new one). When ctx ends the member
// leaves (Membership.Leave).
func (b *Bus) Join(ctx context.Context, group, topic, member string, h bus.GroupHandler) (bus.Membership, error) {
	if group == "" || member == "" || h == nil {
		return nil, errors.New("join: need a group, a member id and a handler")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if b.isClosed() {
		return nil, bus.ErrClosed
	}
	if _, err := b.Partitions(topic); err != nil {
		return nil, fmt.Errorf("join %s: %w", group, err)
	}
	m, err := b.startMember(group, topic, member, h)
	if err != nil {
		return nil, err
	}

	timer := time.NewTimer(b.cfg.JoinTimeout)
	defer timer.Stop()
	select {
	case <-m.joined:
	case <-m.stopped:
		return nil, fmt.Errorf("join %s as %s: member stopped while joining", group, member)
	case <-b.ctx.Done():
		return nil, bus.ErrClosed // Close stops m
	case <-ctx.Done():
		_ = m.shutdown(stopLeave)
		return nil, ctx.Err()
	case <-timer.C:
		_ = m.shutdown(stopLeave)
		return nil, fmt.Errorf("join %s as %s on %s: no assignment within %v", group, member, topic, b.cfg.JoinTimeout)
	}

	m.mu.Lock()
	if !m.left {
		m.unwatch = context.AfterFunc(ctx, func() {
			b.goroutine(func() { _ = m.Leave() })
		})
	}
	m.mu.Unlock()
	return m, nil
}

// startMember replaces a member of the same id on this bus, creates the
// member's client and registers it.
func (b *Bus) startMember(group, topic, member string, h bus.GroupHandler) (*membership, error) {
	b.joinMu.Lock()
	defer b.joinMu.Unlock()
	key := memberKey{group, member}
	b.mu.RLock()
	old := b.members[key]
	b.mu.RUnlock()
	if old != nil {
		// Before the new client joins: two live clients with one instance
		// id fence each other.
		_ = old.shutdown(stopReplace)
	}

	m := &membership{
		b:         b,
		key:       key,
		topic:     topic,
		h:         h,
		log:       b.log.With("group", group, "member", member, "topic", topic),
		joined:    make(chan struct{}),
		workers:   make(map[int32]*worker),
		owned:     make(map[int32]bool),
		committed: make(map[int32]int64),
		stopped:   make(chan struct{}),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	cl, err := kgo.NewClient(append(b.clientOpts(b.cfg.ClientID+"-"+member),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.InstanceID(member),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.SessionTimeout(b.cfg.SessionTimeout),
		kgo.HeartbeatInterval(b.cfg.HeartbeatInterval),
		kgo.RebalanceTimeout(b.cfg.RebalanceTimeout),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// A paused partition resumes with the next fetch request, so keep
		// empty fetches short.
		kgo.FetchMaxWait(time.Second),
		kgo.OnPartitionsAssigned(m.onAssigned),
		kgo.OnPartitionsRevoked(m.onRevoked),
		kgo.OnPartitionsLost(m.onLost),
	)...)
	if err != nil {
		m.cancel()
		return nil, fmt.Errorf("join %s as %s: %w", group, member, err)
	}
	m.cl = cl
	m.wg.Add(1)
	go m.poll()

	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		_ = m.shutdown(stopClose)
		return nil, bus.ErrClosed
	}
	b.members[key] = m
	b.mu.Unlock()
	return m, nil
}

// poll fetches records and queues them to their partitions' workers.
func (m *membership) poll() {
	defer m.wg.Done()
	for {
		fs := m.cl.PollRecords(m.ctx, 0)
		m.dispatch(fs)
		// Always: even an error-only poll holds off rebalances until
		// allowed, and Leave and Close wait for the revoke.
		m.cl.AllowRebalance()
		if m.ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fenced := false
		fs.EachError(func(topic string, p int32, err error) {
			switch {
			case errors.Is(err, context.Canceled):
				return
			case errors.Is(err, kerr.FencedInstanceID):
				fenced = true
			}
			m.log.Warn("group consumer error", "partition", p, "err", err)
		})
		if fenced {
			// Rejoining would fence the other process in turn, and the two
			// would take the group from each other forever.
			m.log.Error("another process joined the group with this member id; this member stops")
			m.b.goroutine(func() { _ = m.shutdown(stopFenced) })
			return
		}
	}
}

func (m *membership) dispatch(fs kgo.Fetches) {
	fs.EachPartition(func(ft kgo.FetchTopicPartition) {
		if len(ft.Records) == 0 || ft.Topic != m.topic {
			return
		}
		m.mu.Lock()
		w := m.workers[ft.Partition]
		m.mu.Unlock()
		if w == nil {
			// Not expected: kgo drops revoked partitions' buffered
			// records, and revokes wait for dispatch.
			m.log.Warn("dropping records of a partition without a worker", "partition", ft.Partition, "records", len(ft.Records))
			return
		}
		w.push(ft.Records)
	})
}

func (m *membership) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	// kgo calls this after every join, even with nothing new, so the first
	// call means the member has joined.
	defer m.joinedOnce.Do(func() { close(m.joined) })
	ps := sortedPartitions(assigned[m.topic])
	if len(ps) == 0 || m.quiet.Load() {
		return
	}
	m.mu.Lock()
	for _, p := range ps {
		m.owned[p] = true
		m.committed[p] = -1
	}
	m.mu.Unlock()
	m.h.Assigned(ps)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range ps {
		w := newWorker(m, p)
		m.workers[p] = w
		m.wg.Add(1)
		go w.run()
	}
}

func (m *membership) onRevoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	m.revoke(sortedPartitions(revoked[m.topic]))
}

func (m *membership) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	ps := sortedPartitions(lost[m.topic])
	if len(ps) > 0 {
		m.log.Warn("partitions lost (group session ended); another member may own them already", "partitions", ps)
	}
	m.revoke(ps)
}

// revoke stops the workers of ps, waiting for their in-flight Handle, then
// calls Revoked; the partitions count as owned (Commit works) until Revoked
// returns.
func (m *membership) revoke(ps []int32) {
	if len(ps) == 0 {
		return
	}
	m.mu.Lock()
	var ws []*worker
	for _, p := range ps {
		if w := m.workers[p]; w != nil {
			ws = append(ws, w)
			delete(m.workers, p)
		}
	}
	m.mu.Unlock()
	for _, w := range ws {
		w.cancel()
	}
	for _, w := range ws {
		<-w.done
		w.drop()
	}
	if !m.quiet.Load() {
		m.h.Revoked(ps)
	}
	m.mu.Lock()
	for _, p := range ps {
		delete(m.owned, p)
		delete(m.committed, p)
	}
	m.mu.Unlock()
}

// Commit commits offset as the group's position on partition: every record
// before it is done. It returns once the coordinator has stored it, and
// fails if this member does not own the partition (any more). An offset not
// above the committed one is ignored.
func (m *membership) Commit(partition int32, offset int64) error {
	if m.b.isClosed() {
		return bus.ErrClosed
	}
	if offset < 0 {
		return fmt.Errorf("commit group %s %s/%d: negative offset %d", m.key.group, m.topic, partition, offset)
	}
	m.mu.Lock()
	owned, left, last := m.owned[partition], m.left, m.committed[partition]
	m.mu.Unlock()
	if left || !owned {
		return fmt.Errorf("commit group %s %s/%d: member %s does not own the partition", m.key.group, m.topic, partition, m.key.member)
	}
	if offset <= last {
		return nil
	}
	// The group's offset as fetched when the partition was assigned.
	if eo, ok := m.cl.CommittedOffsets()[m.topic][partition]; ok && offset <= eo.Offset {
		return nil
	}
	ctx, cancel := context.WithTimeout(m.b.ctx, m.b.cfg.RequestTimeout)
	defer cancel()
	var cerr error
	m.cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{
		m.topic: {partition: {Epoch: -1, Offset: offset}},
	}, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			cerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					cerr = err
				}
			}
		}
	})
	if cerr != nil {
		return m.b.closedOr(fmt.Errorf("commit group %s %s/%d offset %d: %w", m.key.group, m.topic, partition, offset, cerr))
	}
	m.mu.Lock()
	if m.owned[partition] && offset > m.committed[partition] {
		m.committed[partition] = offset
	}
	m.mu.Unlock()
	return nil
}

// Leave revokes the member's partitions (Revoked runs, after their
// in-flight Handle, and may commit), removes the static instance from the
// group so the other members are assigned its partitions at their next
// heartbeat, and closes the member's client. Leaving twice, or after being
// replaced, returns the first outcome.
func (m *membership) Leave() error {
	if m.b.isClosed() {
		return bus.ErrClosed
	}
	return m.shutdown(stopLeave)
}

// shutdown stops the member once, in the first caller's mode; every caller
// waits for it.
func (m *membership) shutdown(mode stopMode) error {
	m.stopOnce.Do(func() {
		m.stopErr = m.stop(mode)
		close(m.stopped)
	})
	<-m.stopped
	return m.stopErr
}

func (m *membership) stop(mode stopMode) error {
	if mode == stopClose || mode == stopFenced {
		m.quiet.Store(true)
	}
	m.mu.Lock()
	if m.unwatch != nil {
		m.unwatch()
	}
	m.mu.Unlock()

	var err error
	if mode == stopLeave || mode == stopReplace {
		ctx, cancel := context.WithTimeout(context.Background(), m.b.cfg.RebalanceTimeout)
		// Revokes everything (Revoked runs here); a static member sends no
		// LeaveGroup, except kgo's one case noted on kgo.InstanceID.
		if lerr := m.cl.LeaveGroupContext(ctx); lerr != nil {
			m.log.Warn("leaving the group session", "err", lerr)
		}
		if mode == stopLeave {
			err = m.leaveInstance(ctx)
		}
		cancel()
	}
	m.mu.Lock()
	m.left = true
	m.mu.Unlock()
	m.cancel()
	m.cl.Close() // runs any remaining revoke (quietly for Close)
	m.wg.Wait()

	m.b.mu.Lock()
	if m.b.members[m.key] == m {
		delete(m.b.members, m.key)
	}
	m.b.mu.Unlock()
	return err
}

// leaveInstance removes the static instance from the group (KIP-345), as
// kgo does not for static members.
func (m *membership) leaveInstance(ctx context.Context) error {
	resps, err := m.b.adm.LeaveGroup(ctx, kadm.LeaveGroup(m.key.group).
		InstanceIDs(m.key.member).
		Reason("parley: member left"))
	if err != nil {
		return m.b.closedOr(fmt.Errorf("leave group %s as %s: %w", m.key.group, m.key.member, err))
	}
	for _, r := range resps {
		// Unknown: kgo left already, or the member never joined.
		if r.Err != nil && !errors.Is(r.Err, kerr.UnknownMemberID) {
			return fmt.Errorf("leave group %s as %s: %w", m.key.group, m.key.member, r.Err)
		}
	}
	return nil
}

// worker calls Handle for one owned partition's records, in offset order.
type worker struct {
	m      *membership
	p      int32
	ctx    context.Context // Handle's; cancelled on revoke
	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{} // 1-buffered: records were queued

	mu     sync.Mutex
	queue  []*kgo.Record
	paused bool // fetching of p is paused because queue is full
}

func newWorker(m *membership, p int32) *worker {
	ctx, cancel := context.WithCancel(m.ctx)
	return &worker{m: m, p: p, ctx: ctx, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// push queues records, pausing the partition's fetches once
// Config.MaxQueued wait, so a slow Handle holds back only its partition.
func (w *worker) push(recs []*kgo.Record) {
	w.mu.Lock()
	w.queue = append(w.queue, recs...)
	if !w.paused && len(w.queue) >= w.m.b.cfg.MaxQueued {
		w.paused = true
		w.m.cl.PauseFetchPartitions(map[string][]int32{w.m.topic: {w.p}})
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) run() {
	defer w.m.wg.Done()
	defer close(w.done)
	for {
		w.mu.Lock()
		batch := w.queue
		w.queue = nil
		w.resumeLocked()
		w.mu.Unlock()
		if len(batch) == 0 {
			select {
			case <-w.wake:
				continue
			case <-w.ctx.Done():
				return
			}
		}
		for i, r := range batch {
			if w.ctx.Err() != nil {
				return
			}
			w.m.h.Handle(w.ctx, record(r))
			batch[i] = nil
		}
	}
}

// drop discards the queue of a stopped worker (the next owner re-reads from
// the committed offset) and unpauses its partition for a later assignment.
func (w *worker) drop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.queue = nil
	w.resumeLocked()
}

func (w *worker) resumeLocked() {
	if w.paused {
		w.paused = false
		w.m.cl.ResumeFetchPartitions(map[string][]int32{w.m.topic: {w.p}})
	}
}

func sortedPartitions(ps []int32) []int32 {
	ps = slices.Clone(ps)
	slices.Sort(ps)
	return ps
}
