package chat

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/snowflake"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/metrics"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
)

// tick drives offset commits (commitEvery) and idle-state sweeps
// (sweepEvery); receipts flush on their own interval (Config.ReceiptFlush)
// from the same loop.
const tick = 100 * time.Millisecond

// commitEvery is how often completed ingress offsets are committed. A commit
// is a request to the group coordinator per partition; committing on every
// tick cost about 0.6 Kafka requests per send at 100 sends/s (issue 11).
// What a later commit costs is only replay after a failover: up to a second
// more of records, which the new owner answers from its dedupe window
// (sends) or ignores (receipts are forward-only). Revocation and shutdown
// commit at once.
const commitEvery = time.Second

// sweepEvery is how often cached conversation states are checked for
// eviction (a walk over every cached conversation).
const sweepEvery = 5 * time.Second

// revokeGrace is how long Revoked lets conversation workers finish their
// current batch before cancelling their store calls.
const revokeGrace = 5 * time.Second

// Sequencer is the chat role (docs/design.md §2): a member of consumer
// group "parley.chat" on the ingress topic that, for every partition it owns,
// is the single sequencer of that partition's conversations. Each active
// conversation has one queue served by one goroutine, so conversations of a
// partition progress in parallel while each stays strictly ordered; the
// partition's offset is committed only up to the lowest record not yet fully
// processed.
type Sequencer struct {
	cfg    Config
	st     store.MessageStore
	b      bus.Bus
	r      *Router
	node   *snowflake.Node
	log    *slog.Logger
	seed   maphash.Seed
	recpts *receiptFlusher

	mu         sync.Mutex
	base       context.Context // Run's context, without its cancellation
	membership bus.Membership
	parts      map[int32]*partition
	joined     chan struct{} // closed once the consumer group is joined
}

// Joined is closed once Run has joined the consumer group, so records
// published from then on are owned by some member (the embedded bus keeps
// nothing for a group that has not joined yet).
func (s *Sequencer) Joined() <-chan struct{} { return s.joined }

// countStored adds durably stored messages to the MessagesSent metric.
func (s *Sequencer) countStored(msgs []*parleyv1.Message) {
	if s.cfg.Metrics == nil {
		return
	}
	for _, m := range msgs {
		s.cfg.Metrics.MessagesSent.WithLabelValues(kindLabel(m.GetKind())).Inc()
	}
}

// kindLabel is the metric label of a message kind: "text", "media", "member_added", ...
func kindLabel(k parleyv1.MessageKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "MESSAGE_KIND_"))
}

// NewSequencer returns a sequencer for cfg (zero limits take the defaults).
// It fails for an empty member id or a node id outside 0..1023.
func NewSequencer(cfg Config, st store.MessageStore, b bus.Bus, r *Router) (*Sequencer, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	node, err := snowflake.NewNode(cfg.NodeID)
	if err != nil {
		return nil, fmt.Errorf("snowflake node %d: %w", cfg.NodeID, err)
	}
	s := &Sequencer{
		cfg:    cfg,
		st:     st,
		b:      b,
		r:      r,
		node:   node,
		log:    cfg.Logger.With("component", "chat.sequencer", "member", cfg.Member),
		seed:   maphash.MakeSeed(),
		parts:  make(map[int32]*partition),
		base:   context.Background(),
		joined: make(chan struct{}),
	}
	s.recpts = newReceiptFlusher(st, s.log)
	return s, nil
}

