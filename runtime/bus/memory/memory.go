// Package memory is the embedded, in-process bus.Bus: topics of fixed
// partition counts, each partition an append-only log with offsets from 0,
// consumer groups with assign/revoke and committed offsets, and subscriptions
// from the end of a partition.
//
// Publishers only append; every consumer reads the log at its own pace, so a
// slow consumer never blocks a publisher. Retention is bounded: a partition
// keeps records from the lowest offset still needed (the committed offset of
// each group on the topic and the position of each subscriber), and never more
// than the WithMaxRecords cap. A topic with neither groups nor subscribers
// keeps nothing, and a new group starts at the oldest retained record (as
// Kafka's auto.offset.reset=earliest), so records published before the first
// group joined a topic are not delivered to it.
//
// A group keeps its committed offsets after its last member leaves, so a
// member joining again resumes where the group stopped (until the cap drops
// records, which is logged).
//
// Handlers must not call Join, Leave or Close from Assigned, Revoked or
// Handle: those wait for the callbacks to return.
package memory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/parleychat/parley/runtime/bus"
)

// DefaultMaxRecords is the default cap of records kept per partition.
const DefaultMaxRecords = 1 << 16

// readBatch is how many records a consumer copies out of the log per lock.
const readBatch = 64

// Option configures a Bus.
type Option func(*Bus)

// WithMaxRecords caps the records kept per partition (n > 0). Past the cap the
// oldest records are dropped even if a group has not committed them or a
// subscriber has not read them yet; the laggard skips ahead and a warning is
// logged. It bounds memory when a consumer is stuck.
func WithMaxRecords(n int) Option {
	return func(b *Bus) {
		if n > 0 {
			b.maxRecords = n
		}
	}
}

// Bus is the in-memory bus. It is safe for concurrent use.
type Bus struct {
	maxRecords int
	// ctx is the parent of every consumer and subscriber goroutine's context;
	// Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.RWMutex
	closed bool
	topics map[string]*topic
	// wg counts consumer and subscriber goroutines. Add happens only under mu
	// while !closed, so it never races with Close's Wait.
	wg sync.WaitGroup
}

var _ bus.Bus = (*Bus)(nil)

// New returns an empty bus.
func New(opts ...Option) *Bus {
	ctx, cancel := context.WithCancel(context.Background())
	b := &Bus{
		maxRecords: DefaultMaxRecords,
		ctx:        ctx,
		cancel:     cancel,
		topics:     make(map[string]*topic),
	}
	for _, o := range opts {
		o(b)
	}
	return b
}

type topic struct {
	name   string
	parts  []*partition
	groups map[string]*group // guarded by Bus.mu
}

// CreateTopic creates t if it does not exist. It fails if t exists with
// another partition count, or if t.Partitions < 1.
func (b *Bus) CreateTopic(ctx context.Context, t bus.Topic) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if t.Name == "" || t.Partitions < 1 {
		return fmt.Errorf("create topic %q: need a name and at least 1 partition, got %d", t.Name, t.Partitions)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return bus.ErrClosed
	}
	if old, ok := b.topics[t.Name]; ok {
		if int32(len(old.parts)) != t.Partitions {
			return fmt.Errorf("create topic %q: exists with %d partitions, not %d", t.Name, len(old.parts), t.Partitions)
		}
		return nil
	}
	nt := &topic{name: t.Name, groups: make(map[string]*group)}
	for i := range t.Partitions {
		nt.parts = append(nt.parts, newPartition(t.Name, i, b.maxRecords))
	}
	b.topics[t.Name] = nt
	return nil
}

// topic returns the named topic, or an error if it does not exist or the bus
// is closed.
func (b *Bus) topic(name string) (*topic, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, bus.ErrClosed
	}
	t, ok := b.topics[name]
	if !ok {
		return nil, fmt.Errorf("topic %q does not exist", name)
	}
	return t, nil
}

