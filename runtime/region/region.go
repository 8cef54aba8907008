// Package region connects one region's fleet to the other regions of a
// multi-region deployment (docs/multi-region.md): the mesh of peer regions
// and their Kafka clusters (Mesh), the outbox that forwards requests to
// their conversations' home regions (Outbox), and the consumer that routes
// deliveries other regions relayed here (Relay).
//
// Transport decision: the chat role produces to the peer region's own Kafka
// with a franz-go client (one per peer) instead of running Kafka's
// MirrorMaker 2. A forward must reach the home's ingress topic in order per
// conversation and be acknowledged before its outbox offset is committed,
// and a reply must reach one gateway's deliver partition of the origin
// region: both are single produce requests that a mirror would only delay
// and make harder to observe.
package region

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/chat/ingress"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// MaxRegionID is the largest region id: 3 bits of a Snowflake node id.
const MaxRegionID = 7

// Peer is another region of the mesh.
type Peer struct {
	// Name is the region's name (auth.ValidRegion), as in its topics
	// parley.<name>.*.
	Name string
	// ID is its region id 0..MaxRegionID: the top bits of the Snowflake
	// node ids of its chat role, and so of the group ids it mints.
	ID int
	// Brokers are seed brokers of its Kafka cluster, host:port.
	Brokers []string
}

// ParsePeer parses the --peer-region syntax "name=us,id=2,kafka=h:p;h:p".
// Every key is required once; errors name the problem.
func ParsePeer(s string) (Peer, error) {
	var p Peer
	seen := map[string]bool{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || v == "" {
			return Peer{}, fmt.Errorf("peer region %q: want name=NAME,id=N,kafka=HOST:PORT[;HOST:PORT], got item %q", s, kv)
		}
		if seen[k] {
			return Peer{}, fmt.Errorf("peer region %q: %s given twice", s, k)
		}
		seen[k] = true
		switch k {
		case "name":
			if !auth.ValidRegion(v) {
				return Peer{}, fmt.Errorf("peer region %q: name %q is not 1..63 bytes of a-z0-9- starting with a letter", s, v)
			}
			p.Name = v
		case "id":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > MaxRegionID {
				return Peer{}, fmt.Errorf("peer region %q: id %q is not 0..%d", s, v, MaxRegionID)
			}
			p.ID = n
		case "kafka":
			for _, b := range strings.Split(v, ";") {
				if _, _, ok := strings.Cut(b, ":"); !ok || strings.HasPrefix(b, ":") {
					return Peer{}, fmt.Errorf("peer region %q: broker %q is not host:port", s, b)
				}
				p.Brokers = append(p.Brokers, b)
			}
		default:
			return Peer{}, fmt.Errorf("peer region %q: unknown key %q (want name, id, kafka)", s, k)
		}
	}
	for _, k := range []string{"name", "id", "kafka"} {
		if !seen[k] {
			return Peer{}, fmt.Errorf("peer region %q: %s is missing", s, k)
		}
	}
	return p, nil
}

