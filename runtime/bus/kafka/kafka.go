// Package kafka is the Kafka backend of bus.Bus, on franz-go (kgo + kadm).
//
// Mapping (docs/design.md §2):
//   - Publish is an idempotent acks=all produce that returns after the ack;
//     concurrent Publish calls share batches (Config.Linger). Keyed records
//     go to bus.PartitionFor(key, n), computed here and set on the record
//     (kgo.ManualPartitioner), so the memory bus and Kafka place every
//     conversation on the same partition.
//   - Join is a classic consumer-group member with static membership (the
//     member id is the group.instance.id) and the cooperative-sticky balancer,
//     so a restarted chat pod gets its partitions back without a rebalance and
//     a rebalance only stops the partitions that move.
//   - Subscribe is a direct (group-less) consumer of one partition, starting
//     at the partition's end offset as listed when Subscribe is called.
//
// Leaving and static membership: Kafka keeps a static member's partitions
// reserved until its session times out, and kgo never sends a LeaveGroup for
// a static member. Membership.Leave means "hand my partitions over now"
// (bus.Membership), so after kgo has revoked the partitions (Revoked ran and
// could commit) Leave removes the instance from the group explicitly with a
// LeaveGroup request naming its instance id (KIP-345), and the remaining
// members are assigned its partitions at their next heartbeat. Bus.Close,
// by contrast, does not leave: the instance's partitions wait for a member
// with the same id for up to Config.SessionTimeout, which is what a process
// that crashes or is restarted without Leave gets.
//
// For the chat role this means: a graceful stop (Sequencer.Run winds down,
// then Leaves) hands its partitions over at once, moving only those
// (cooperative); a killed pod that comes back within SessionTimeout resumes
// its own partitions with no rebalance at all; a member stalled past
// SessionTimeout loses its partitions to the others and learns it at its
// next heartbeat (Revoked, as kgo's "lost"), while the store's conditional
// append fences any write it makes in between.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/parleychat/parley/runtime/bus"
)

// Config configures a Bus. Zero values take the defaults named per field.
type Config struct {
	// Brokers are the seed brokers, "host:port"; at least one.
	Brokers []string
	// ClientID names this process in broker logs and quotas; default
	// "parley". Group members append "-<member id>".
	ClientID string
	// Linger is how long the producer waits for more records before sending
	// a batch; default 2ms. Concurrent Publish calls share batches.
	Linger time.Duration
	// ReplicationFactor of the topics CreateTopic creates; default 1 (a
	// single development broker). Production uses 3 (with the brokers'
	// min.insync.replicas=2, so an acks=all Publish is on two replicas).
	ReplicationFactor int16
	// PublishTimeout bounds how long one record may wait for its ack,
	// retries included (the caller's context may end it sooner); default
	// 10s.
	PublishTimeout time.Duration
	// SessionTimeout is how long the group coordinator waits for a silent
	// member (a crashed or restarting one) before giving its partitions to
	// the others; default 30s, long enough for a pod restart to rejoin
	// under the same instance id without a rebalance. Brokers accept
	// 6s..30min by default (group.min/max.session.timeout.ms).
	SessionTimeout time.Duration
	// HeartbeatInterval is how often a member heartbeats, which is also how
	// soon it notices a rebalance; at most a third of SessionTimeout;
	// default 3s or a third of SessionTimeout if that is less.
	HeartbeatInterval time.Duration
	// RebalanceTimeout is how long members may take to revoke (finish
	// in-flight records and commit) during a rebalance; default 60s.
	RebalanceTimeout time.Duration
	// JoinTimeout bounds how long Join waits for the member's first
	// assignment; default RebalanceTimeout.
	JoinTimeout time.Duration
	// RequestTimeout bounds metadata, commit and leave requests made
	// without a caller's context; default 10s.
	RequestTimeout time.Duration
	// MaxQueued is how many fetched records of one partition may wait for
	// Handle before fetching that partition pauses; default 1000.
	MaxQueued int
	// Logger receives the client's warnings and errors (and its info
	// messages when debug logging is enabled); default slog.Default().
	Logger *slog.Logger
	// OnRequest, when set, is called for every request a client of the bus
	// wrote to a broker, with the request's API name ("Produce", "Fetch",
	// "OffsetCommit", ...: kmsg.NameForKey). It runs on the client's
	// connection goroutine and must be quick (a counter).
	OnRequest func(api string)
	// NoPing skips New's check that a broker answers: for a producer to
	// another region, which must not keep this region from starting while
	// the link is down (its publishes fail until the brokers answer).
	NoPing bool
}