func (t *topic) partition(p int32) (*partition, error) {
	if p < 0 || int(p) >= len(t.parts) {
		return nil, fmt.Errorf("topic %q has no partition %d (partitions: %d)", t.name, p, len(t.parts))
	}
	return t.parts[p], nil
}

// Partitions returns the partition count of topic.
func (b *Bus) Partitions(topic string) (int32, error) {
	t, err := b.topic(topic)
	if err != nil {
		return 0, err
	}
	return int32(len(t.parts)), nil
}

// Lag implements bus.Lagger.
func (b *Bus) Lag(_ context.Context, group, topic string) (int64, error) {
	t, err := b.topic(topic)
	if err != nil {
		return 0, err
	}
	var lag int64
	for _, p := range t.parts {
		p.mu.Lock()
		c, ok := p.committed[group]
		if !ok || c < p.start {
			c = p.start
		}
		lag += p.end() - c
		p.mu.Unlock()
	}
	return lag, nil
}

// Publish appends a copy of key and value to topic, in partition, or when
// partition < 0 in bus.PartitionFor(key, partitions). It never waits for
// consumers.
// PublishAll implements bus.Bus: each message in turn, as Publish.
func (b *Bus) PublishAll(ctx context.Context, msgs []bus.Message) []error {
	var errs []error
	for i, m := range msgs {
		if err := b.Publish(ctx, m.Topic, m.Partition, m.Key, m.Value); err != nil {
			if errs == nil {
				errs = make([]error, len(msgs))
			}
			errs[i] = err
		}
	}
	return errs
}

func (b *Bus) Publish(ctx context.Context, topic string, partition int32, key, value []byte) error {
	// In process, a publish either appends or fails before it did: never
	// of unknown outcome.
	if err := b.publish(ctx, topic, partition, key, value); err != nil {
		return fmt.Errorf("%w: %w", bus.ErrNotSent, err)
	}
	return nil
}

func (b *Bus) publish(ctx context.Context, topic string, partition int32, key, value []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t, err := b.topic(topic)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if partition < 0 {
		partition = bus.PartitionFor(key, int32(len(t.parts)))
	}
	p, err := t.partition(partition)
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	// Copies: the caller may reuse its buffers once Publish returns, as with
	// a network backend.
	p.append(bytes.Clone(key), bytes.Clone(value))
	return nil
}

// Subscribe calls fn for each record published to partition from now on, in
// order, on one goroutine, until ctx ends or the bus closes. Records are
// shared between consumers: fn must not modify Key or Value.
func (b *Bus) Subscribe(ctx context.Context, topic string, partition int32, fn func(bus.Record)) error {
	if fn == nil {
		return errors.New("subscribe: nil func")
	}
	t, err := b.topic(topic)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	p, err := t.partition(partition)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	s := new(subscriber)
	off := p.addSub(s)
	sctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(b.ctx, cancel)
	started := b.goroutine(func() {
		defer p.removeSub(s)
		defer stop()
		defer cancel()
		buf := make([]bus.Record, 0, readBatch)
		for {
			recs, next, err := p.read(sctx, off, buf[:0])
			if err != nil {
				return
			}
			for _, r := range recs {
				if sctx.Err() != nil {
					return
				}
				fn(r)
			}
			clear(recs)
			off = next
			p.moveSub(s, off)
		}
	})
	if !started {
		p.removeSub(s)
		stop()
		cancel()
		return bus.ErrClosed
	}
	return nil
}

// goroutine runs f on a new goroutine counted by b.wg, unless the bus is
// closed; it reports whether f was started.
func (b *Bus) goroutine(f func()) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f()
	}()
	return true
}

func (b *Bus) isClosed() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.closed
}

// Close stops every consumer and subscriber goroutine and waits for them;
// afterwards every call returns bus.ErrClosed. It does not call Revoked: a
// member that wants a clean handoff Leaves first. Close is idempotent.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	return nil
}