// ParsePeers parses a list of peers separated by white space (the
// --peer-region value, or the content of --peer-region-file); empty text is
// no peers.
func ParsePeers(text string) ([]Peer, error) {
	var out []Peer
	for _, item := range strings.Fields(text) {
		p, err := ParsePeer(item)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Config describes this region and its peers.
type Config struct {
	// Local and LocalID are this region's name and id.
	Local   string
	LocalID int
	// Own is this region's bus (the outbox is on it).
	Own bus.Bus
	// Peers are the other regions; each gets the bus Dial returns.
	Peers []Peer
	Dial  func(Peer) (bus.Bus, error)
	// PublishTimeout bounds one produce to a peer region (default 4 s).
	PublishTimeout time.Duration
	// Metrics, when set, observes cross-region traffic.
	Metrics *Metrics
	Logger  *slog.Logger
}

// Mesh is the set of regions one region talks to. It implements
// chat.Regions. Publishes to a peer are asynchronous (Run owns one sender
// per peer), so a slow or unreachable region never holds up a sequencer.
type Mesh struct {
	cfg Config
	out *bus.Coalescer // this region's outbox publishes
	log *slog.Logger

	// The peers change at run time (SetPeers, from --peer-region-file).
	mu    sync.RWMutex
	peers map[string]*peer
	names []string
	byID  map[int]string
	run   context.Context // Run's context once it runs; senders start under it
	wg    sync.WaitGroup  // senders
}

// peerQueue bounds the publishes waiting for one peer; past it they are
// dropped (counted): deliveries and replies are best effort, the store is
// the truth and clients repair by pull or retry.
const peerQueue = 4096

type peer struct {
	Peer
	b    bus.Bus
	q    chan []bus.Message
	down atomic.Bool
	// downSince is the unix ns of the failure that marked it down.
	downSince atomic.Int64
	// stop ends its sender (set when the sender starts); done is closed
	// when the sender has returned.
	stop context.CancelFunc
	done chan struct{}
}

// NewMesh validates cfg and dials every peer (see SetPeers for the errors).
func NewMesh(cfg Config) (*Mesh, error) {
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 4 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Mesh{cfg: cfg, out: bus.NewCoalescer(cfg.Own), peers: map[string]*peer{}, byID: map[int]string{cfg.LocalID: cfg.Local},
		log: cfg.Logger.With("component", "region.mesh", "region", cfg.Local)}
	if err := m.SetPeers(cfg.Peers); err != nil {
		return nil, err
	}
	return m, nil
}

// CheckPeers validates a peer list for a region named local with id
// localID: no peer named like it or with its id, no name or id twice.
func CheckPeers(local string, localID int, ps []Peer) error {
	names := map[string]bool{}
	ids := map[int]string{localID: local}
	for _, p := range ps {
		switch {
		case p.Name == local:
			return fmt.Errorf("peer region %s is this region", p.Name)
		case names[p.Name]:
			return fmt.Errorf("peer region %s given twice", p.Name)
		case ids[p.ID] != "":
			return fmt.Errorf("peer region %s has id %d, already the id of %s", p.Name, p.ID, ids[p.ID])
		}
		names[p.Name] = true
		ids[p.ID] = p.Name
	}
	return nil
}

// SetPeers makes ps the mesh's peers: new ones are dialled (and their
// senders started once Run runs), removed ones stopped and closed, and one
// whose id or brokers changed is replaced. Publishes queued for a removed
// peer are dropped; outbox records for it wait (docs/multi-region.md). It
// fails, changing nothing, on a list CheckPeers refuses or a peer that
// cannot be dialled.
func (m *Mesh) SetPeers(ps []Peer) error {
	if err := CheckPeers(m.cfg.Local, m.cfg.LocalID, ps); err != nil {
		return err
	}
	m.mu.RLock()
	var add []Peer
	keep := map[string]bool{}
	for _, p := range ps {
		if old := m.peers[p.Name]; old != nil && old.ID == p.ID && slices.Equal(old.Brokers, p.Brokers) {
			keep[p.Name] = true
			continue
		}
		add = append(add, p)
	}
	m.mu.RUnlock()
	dialled := make([]*peer, 0, len(add))
	for _, p := range add {
		b, err := m.cfg.Dial(p)
		if err != nil {
			for _, d := range dialled {
				_ = d.b.Close()
			}
			return fmt.Errorf("peer region %s: %w", p.Name, err)
		}
		dialled = append(dialled, &peer{Peer: p, b: b, q: make(chan []bus.Message, peerQueue)})
	}
	m.mu.Lock()
	var gone []*peer
	for name, p := range m.peers {
		if !keep[name] {
			gone = append(gone, p)
			delete(m.peers, name)
		}
	}
	for _, p := range dialled {
		m.peers[p.Name] = p
		if m.run != nil {
			m.startLocked(p)
		}
	}
	m.names = m.names[:0:0]
	m.byID = map[int]string{m.cfg.LocalID: m.cfg.Local}
	for name, p := range m.peers {
		m.names = append(m.names, name)
		m.byID[p.ID] = name
	}
	slices.Sort(m.names)
	m.mu.Unlock()
	for _, p := range gone {
		m.stopPeer(p)
	}
	if len(dialled) > 0 || len(gone) > 0 {
		m.log.Info("peer regions", "peers", m.Peers(), "added", len(dialled), "removed", len(gone))
	}
	return nil
}

// peer returns the peer named name, or nil.
func (m *Mesh) peer(name string) *peer {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.peers[name]
}

// startLocked starts p's sender under Run's context (m.mu held).
func (m *Mesh) startLocked(p *peer) {
	ctx, cancel := context.WithCancel(m.run)
	p.stop, p.done = cancel, make(chan struct{})
	m.cfg.Metrics.linkUp(p.Name, true)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(p.done)
		m.send(ctx, p)
	}()
}

// stopPeer stops p's sender, if it runs, and closes its bus.
func (m *Mesh) stopPeer(p *peer) {
	if p.stop != nil {
		p.stop()
		<-p.done
	}
	if err := p.b.Close(); err != nil {
		m.log.Warn("close peer region", "peer", p.Name, "err", err)
	}
}

// Local implements chat.Regions.
func (m *Mesh) Local() string { return m.cfg.Local }

// Known implements chat.Regions.
func (m *Mesh) Known(name string) bool { return name == m.cfg.Local || m.peer(name) != nil }

// RegionByID implements chat.Regions.
func (m *Mesh) RegionByID(id int) (string, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	n, ok := m.byID[id]
	return n, ok
}

// Peers implements chat.Regions: the peers' names, sorted (a copy).
func (m *Mesh) Peers() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.names)
}