func (c Config) withDefaults() (Config, error) {
	if len(c.Brokers) == 0 {
		return c, errors.New("kafka: no brokers configured")
	}
	if c.ClientID == "" {
		c.ClientID = "parley"
	}
	if c.Linger <= 0 {
		c.Linger = 2 * time.Millisecond
	}
	if c.ReplicationFactor <= 0 {
		c.ReplicationFactor = 1
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 10 * time.Second
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 30 * time.Second
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = min(3*time.Second, c.SessionTimeout/3)
	}
	if c.RebalanceTimeout <= 0 {
		c.RebalanceTimeout = 60 * time.Second
	}
	if c.JoinTimeout <= 0 {
		c.JoinTimeout = c.RebalanceTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 10 * time.Second
	}
	if c.MaxQueued <= 0 {
		c.MaxQueued = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.HeartbeatInterval > c.SessionTimeout/3 {
		return c, fmt.Errorf("kafka: heartbeat interval %v is more than a third of the session timeout %v", c.HeartbeatInterval, c.SessionTimeout)
	}
	return c, nil
}

// Bus is a bus.Bus on a Kafka cluster. It holds one producer/admin client;
// each Join and each Subscribe has a client of its own (a kgo client
// consumes as one group member or one set of partitions).
type Bus struct {
	cfg Config
	log *slog.Logger
	cl  *kgo.Client // producer; metadata and admin requests through adm
	adm *kadm.Client
	// produceWrites counts produce requests the producer wrote to a broker
	// (producedHook). A publish that failed while it did not move wrote
	// nothing its record could have been in: bus.ErrNotSent.
	produceWrites atomic.Uint64
	// ctx is cancelled by Close: it ends subscriptions, Join watches and
	// requests made on the bus's behalf.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // goroutines started by goroutine()
	// joinMu serializes Joins, so replacing a member of the same id
	// finishes before its successor's client joins.
	joinMu sync.Mutex

	mu      sync.RWMutex
	closed  bool
	parts   map[string]int32 // partition counts by topic
	members map[memberKey]*membership
}

var _ bus.Bus = (*Bus)(nil)

// New connects to cfg.Brokers and returns a Bus. It fails if no broker
// answers before ctx ends, unless cfg.NoPing.
func New(ctx context.Context, cfg Config) (*Bus, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	b := &Bus{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "bus.kafka"),
		parts:   make(map[string]int32),
		members: make(map[memberKey]*membership),
	}
	opts := append(b.clientOpts(cfg.ClientID),
		// acks=all and idempotence are kgo's defaults; spelled out because
		// the bus promises them (bus.Bus.Publish).
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(cfg.Linger),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RecordDeliveryTimeout(cfg.PublishTimeout),
		// Without this an idempotent producer keeps waiting for a record
		// already sent to an unresponsive broker, past the caller's ctx and
		// PublishTimeout. Parley prefers a bounded Publish: a record failed
		// this way may still land, so a retry can duplicate it, which both
		// patterns tolerate (ingress dedupes by client_msg_id, clients
		// dedupe deliveries by seq).
		kgo.AllowIdempotentProduceCancellation(),
		kgo.WithHooks(producedHook{b}),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: new client: %w", err)
	}
	if err := cl.Ping(ctx); err != nil && !cfg.NoPing {
		cl.Close()
		return nil, fmt.Errorf("kafka: no broker of %v answered: %w", cfg.Brokers, err)
	}
	b.cl, b.adm = cl, kadm.NewClient(cl)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

// clientOpts are the options every client of the bus shares.
func (b *Bus) clientOpts(clientID string) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(b.cfg.Brokers...),
		kgo.ClientID(clientID),
		kgo.WithLogger(newLogger(b.log)),
	}
	if b.cfg.OnRequest != nil {
		opts = append(opts, kgo.WithHooks(requestHook(b.cfg.OnRequest)))
	}
	return opts
}