// Run joins the group and serves its partitions until ctx ends; then it
// winds its partitions down (current batches finish, receipts are flushed,
// offsets committed), leaves the group and returns nil. It returns an error
// if it cannot join.
func (s *Sequencer) Run(ctx context.Context) error {
	s.mu.Lock()
	s.base = context.WithoutCancel(ctx)
	s.mu.Unlock()
	// Not ctx itself: when ctx ends the partitions are first wound down here
	// (finish the current batches, flush receipts, commit) while still
	// owned, and only then the group is left.
	m, err := s.b.Join(context.WithoutCancel(ctx), GroupName, s.cfg.IngressTopic, s.cfg.Member, s)
	if err != nil {
		return fmt.Errorf("join %s on %s: %w", GroupName, s.cfg.IngressTopic, err)
	}
	s.mu.Lock()
	s.membership = m
	s.mu.Unlock()
	close(s.joined)

	t := time.NewTicker(tick)
	defer t.Stop()
	lastFlush, lastSweep, lastCommit := time.Now(), time.Now(), time.Now()
	for {
		select {
		case <-ctx.Done():
			s.revoke(s.owned())
			if err := m.Leave(); err != nil && !errors.Is(err, bus.ErrClosed) {
				s.log.Warn("leave group", "err", err)
			}
			// Partitions assigned between the wind-down and Leave.
			s.revoke(s.owned())
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revokeGrace)
			s.recpts.flush(fctx, nil)
			cancel()
			return nil
		case now := <-t.C:
			if now.Sub(lastFlush) >= s.cfg.ReceiptFlush {
				lastFlush = now
				s.recpts.flush(ctx, nil)
			}
			sweep := now.Sub(lastSweep) >= sweepEvery
			if sweep {
				lastSweep = now
			}
			commit := now.Sub(lastCommit) >= commitEvery
			if commit {
				lastCommit = now
			}
			for _, p := range s.snapshot() {
				if commit {
					s.commit(p)
				}
				if sweep {
					p.sweep(now, s.cfg.StateIdle, s.cfg.MaxStates)
				}
			}
		}
	}
}

// Assigned starts owning partitions (bus.GroupHandler).
func (s *Sequencer) Assigned(partitions []int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range partitions {
		if _, ok := s.parts[id]; ok {
			continue
		}
		s.parts[id] = newPartition(s, id, s.base)
		s.log.Debug("partition assigned", "partition", id)
	}
}

// Revoked stops owning partitions (bus.GroupHandler): their conversation
// workers finish their current batch (or are cancelled after a grace period),
// queued records are abandoned uncommitted for the next owner, receipts are
// flushed, the completed offsets committed and all state dropped.
func (s *Sequencer) Revoked(partitions []int32) { s.revoke(partitions) }

func (s *Sequencer) revoke(partitions []int32) {
	s.mu.Lock()
	var ps []*partition
	for _, id := range partitions {
		if p, ok := s.parts[id]; ok {
			ps = append(ps, p)
			delete(s.parts, id)
		}
	}
	s.mu.Unlock()
	if len(ps) == 0 {
		return
	}
	for _, p := range ps {
		p.close()
	}
	for _, p := range ps {
		p.wait(revokeGrace)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.base), revokeGrace)
	defer cancel()
	s.recpts.flush(ctx, func(part int32) bool {
		return slices.ContainsFunc(ps, func(p *partition) bool { return p.id == part })
	})
	for _, p := range ps {
		s.commit(p)
		s.log.Debug("partition revoked", "partition", p.id)
	}
}

// Handle routes one ingress record to its conversation's queue
// (bus.GroupHandler). It blocks while the partition has MaxInflight records
// in progress.
func (s *Sequencer) Handle(ctx context.Context, rec bus.Record) {
	s.mu.Lock()
	p := s.parts[rec.Partition]
	s.mu.Unlock()
	if p == nil {
		return // not ours (any more): the owner will handle it
	}
	s.cfg.Metrics.ObserveSince(metrics.StageIngressConsume, rec.Time)
	in := &parleyv1.IngressRecord{}
	if err := proto.Unmarshal(rec.Value, in); err != nil {
		s.log.Warn("dropping undecodable ingress record", "partition", rec.Partition, "offset", rec.Offset, "err", err)
		p.track(rec.Offset)
		p.complete(rec.Offset)
		return
	}
	p.enqueue(ctx, &job{offset: rec.Offset, rec: in})
}

func (s *Sequencer) owned() []int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]int32, 0, len(s.parts))
	for id := range s.parts {
		ids = append(ids, id)
	}
	return ids
}

func (s *Sequencer) snapshot() []*partition {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := make([]*partition, 0, len(s.parts))
	for _, p := range s.parts {
		ps = append(ps, p)
	}
	return ps
}

// commit commits p's completed prefix if it advanced.
func (s *Sequencer) commit(p *partition) {
	s.mu.Lock()
	m := s.membership
	s.mu.Unlock()
	if m == nil {
		return // Join has not returned yet; the next tick commits
	}
	off, ok := p.committable()
	if !ok {
		return
	}
	if err := m.Commit(p.id, off); err != nil {
		s.log.Warn("commit offset", "partition", p.id, "offset", off, "err", err)
		return
	}
	p.committed(off)
}

// job is one ingress record in a conversation queue.
type job struct {
	offset int64
	rec    *parleyv1.IngressRecord
	// finished is set once the record is fully handled (replied, or
	// deliberately dropped); unfinished jobs are not committed.
	finished bool
}