// Join joins group on topic as memberID, replacing a previous member with the
// same id (static membership: its partitions are revoked from its handler
// and assigned to h). The rebalance runs before Join returns: Revoked on the
// members losing partitions (after their in-flight Handle for those
// partitions returned), then Assigned on the members gaining some, which
// start at the group's committed offset. Partitions go round-robin over
// members sorted by id. Assigned and Handle may run before Join returns, so a
// handler that needs the Membership must wait for it. When ctx ends the
// member leaves.
func (b *Bus) Join(ctx context.Context, group, topic, memberID string, h bus.GroupHandler) (bus.Membership, error) {
	if group == "" || memberID == "" || h == nil {
		return nil, errors.New("join: need a group, a member id and a handler")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	g, err := b.group(group, topic)
	if err != nil {
		return nil, fmt.Errorf("join %s: %w", group, err)
	}
	m := &member{g: g, id: memberID, h: h, parts: make(map[int32]*consumer)}
	m.ctx, m.cancel = context.WithCancel(b.ctx)

	g.rebalanceMu.Lock()
	defer g.rebalanceMu.Unlock()
	g.mu.Lock()
	old := g.members[memberID]
	if old != nil {
		old.left = true
	}
	g.members[memberID] = m
	g.mu.Unlock()
	// Registered under rebalanceMu, which Leave takes before reading it.
	m.stopWatch = context.AfterFunc(ctx, func() { _ = m.Leave() })
	if old != nil {
		old.stopWatch()
	}
	g.rebalance()
	if old != nil {
		old.cancel()
	}
	if b.isClosed() {
		m.stopWatch()
		return nil, bus.ErrClosed
	}
	return m, nil
}

// group returns the consumer group, creating it with committed offsets at
// the oldest retained record of each partition.
func (b *Bus) group(name, topic string) (*group, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, bus.ErrClosed
	}
	t, ok := b.topics[topic]
	if !ok {
		return nil, fmt.Errorf("topic %q does not exist", topic)
	}
	g, ok := t.groups[name]
	if !ok {
		g = &group{
			b:       b,
			name:    name,
			t:       t,
			members: make(map[string]*member),
			owners:  make([]*member, len(t.parts)),
		}
		for _, p := range t.parts {
			p.initGroup(name)
		}
		t.groups[name] = g
	}
	return g, nil
}

type group struct {
	b    *Bus
	name string
	t    *topic
	// rebalanceMu serializes rebalances, so Assigned and Revoked of one group
	// never run concurrently. Held across handler callbacks.
	rebalanceMu sync.Mutex

	mu      sync.Mutex // guards members, owners and member.left
	members map[string]*member
	owners  []*member // partition -> owning member, nil while unowned
}

// rebalance moves partitions to the round-robin assignment over the current
// members. Caller holds rebalanceMu.
func (g *group) rebalance() {
	g.mu.Lock()
	ids := slices.Sorted(maps.Keys(g.members))
	want := make([]*member, len(g.owners))
	if len(ids) > 0 {
		for p := range want {
			want[p] = g.members[ids[p%len(ids)]]
		}
	}
	cur := slices.Clone(g.owners)
	g.mu.Unlock()

	var losers []*member
	lost := make(map[*member][]int32)
	for p, o := range cur {
		if o != nil && o != want[p] {
			if lost[o] == nil {
				losers = append(losers, o)
			}
			lost[o] = append(lost[o], int32(p))
		}
	}
	for _, m := range losers {
		ps := lost[m]
		// Handle for ps has returned before Revoked, so Revoked can commit
		// its final offsets knowing nothing more arrives.
		m.stop(ps)
		if !g.b.isClosed() {
			m.h.Revoked(ps)
		}
		g.mu.Lock()
		for _, p := range ps {
			if g.owners[p] == m {
				g.owners[p] = nil
			}
		}
		g.mu.Unlock()
	}

	var gainers []*member
	gained := make(map[*member][]int32)
	for p, w := range want {
		if w != nil && w != cur[p] {
			if gained[w] == nil {
				gainers = append(gainers, w)
			}
			gained[w] = append(gained[w], int32(p))
		}
	}
	for _, m := range gainers {
		if g.b.isClosed() {
			return
		}
		ps := gained[m]
		g.mu.Lock()
		for _, p := range ps {
			g.owners[p] = m
		}
		g.mu.Unlock()
		m.h.Assigned(ps)
		for _, p := range ps {
			m.start(p)
		}
	}
}