// producedHook counts the produce requests the producer wrote
// (Bus.produceWrites).
type producedHook struct{ b *Bus }

func (h producedHook) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err == nil && key == kmsg.Produce.Int16() {
		h.b.produceWrites.Add(1)
	}
}

// sent classifies a produce failure: wrapped in bus.ErrNotSent when no
// produce request was written since writes was read — the record cannot be
// on a broker, so a retry cannot duplicate it (the broker refused the
// connection, say). Otherwise (a request was written; perhaps with the
// record, perhaps another's) the outcome is unknown and err is returned as
// it is. Conservative by construction: "unknown" is always safe to answer.
func (b *Bus) sent(writes uint64, err error) error {
	if b.produceWrites.Load() == writes {
		return fmt.Errorf("%w: %w", bus.ErrNotSent, err)
	}
	return err
}

// requestHook passes the API name of every request written to a broker to
// Config.OnRequest (kgo.HookBrokerWrite).
type requestHook func(api string)

func (h requestHook) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err == nil {
		h(kmsg.NameForKey(key))
	}
}

// CreateTopic creates t with Config.ReplicationFactor if it does not exist,
// and returns once every partition has a leader, so it can be published to
// and consumed. It fails if the topic exists with another partition count.
func (b *Bus) CreateTopic(ctx context.Context, t bus.Topic) error {
	if t.Name == "" || t.Partitions < 1 {
		return fmt.Errorf("create topic %q: need a name and at least 1 partition, got %d", t.Name, t.Partitions)
	}
	if b.isClosed() {
		return bus.ErrClosed
	}
	ctx, cancel := b.withBus(ctx)
	defer cancel()
	_, err := b.adm.CreateTopic(ctx, t.Partitions, b.cfg.ReplicationFactor, nil, t.Name)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return b.closedOr(fmt.Errorf("create topic %q: %w", t.Name, err))
	}
	n, err := b.waitLeaders(ctx, t.Name)
	if err != nil {
		return b.closedOr(fmt.Errorf("create topic %q: %w", t.Name, err))
	}
	if n != t.Partitions {
		return fmt.Errorf("create topic %q: exists with %d partitions, not %d", t.Name, n, t.Partitions)
	}
	return nil
}

// waitLeaders polls the topic's metadata until it exists and every
// partition has a leader, and returns its partition count.
func (b *Bus) waitLeaders(ctx context.Context, topic string) (int32, error) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		n, ready, err := b.describe(ctx, topic)
		if err == nil && ready {
			b.mu.Lock()
			b.parts[topic] = n
			b.mu.Unlock()
			return n, nil
		}
		if err != nil && !errors.Is(err, kerr.UnknownTopicOrPartition) && !errors.Is(err, kerr.LeaderNotAvailable) {
			return 0, err
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("partitions have no leader yet")
			}
			return 0, fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// describe returns topic's partition count from the brokers and whether
// every partition has a leader.
func (b *Bus) describe(ctx context.Context, topic string) (int32, bool, error) {
	tds, err := b.adm.ListTopics(ctx, topic)
	if err != nil {
		return 0, false, err
	}
	td, ok := tds[topic]
	if !ok {
		return 0, false, kerr.UnknownTopicOrPartition
	}
	if td.Err != nil {
		return 0, false, td.Err
	}
	ready := len(td.Partitions) > 0
	for _, p := range td.Partitions {
		if p.Err != nil || p.Leader < 0 {
			ready = false
		}
	}
	return int32(len(td.Partitions)), ready, nil
}

// Partitions returns the partition count of topic, cached after the first
// look-up (Parley never adds partitions to a live topic: that would move
// conversations between sequencers).
func (b *Bus) Partitions(topic string) (int32, error) {
	b.mu.RLock()
	closed := b.closed
	n, ok := b.parts[topic]
	b.mu.RUnlock()
	if closed {
		return 0, bus.ErrClosed
	}
	if ok {
		return n, nil
	}
	return b.loadPartitions(topic)
}