// Down reports whether the last publish to peer failed (and since when).
func (m *Mesh) Down(name string) (bool, time.Time) {
	p := m.peer(name)
	if p == nil || !p.down.Load() {
		return false, time.Time{}
	}
	return true, time.Unix(0, p.downSince.Load())
}

// Forward implements chat.Regions: recs go into this region's outbox, keyed
// by conversation, in order.
func (m *Mesh) Forward(ctx context.Context, home string, recs []*parleyv1.IngressRecord) error {
	if m.peer(home) == nil {
		return fmt.Errorf("forward to region %q: not a peer of %s", home, m.cfg.Local)
	}
	msgs := make([]bus.Message, 0, len(recs))
	for _, r := range recs {
		v, err := proto.Marshal(&parleyv1.OutboxRecord{HomeRegion: home, Record: r})
		if err != nil {
			return fmt.Errorf("forward to region %s: encode: %w", home, err)
		}
		msgs = append(msgs, bus.Message{Topic: ingress.OutboxTopic(m.cfg.Local), Partition: -1, Key: []byte(r.GetConversationId()), Value: v})
	}
	var errs []error
	for i, err := range m.out.Publish(ctx, msgs) {
		if err != nil {
			errs = append(errs, fmt.Errorf("outbox record %d: %w", i, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("forward to region %s: %w", home, errors.Join(errs...))
	}
	m.cfg.Metrics.outboxed(home, len(recs))
	return nil
}

// Publish implements chat.Regions asynchronously: msgs are queued for the
// region's sender (Run) and the result is always nil errors; a full queue
// drops them (counted in parley_region_dropped_total).
func (m *Mesh) Publish(_ context.Context, region string, msgs []bus.Message) []error {
	p := m.peer(region)
	if p == nil {
		err := fmt.Errorf("region %q is not a peer of %s", region, m.cfg.Local)
		errs := make([]error, len(msgs))
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	select {
	case p.q <- msgs:
	default:
		m.cfg.Metrics.dropped(region, len(msgs))
	}
	return nil
}

// RelayBroadcast carries deliveries meant for every gateway (presence
// changes, which have no user ids) to every peer region, whose relay
// consumer broadcasts them to its own gateways. Asynchronous like Publish.
func (m *Mesh) RelayBroadcast(ctx context.Context, ds []*parleyv1.Delivery) {
	m.relayBroadcast(ctx, &parleyv1.RelayRecord{FromRegion: m.cfg.Local, Deliveries: ds})
}

// RelayPresenceRefresh carries the presence of users online in this region
// (presence.Service.Online, re-announced every heartbeat) to every peer
// region, whose relay consumer stores them and broadcasts to its gateways
// only those that change what it shows (Relay). It is how a peer catches up
// on changes lost while the link was down, and how a region that joins
// learns who is online. Asynchronous like Publish.
func (m *Mesh) RelayPresenceRefresh(ctx context.Context, ds []*parleyv1.Delivery) {
	m.relayBroadcast(ctx, &parleyv1.RelayRecord{FromRegion: m.cfg.Local, Deliveries: ds, PresenceRefresh: true})
}

func (m *Mesh) relayBroadcast(ctx context.Context, rr *parleyv1.RelayRecord) {
	names := m.Peers()
	if len(rr.GetDeliveries()) == 0 || len(names) == 0 {
		return
	}
	v, err := proto.Marshal(rr)
	if err != nil {
		m.log.Warn("encode relayed broadcast", "err", err)
		return
	}
	for _, name := range names {
		m.Publish(ctx, name, []bus.Message{{Topic: ingress.RelayTopic(name), Partition: -1, Value: v}})
	}
}

// publishTo produces msgs to p within PublishTimeout, marks p up or down by
// the outcome and calls done with it (PublishAll's errors): from the bus's
// goroutine once acknowledged when p's bus keeps publishes in flight in
// order (asyncPublisher), else before it returns. Relays, replies (Mesh.send)
// and outbox runs (drain.forward) all go through it.
func (m *Mesh) publishTo(ctx context.Context, p *peer, msgs []bus.Message, done func([]error)) {
	pctx, cancel := context.WithTimeout(ctx, m.cfg.PublishTimeout)
	finish := func(errs []error) {
		cancel()
		m.mark(p, slices.ContainsFunc(errs, func(e error) bool { return e != nil }), errs)
		done(errs)
	}
	if a, ok := p.b.(asyncPublisher); ok {
		a.PublishAllAsync(pctx, msgs, finish)
		return
	}
	finish(p.b.PublishAll(pctx, msgs))
}

func (m *Mesh) mark(p *peer, failed bool, errs []error) {
	if failed {
		if p.down.CompareAndSwap(false, true) {
			p.downSince.Store(time.Now().UnixNano())
			m.log.Warn("link to region down: its Kafka does not accept records", "peer", p.Name,
				"err", errors.Join(errs...))
		}
		m.cfg.Metrics.linkUp(p.Name, false)
		return
	}
	if p.down.CompareAndSwap(true, false) {
		m.log.Info("link to region up again", "peer", p.Name,
			"down_for", time.Since(time.Unix(0, p.downSince.Load())).Round(time.Millisecond))
	}
	m.cfg.Metrics.linkUp(p.Name, true)
}

// Run sends the queued publishes of every peer, with one sender per peer
// (peers added later get theirs), until ctx ends.
func (m *Mesh) Run(ctx context.Context) {
	m.mu.Lock()
	m.run = ctx
	for _, p := range m.peers {
		m.startLocked(p)
	}
	m.mu.Unlock()
	<-ctx.Done()
	m.wg.Wait()
}

// asyncPublisher is a bus that keeps several publishes in flight in call
// order (bus/kafka.Bus.PublishAllAsync).
type asyncPublisher interface {
	PublishAllAsync(ctx context.Context, msgs []bus.Message, done func([]error))
}

// maxInFlight bounds the batches in flight to one peer: across an 80 ms
// round trip, waiting for each batch's acknowledgement before sending the
// next would hold every reply and relay for up to a round trip.
const maxInFlight = 32

// send drains p's queue, publishing what has gathered since the last batch
// was handed to the client, with up to maxInFlight batches unacknowledged
// (one at a time on a bus that publishes synchronously).
func (m *Mesh) send(ctx context.Context, p *peer) {
	slots := make(chan struct{}, maxInFlight)
	defer func() { // wait for the batches in flight
		for range maxInFlight {
			slots <- struct{}{}
		}
	}()
	for {
		var msgs []bus.Message
		select {
		case <-ctx.Done():
			return
		case msgs = <-p.q:
		}
	gather:
		for len(msgs) < 1024 {
			select {
			case more := <-p.q:
				msgs = append(msgs, more...)
			default:
				break gather
			}
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		m.publishTo(ctx, p, msgs, func(errs []error) {
			m.sentBatch(p, msgs, errs)
			<-slots
		})
	}
}

// sentBatch counts the outcome of a batch sent to p.
func (m *Mesh) sentBatch(p *peer, msgs []bus.Message, errs []error) {
	failed := 0
	for _, e := range errs {
		if e != nil {
			failed++
		}
	}
	m.cfg.Metrics.sent(p.Name, len(msgs)-failed, failed)
}

// Close closes the peers' buses (not Own); call it after Run returned.
func (m *Mesh) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for _, p := range m.peers {
		if err := p.b.Close(); err != nil {
			errs = append(errs, fmt.Errorf("peer region %s: %w", p.Name, err))
		}
	}
	return errors.Join(errs...)
}