// member is one member's place in a group; it implements bus.Membership.
type member struct {
	g      *group
	id     string
	h      bus.GroupHandler
	ctx    context.Context // parent of its consumers' contexts
	cancel context.CancelFunc
	// stopWatch unregisters the Join ctx watch; set and read under
	// g.rebalanceMu.
	stopWatch func() bool
	// parts are the running consumers by partition; under g.rebalanceMu.
	parts map[int32]*consumer
	left  bool // under g.mu: left or replaced
}

type consumer struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// start runs a consumer of partition p from the group's committed offset.
// Caller holds g.rebalanceMu.
func (m *member) start(p int32) {
	part := m.g.t.parts[p]
	off := part.committedOf(m.g.name)
	ctx, cancel := context.WithCancel(m.ctx)
	c := &consumer{cancel: cancel, done: make(chan struct{})}
	started := m.g.b.goroutine(func() {
		defer close(c.done)
		buf := make([]bus.Record, 0, readBatch)
		for {
			recs, next, err := part.read(ctx, off, buf[:0])
			if err != nil {
				return
			}
			for _, r := range recs {
				if ctx.Err() != nil {
					return
				}
				m.h.Handle(ctx, r)
			}
			clear(recs)
			off = next
		}
	})
	if !started {
		cancel()
		return
	}
	m.parts[p] = c
}

// stop stops the consumers of ps and waits for their in-flight Handle.
// Caller holds g.rebalanceMu.
func (m *member) stop(ps []int32) {
	for _, p := range ps {
		if c := m.parts[p]; c != nil {
			c.cancel()
		}
	}
	for _, p := range ps {
		if c := m.parts[p]; c != nil {
			<-c.done
			delete(m.parts, p)
		}
	}
}

// Commit records that the records of partition before offset are done. It
// fails if this member does not own partition (any more).
func (m *member) Commit(partition int32, offset int64) error {
	g := m.g
	if g.b.isClosed() {
		return bus.ErrClosed
	}
	part, err := g.t.partition(partition)
	if err != nil {
		return fmt.Errorf("commit group %s: %w", g.name, err)
	}
	if offset < 0 {
		return fmt.Errorf("commit group %s %s/%d: negative offset %d", g.name, g.t.name, partition, offset)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	// Under g.mu so a commit cannot land between a revoke and the next
	// owner reading the committed offset.
	if m.left || g.owners[partition] != m {
		return fmt.Errorf("commit group %s %s/%d: member %s does not own the partition", g.name, g.t.name, partition, m.id)
	}
	part.commit(g.name, offset)
	return nil
}

// Leave revokes the member's partitions (calling Revoked), hands them to the
// remaining members and leaves. Leaving twice, or after being replaced by a
// member with the same id, does nothing.
func (m *member) Leave() error {
	g := m.g
	if g.b.isClosed() {
		return bus.ErrClosed
	}
	g.rebalanceMu.Lock()
	defer g.rebalanceMu.Unlock()
	if m.stopWatch != nil {
		m.stopWatch()
	}
	g.mu.Lock()
	if m.left {
		g.mu.Unlock()
		return nil
	}
	m.left = true
	if g.members[m.id] == m {
		delete(g.members, m.id)
	}
	g.mu.Unlock()
	g.rebalance()
	m.cancel()
	return nil
}

// subscriber is a Subscribe registration; its position pins retention.
type subscriber struct {
	next int64 // next offset to read; under partition.mu
}

// partition is one append-only log.
type partition struct {
	topic string
	id    int32
	max   int

	mu    sync.Mutex
	start int64 // offset of recs[0]
	recs  []bus.Record
	// wake is closed by the next append; created on demand by a waiting
	// reader so that publishing with nobody waiting allocates nothing.
	wake      chan struct{}
	committed map[string]int64 // group -> committed offset
	subs      map[*subscriber]struct{}
	// backing is recs' array from its first element: once every record is
	// trimmed, appends start over at its beginning instead of allocating.
	backing []bus.Record
}

func newPartition(topic string, id int32, maxRecords int) *partition {
	return &partition{
		topic:     topic,
		id:        id,
		max:       maxRecords,
		committed: make(map[string]int64),
		subs:      make(map[*subscriber]struct{}),
	}
}

func (p *partition) end() int64 { return p.start + int64(len(p.recs)) }

func (p *partition) append(key, value []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.recs) == cap(p.recs) {
		// Grow by the live records only: trimmed ones before recs[0] are not
		// carried over.
		grown := make([]bus.Record, len(p.recs), max(2*len(p.recs), 16))
		copy(grown, p.recs)
		clear(p.recs)
		p.recs, p.backing = grown, grown
	}
	p.recs = append(p.recs, bus.Record{Topic: p.topic, Partition: p.id, Offset: p.end(), Key: key, Value: value, Time: time.Now()})
	if p.wake != nil {
		close(p.wake)
		p.wake = nil
	}
	p.trim()
}