// loadPartitions asks the brokers for topic's partition count and caches it.
func (b *Bus) loadPartitions(topic string) (int32, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.RequestTimeout)
	defer cancel()
	n, _, err := b.describe(ctx, topic)
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return 0, fmt.Errorf("topic %q does not exist", topic)
	}
	if err != nil {
		return 0, b.closedOr(fmt.Errorf("partitions of %q: %w", topic, err))
	}
	b.mu.Lock()
	b.parts[topic] = n
	b.mu.Unlock()
	return n, nil
}

// Publish produces value to topic and returns once the partition's in-sync
// replicas have it (acks=all), or with the error that failed it: a
// partition out of range, ctx's error, or the broker's after retries
// (Config.PublishTimeout). A record that failed after it was sent may still
// have been stored (the outcome is unknown), so a retry may duplicate it.
// Keyed records (partition < 0) go to bus.PartitionFor(key, n). Key and
// value may be reused once Publish returns.
func (b *Bus) Publish(ctx context.Context, topic string, partition int32, key, value []byte) error {
	if b.isClosed() {
		return bus.ErrClosed // bare, unlike PublishAll's per-record ErrNotSent
	}
	// One record down PublishAll's produce path.
	if errs := b.PublishAll(ctx, []bus.Message{{Topic: topic, Partition: partition, Key: key, Value: value}}); errs != nil {
		return errs[0]
	}
	return nil
}

// PublishAll implements bus.Bus: one ProduceSync of every record, which
// kgo sends in one produce request per broker (ProduceSync drains the
// partitions it buffered at once instead of lingering). Errors are as
// Publish's.
func (b *Bus) PublishAll(ctx context.Context, msgs []bus.Message) []error {
	recs, index, errs := b.records(msgs)
	if len(recs) == 0 {
		return errs
	}
	// The publish timeout bounds the whole call, whatever kgo's retries do
	// (Config.PublishTimeout: a caller is answered within it).
	ctx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
	defer cancel()
	writes := b.produceWrites.Load()
	for _, res := range b.cl.ProduceSync(ctx, recs...) {
		if res.Err != nil {
			errs = setErr(errs, len(msgs), index[res.Record], b.produceErr(writes, res.Record, res.Err))
		}
	}
	return errs
}

// PublishAllAsync is PublishAll without waiting: it hands msgs to the
// client in order and returns; done gets PublishAll's result once every
// record is acknowledged or failed (on a client goroutine; it must not
// block). Records of successive calls keep their call order within a
// partition, so a caller can keep several batches in flight across a slow
// link (the mesh's publishes to another region) without reordering them.
func (b *Bus) PublishAllAsync(ctx context.Context, msgs []bus.Message, done func([]error)) {
	recs, index, errs := b.records(msgs)
	if len(recs) == 0 {
		done(errs)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.PublishTimeout)
	writes := b.produceWrites.Load()
	var mu sync.Mutex
	var left atomic.Int64
	left.Store(int64(len(recs)))
	promise := func(r *kgo.Record, err error) {
		if err != nil {
			mu.Lock()
			errs = setErr(errs, len(msgs), index[r], b.produceErr(writes, r, err))
			mu.Unlock()
		}
		if left.Add(-1) == 0 {
			cancel()
			mu.Lock()
			out := errs
			mu.Unlock()
			done(out)
		}
	}
	for _, r := range recs {
		b.cl.Produce(ctx, r, promise)
	}
}