// partition is one owned ingress partition.
type partition struct {
	s      *Sequencer
	id     int32
	ctx    context.Context // cancelled when revocation's grace ends
	cancel context.CancelFunc
	done   chan struct{} // closed when revocation starts
	sem    chan struct{} // MaxInflight tokens
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	convs  map[string]*conversation
	// Offsets in progress, ascending (Handle runs in offset order), and the
	// finished ones among them; next is the offset to commit (-1: none yet).
	inflight   []int64
	finishedAt map[int64]struct{}
	next       int64
	lastCommit int64
}

func newPartition(s *Sequencer, id int32, base context.Context) *partition {
	ctx, cancel := context.WithCancel(base)
	return &partition{
		s: s, id: id, ctx: ctx, cancel: cancel,
		done:       make(chan struct{}),
		sem:        make(chan struct{}, s.cfg.MaxInflight),
		convs:      make(map[string]*conversation),
		finishedAt: make(map[int64]struct{}),
		next:       -1,
		lastCommit: -1,
	}
}

func (p *partition) track(off int64) {
	p.mu.Lock()
	p.inflight = append(p.inflight, off)
	p.mu.Unlock()
}

// complete marks off finished and advances the committable prefix.
func (p *partition) complete(off int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finishedAt[off] = struct{}{}
	for len(p.inflight) > 0 {
		first := p.inflight[0]
		if _, ok := p.finishedAt[first]; !ok {
			break
		}
		delete(p.finishedAt, first)
		p.inflight = p.inflight[1:]
		p.next = first + 1
	}
}

func (p *partition) committable() (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next, p.next > p.lastCommit
}

func (p *partition) committed(off int64) {
	p.mu.Lock()
	if off > p.lastCommit {
		p.lastCommit = off
	}
	p.mu.Unlock()
}

// enqueue appends j to its conversation's queue, starting the conversation's
// worker if it is idle.
func (p *partition) enqueue(ctx context.Context, j *job) {
	select {
	case p.sem <- struct{}{}:
	case <-p.done:
		return
	case <-ctx.Done():
		return
	}
	p.track(j.offset)
	key := j.rec.GetConversationId()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.sem
		return
	}
	c := p.convs[key]
	if c == nil {
		c = &conversation{p: p, id: key}
		p.convs[key] = c
	}
	c.queue = append(c.queue, j)
	c.used = time.Now()
	start := !c.running
	if start {
		c.running = true
		p.wg.Add(1)
	}
	p.mu.Unlock()
	if start {
		go c.run()
	}
}

// take takes up to max queued jobs of c, or reports that c's worker should
// exit (queue empty or partition closing).
func (p *partition) take(c *conversation, max int) []*job {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(c.queue) == 0 {
		c.running = false
		c.queue = nil
		return nil
	}
	n := min(len(c.queue), max)
	jobs := c.queue[:n:n]
	c.queue = c.queue[n:]
	c.used = time.Now()
	return jobs
}

// finish completes the finished jobs and releases their inflight tokens.
func (p *partition) finish(jobs []*job) {
	for _, j := range jobs {
		if j.finished {
			p.complete(j.offset)
		}
		<-p.sem
	}
}

func (p *partition) close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(p.done)
	}
	p.mu.Unlock()
}

// wait waits for the workers, cancelling their context after grace.
func (p *partition) wait(grace time.Duration) {
	ch := make(chan struct{})
	go func() { p.wg.Wait(); close(ch) }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
		p.s.log.Warn("conversation workers slow to stop; cancelling", "partition", p.id)
		p.cancel()
		<-ch
	}
	p.cancel()
}

// sweep drops the cached state of conversations idle for longer than idle,
// and of the least recently used idle ones beyond maxStates.
func (p *partition) sweep(now time.Time, idle time.Duration, maxStates int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var idleConvs []*conversation
	for k, c := range p.convs {
		if c.running || len(c.queue) > 0 {
			continue
		}
		if now.Sub(c.used) > idle {
			delete(p.convs, k)
			continue
		}
		idleConvs = append(idleConvs, c)
	}
	if over := len(p.convs) - maxStates; over > 0 {
		slices.SortFunc(idleConvs, func(a, b *conversation) int { return a.used.Compare(b.used) })
		for _, c := range idleConvs[:min(over, len(idleConvs))] {
			delete(p.convs, c.id)
		}
	}
}