// read appends to buf up to cap(buf) records from offset off, waiting for
// one if there is none yet, and returns them with the offset after them. If
// off was dropped it skips to the oldest retained record.
func (p *partition) read(ctx context.Context, off int64, buf []bus.Record) ([]bus.Record, int64, error) {
	for {
		p.mu.Lock()
		if off < p.start {
			slog.Warn("bus: records dropped before they were consumed",
				"topic", p.topic, "partition", p.id, "from", off, "to", p.start)
			off = p.start
		}
		if off < p.end() {
			i := int(off - p.start)
			j := min(len(p.recs), i+max(cap(buf), 1))
			buf = append(buf, p.recs[i:j]...)
			next := p.start + int64(j)
			p.mu.Unlock()
			return buf, next, nil
		}
		if p.wake == nil {
			p.wake = make(chan struct{})
		}
		wake := p.wake
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, off, ctx.Err()
		case <-wake:
		}
	}
}

// trim drops records no group and no subscriber needs, and any beyond the
// cap. Caller holds p.mu.
func (p *partition) trim() {
	low := p.end()
	for _, c := range p.committed {
		low = min(low, c)
	}
	for s := range p.subs {
		low = min(low, s.next)
	}
	if over := len(p.recs) - p.max; over > 0 {
		low = max(low, p.start+int64(over))
	}
	if n := int(low - p.start); n > 0 {
		// Clear so the dropped values can be collected before the backing
		// array is reallocated by a later append.
		clear(p.recs[:n])
		p.recs = p.recs[n:]
		p.start = low
		if len(p.recs) == 0 {
			p.recs = p.backing[:0]
		}
	}
}

func (p *partition) initGroup(group string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.committed[group]; !ok {
		p.committed[group] = p.start
	}
}

func (p *partition) committedOf(group string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.committed[group]
}

func (p *partition) commit(group string, off int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if off > p.committed[group] {
		p.committed[group] = off
		p.trim()
	}
}

// addSub registers s at the end of the log and returns that offset.
func (p *partition) addSub(s *subscriber) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	s.next = p.end()
	p.subs[s] = struct{}{}
	return s.next
}

func (p *partition) moveSub(s *subscriber, off int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s.next = off
	p.trim()
}

func (p *partition) removeSub(s *subscriber) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.subs, s)
	p.trim()
}

// retained reports the offsets [start, end) a partition holds; for tests.
func (p *partition) retained() (start, end int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.start, p.end()
}