// records turns msgs into kgo records with their partitions, and the
// errors of those that cannot be sent (nil when none).
func (b *Bus) records(msgs []bus.Message) (recs []*kgo.Record, index map[*kgo.Record]int, errs []error) {
	if b.isClosed() {
		for i := range msgs {
			errs = setErr(errs, len(msgs), i, fmt.Errorf("%w: %w", bus.ErrNotSent, bus.ErrClosed))
		}
		return nil, nil, errs
	}
	recs = make([]*kgo.Record, 0, len(msgs))
	index = make(map[*kgo.Record]int, len(msgs))
	for i, m := range msgs {
		p, err := b.partitionOf(m.Topic, m.Partition, m.Key)
		if err != nil {
			errs = setErr(errs, len(msgs), i, fmt.Errorf("publish: %w: %w", bus.ErrNotSent, err))
			continue
		}
		r := &kgo.Record{Topic: m.Topic, Partition: p, Key: m.Key, Value: m.Value}
		recs = append(recs, r)
		index[r] = i
	}
	return recs, index, errs
}

// produceErr is the error of a record kgo failed: not sent when no produce
// request was written meanwhile (b.sent), closed when the bus closed.
func (b *Bus) produceErr(writes uint64, r *kgo.Record, err error) error {
	return b.closedOr(b.sent(writes, fmt.Errorf("publish to %s/%d: %w", r.Topic, r.Partition, err)))
}

// setErr sets errs[i] = err, making errs (of length n) on the first error.
func setErr(errs []error, n, i int, err error) []error {
	if errs == nil {
		errs = make([]error, n)
	}
	errs[i] = err
	return errs
}

// partitionOf returns the partition a record for topic goes to: partition
// itself when it is in range, bus.PartitionFor(key, n) when it is negative.
func (b *Bus) partitionOf(topic string, partition int32, key []byte) (int32, error) {
	n, err := b.Partitions(topic)
	if err != nil {
		return 0, err
	}
	if partition >= n {
		// The cache may predate partitions added by an operator.
		if n, err = b.loadPartitions(topic); err != nil {
			return 0, err
		}
	}
	switch {
	case partition < 0:
		return bus.PartitionFor(key, n), nil
	case partition >= n:
		return 0, fmt.Errorf("partition %d of topic %q out of range [0, %d)", partition, topic, n)
	}
	return partition, nil
}

// Lag implements bus.Lagger: end offsets, start offsets and the group's
// committed offsets, three admin requests within ctx.
func (b *Bus) Lag(ctx context.Context, group, topic string) (int64, error) {
	ctx, cancel := b.withBus(ctx)
	defer cancel()
	ends, err := b.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, b.closedOr(fmt.Errorf("kafka: end offsets of %s: %w", topic, err))
	}
	if len(ends[topic]) == 0 {
		return 0, fmt.Errorf("kafka: lag of %s on %s: %w", group, topic, kerr.UnknownTopicOrPartition)
	}
	starts, err := b.adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return 0, b.closedOr(fmt.Errorf("kafka: start offsets of %s: %w", topic, err))
	}
	committed, err := b.adm.FetchOffsets(ctx, group)
	if err != nil {
		return 0, b.closedOr(fmt.Errorf("kafka: committed offsets of group %s: %w", group, err))
	}
	var lag int64
	for p, end := range ends[topic] {
		from := starts[topic][p].Offset
		if c, ok := committed.Lookup(topic, p); ok && c.Err == nil && c.At > from {
			from = c.At
		}
		lag += max(end.Offset-from, 0)
	}
	return lag, nil
}

// Subscribe calls fn for each record of one partition from its current end
// on, in order, on one goroutine, until ctx ends or the bus closes. The
// start offset is fixed before Subscribe returns. Each subscription is a
// client of its own (two subscriptions of one partition may start at
// different offsets).
func (b *Bus) Subscribe(ctx context.Context, topic string, partition int32, fn func(bus.Record)) error {
	if b.isClosed() {
		return bus.ErrClosed
	}
	if fn == nil {
		return errors.New("subscribe: nil func")
	}
	n, err := b.Partitions(topic)
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if partition < 0 || partition >= n {
		return fmt.Errorf("subscribe: partition %d of topic %q out of range [0, %d)", partition, topic, n)
	}
	sctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(b.ctx, cancel)
	fail := func(err error) error {
		stop()
		cancel()
		return b.closedOr(err)
	}
	lctx, lcancel := context.WithTimeout(sctx, b.cfg.RequestTimeout)
	ends, err := b.adm.ListEndOffsets(lctx, topic)
	lcancel()
	if err != nil {
		return fail(fmt.Errorf("subscribe %s/%d: end offset: %w", topic, partition, err))
	}
	end, ok := ends.Lookup(topic, partition)
	if !ok || end.Err != nil {
		return fail(fmt.Errorf("subscribe %s/%d: end offset: %v", topic, partition, end.Err))
	}
	cl, err := kgo.NewClient(append(b.clientOpts(b.cfg.ClientID),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
			topic: {partition: kgo.NewOffset().At(end.Offset)},
		}),
		// A subscriber that fell behind retention skips to the live end:
		// pushes are best effort and clients pull what they missed.
		kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd()),
	)...)
	if err != nil {
		return fail(fmt.Errorf("subscribe %s/%d: %w", topic, partition, err))
	}
	started := b.goroutine(func() {
		defer cl.Close()
		defer stop()
		defer cancel()
		for {
			fs := cl.PollFetches(sctx)
			if sctx.Err() != nil {
				return
			}
			fs.EachError(func(t string, p int32, err error) {
				if !errors.Is(err, kgo.ErrClientClosed) {
					b.log.Warn("subscription fetch failed", "topic", t, "partition", p, "err", err)
				}
			})
			if fs.IsClientClosed() {
				return
			}
			for it := fs.RecordIter(); !it.Done(); {
				r := it.Next()
				if sctx.Err() != nil {
					return
				}
				fn(record(r))
			}
		}
	})
	if !started {
		cl.Close()
		return fail(bus.ErrClosed)
	}
	return nil
}

// record converts a fetched record; kgo does not reuse its buffers.
func record(r *kgo.Record) bus.Record {
	return bus.Record{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Time: r.Timestamp}
}

// Close leaves no group: each member stops without Revoked (as the memory
// bus does; a member that wants a clean handoff Leaves first) and, being
// static, keeps its partitions reserved until Config.SessionTimeout. Then
// subscriptions stop, the producer flushes and every client closes. No
// callback runs after Close returns; later calls return bus.ErrClosed.
// Close is idempotent.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	ms := make([]*membership, 0, len(b.members))
	for _, m := range b.members {
		ms = append(ms, m)
	}
	b.mu.Unlock()

	b.cancel()
	for _, m := range ms {
		_ = m.shutdown(stopClose)
	}
	b.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.RequestTimeout)
	defer cancel()
	err := b.cl.Flush(ctx)
	b.cl.Close()
	if err != nil {
		return fmt.Errorf("kafka: flush on close: %w", err)
	}
	return nil
}

func (b *Bus) isClosed() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.closed
}

// closedOr returns bus.ErrClosed (wrapping err) once the bus is closed, so
// callers can tell a shutdown from a failure; otherwise err.
func (b *Bus) closedOr(err error) error {
	if b.isClosed() || errors.Is(err, kgo.ErrClientClosed) {
		return fmt.Errorf("%w: %w", bus.ErrClosed, err)
	}
	return err
}

// withBus returns ctx also cancelled by Close.
func (b *Bus) withBus(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(b.ctx, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

// goroutine runs f on a goroutine Close waits for, unless the bus is
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

// logger adapts kgo's logging to slog. kgo's info level narrates every
// rebalance and metadata change, so it is passed on only when debug logging
// is on; kgo's own debug level is never enabled.
type logger struct {
	l     *slog.Logger
	level kgo.LogLevel
}

func newLogger(l *slog.Logger) *logger {
	level := kgo.LogLevelWarn
	if l.Enabled(context.Background(), slog.LevelDebug) {
		level = kgo.LogLevelInfo
	}
	return &logger{l: l, level: level}
}

func (l *logger) Level() kgo.LogLevel { return l.level }

func (l *logger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lv := slog.LevelDebug
	switch level {
	case kgo.LogLevelError:
		lv = slog.LevelError
	case kgo.LogLevelWarn:
		lv = slog.LevelWarn
	case kgo.LogLevelInfo:
		// Debug: see the type's comment.
	}
	l.l.Log(context.Background(), lv, "kafka: "+msg, keyvals...)
}
