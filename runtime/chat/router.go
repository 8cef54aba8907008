package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/chat/ingress"
	"github.com/parleychat/parley/runtime/coalesce"
	"github.com/parleychat/parley/runtime/presence"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// degradedLogEvery spaces the warnings of degraded routing.
const degradedLogEvery = 10 * time.Second

// maxRecordBytes bounds one DeliverRecord; a batch that would exceed it is
// split over several records (Kafka's default max message size is 1 MiB).
const maxRecordBytes = 512 << 10

// Router maps users to their sessions (presence.Registry) and sessions to
// gateways, and publishes DeliverRecords on the deliver topic: one record per
// gateway partition batching all its recipients, never one bus message per
// recipient. It is safe for concurrent use.
//
// Users without a live session get nothing pushed: they catch up by pull.
// Groups of BroadcastMinUsers or more go to every gateway without a lookup.
// For the others the registry is asked on every publish (no cache): a gateway registers a
// session before it serves sync, and a cache could hide that session from a
// message sequenced right after the sync (docs/design.md §2, repair by pull).
type Router struct {
	b   bus.Bus
	out *bus.Coalescer // publishes concurrent callers' records together
	reg presence.Registry
	// lookup runs concurrent callers' registry lookups as one (one Redis
	// pipeline instead of one per conversation batch: at 2,000 DM sends/s
	// the per-lookup round trips were a quarter of the chat role's CPU,
	// issue 11). It caches nothing: each lookup starts after its caller
	// asked.
	lookup *coalesce.Batcher[[]string, sessionsResult]
	topic  string
	log    *slog.Logger

	parts atomic.Int32 // deliver partition count, 0 until first looked up

	// degradedLog is the unix ns of the last "routing to every gateway"
	// warning: during a registry outage every publish degrades, and one
	// warning per interval says so.
	degradedLog atomic.Int64

	// offline, when set, gets the deliveries of users without a live
	// session (offline.go).
	offline func(ctx context.Context, users []string, d *parleyv1.Delivery)

	// regions, when set, carries replies to other regions' gateways and
	// relays every delivery to the other regions (SetRegions).
	regions Regions
}

// SetRegions makes r multi-region: a reply whose origin is another region's
// gateway goes to that region's deliver topic, and Publish relays every
// delivery once to each other region (ingress.RelayTopic), whose chat role routes it
// through its own registry (PublishLocal). Decision: relayed to every peer,
// not only to regions with online members — knowing those would take a
// cross-region registry read on the hot path, and a mesh has at most 8
// regions (docs/multi-region.md). Call before the first Publish.
func (r *Router) SetRegions(m Regions) { r.regions = m }

// NewRouter returns a router publishing to deliverTopic.
func NewRouter(b bus.Bus, reg presence.Registry, deliverTopic string) *Router {
	r := &Router{b: b, out: bus.NewCoalescer(b), reg: reg, topic: deliverTopic, log: slog.Default().With("component", "chat.router")}
	r.lookup = coalesce.New(r.lookupAll)
	return r
}

// sessionsResult is one registry lookup's outcome; m may hold users the
// caller did not ask for (it is shared by a batch of lookups, read only).
type sessionsResult struct {
	m   map[string][]presence.Session
	err error
}

// lookupAll looks up every user of a batch of lookups with one Sessions call.
func (r *Router) lookupAll(ctx context.Context, calls [][]string) []sessionsResult {
	users := calls[0]
	if len(calls) > 1 {
		seen := make(map[string]struct{})
		users = nil
		for _, us := range calls {
			for _, u := range us {
				if _, ok := seen[u]; !ok {
					seen[u] = struct{}{}
					users = append(users, u)
				}
			}
		}
	}
	m, err := r.reg.Sessions(ctx, users)
	outs := make([]sessionsResult, len(calls))
	for i := range outs {
		outs[i] = sessionsResult{m: m, err: err}
	}
	return outs
}

// Sessions returns the live sessions of userIDs from the registry, in one
// lookup with those of concurrent callers (see Router.lookup). The map may
// hold other users too; it must not be modified.
func (r *Router) Sessions(ctx context.Context, userIDs []string) (map[string][]presence.Session, error) {
	res := r.lookup.Do(ctx, userIDs)
	return res.m, res.err
}

// Deliver pushes d to every online session of userIDs: one DeliverRecord per
// gateway holding any of them, with d.user_ids set to that gateway's
// recipients. If the registry fails, it degrades to publishing to every
// deliver partition with all userIDs (each gateway pushes to whichever of
// them it holds). d itself is not modified.
func (r *Router) Deliver(ctx context.Context, userIDs []string, d *parleyv1.Delivery) error {
	var b Batch
	b.Deliver(userIDs, d)
	return r.Publish(ctx, &b)
}

// Broadcast publishes ds, in one DeliverRecord, to every gateway of this
// region (every deliver partition): for presence changes, which each
// gateway pushes to its own subscribers (deliveries without user ids).
func (r *Router) Broadcast(ctx context.Context, ds []*parleyv1.Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	n, err := r.partitions()
	if err != nil {
		return err
	}
	v, err := proto.Marshal(&parleyv1.DeliverRecord{Deliveries: ds})
	if err != nil {
		return fmt.Errorf("encode broadcast: %w", err)
	}
	msgs := make([]bus.Message, n)
	for p := range n {
		msgs[p] = bus.Message{Topic: r.topic, Partition: p, Value: v}
	}
	var errs []error
	for i, err := range r.out.Publish(ctx, msgs) {
		if err != nil {
			errs = append(errs, fmt.Errorf("publish %s[%d]: %w", r.topic, msgs[i].Partition, err))
		}
	}
	return errors.Join(errs...)
}

// Reply sends rep to the gateway of o (its deliver partition).
func (r *Router) Reply(ctx context.Context, o *parleyv1.Origin, rep *parleyv1.Reply) error {
	var b Batch
	b.Reply(o, rep)
	return r.Publish(ctx, &b)
}

// Batch collects replies and deliveries so that Router.Publish sends them
// with one registry lookup and one record per gateway partition. The zero
// value is empty and ready to use; a Batch is not safe for concurrent use.
type Batch struct {
	replies []originReply
	groups  []deliveryGroup
}

type originReply struct {
	gateway string
	region  string // "" = this region
	rep     *parleyv1.Reply
}

type deliveryGroup struct {
	users []string
	ds    []*parleyv1.Delivery
}

// Reply adds rep for the gateway of o, setting rep.request_id to o's. An
// origin without a gateway is ignored.
func (b *Batch) Reply(o *parleyv1.Origin, rep *parleyv1.Reply) {
	if o == nil || o.GetGatewayId() == "" {
		return
	}
	rep.RequestId = o.GetRequestId()
	b.replies = append(b.replies, originReply{gateway: o.GetGatewayId(), region: o.GetRegion(), rep: rep})
}

// Deliver adds d for users. Consecutive calls with the same users slice
// (same backing array and length) share one group.
func (b *Batch) Deliver(users []string, d *parleyv1.Delivery) {
	if len(users) == 0 {
		return
	}
	if n := len(b.groups); n > 0 && sameSlice(b.groups[n-1].users, users) {
		b.groups[n-1].ds = append(b.groups[n-1].ds, d)
		return
	}
	b.groups = append(b.groups, deliveryGroup{users: users, ds: []*parleyv1.Delivery{d}})
}

// Len returns the number of replies and deliveries in b.
func (b *Batch) Len() int {
	n := len(b.replies)
	for _, g := range b.groups {
		n += len(g.ds)
	}
	return n
}

func sameSlice(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func (r *Router) partitions() (int32, error) {
	if n := r.parts.Load(); n > 0 {
		return n, nil
	}
	n, err := r.b.Partitions(r.topic)
	if err != nil {
		return 0, fmt.Errorf("partitions of %s: %w", r.topic, err)
	}
	if n <= 0 {
		return 0, fmt.Errorf("topic %s has no partitions", r.topic)
	}
	r.parts.Store(n)
	return n, nil
}

// Publish sends everything in b: one registry lookup for all recipients,
// then per gateway partition one DeliverRecord (split only when it would
// exceed 512 KiB), all published together and with the records of
// concurrent Publish calls (bus.Coalescer). It returns the joined errors of failed publishes; the
// other partitions are still published.
func (r *Router) Publish(ctx context.Context, b *Batch) error { return r.publish(ctx, b, true) }

// PublishLocal is Publish without relaying the deliveries to other regions:
// for deliveries that another region relayed here.
func (r *Router) PublishLocal(ctx context.Context, b *Batch) error { return r.publish(ctx, b, false) }

func (r *Router) publish(ctx context.Context, b *Batch, relay bool) error {
	if b == nil || b.Len() == 0 {
		return nil
	}
	n, err := r.partitions()
	if err != nil {
		return err
	}
	recs := make(map[int32]*recordBuilder)
	rec := func(p int32) *recordBuilder {
		rb := recs[p]
		if rb == nil {
			rb = &recordBuilder{}
			recs[p] = rb
		}
		return rb
	}
	var errs []error
	var remote map[string][]bus.Message // region -> replies to its gateways
	for _, or := range b.replies {
		if r.regions != nil && or.region != "" && or.region != r.regions.Local() {
			p, err := ingress.GatewayPartition(or.gateway)
			v, merr := proto.Marshal(&parleyv1.DeliverRecord{Replies: []*parleyv1.Reply{or.rep}})
			if err = errors.Join(err, merr); err != nil {
				errs = append(errs, fmt.Errorf("reply to region %s: %w", or.region, err))
				continue
			}
			if remote == nil {
				remote = make(map[string][]bus.Message)
			}
			remote[or.region] = append(remote[or.region], bus.Message{Topic: ingress.DeliverTopic(or.region), Partition: p, Value: v})
			continue
		}
		p, err := ingress.GatewayPartition(or.gateway)
		if err == nil && p >= n {
			err = fmt.Errorf("gateway %s: partition %d of %d", or.gateway, p, n)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("reply: %w", err))
			continue
		}
		rec(p).addReply(or.rep)
	}
	var later []deliveryGroup
	if len(b.groups) > 0 {
		later = r.route(ctx, b.groups, n, rec, relay)
		if relay && r.regions != nil {
			for _, peer := range r.regions.Peers() {
				remote = addRelay(remote, peer, r.regions.Local(), b.groups)
			}
		}
	}
	for region, msgs := range remote {
		for i, err := range r.regions.Publish(ctx, region, msgs) {
			if err != nil {
				errs = append(errs, fmt.Errorf("publish %s[%d] in region %s: %w", msgs[i].Topic, msgs[i].Partition, region, err))
			}
		}
	}
	var msgs []bus.Message
	for p, rb := range recs {
		for _, dr := range rb.done() {
			v, err := proto.Marshal(dr)
			if err != nil {
				errs = append(errs, fmt.Errorf("encode deliver record: %w", err))
				continue
			}
			msgs = append(msgs, bus.Message{Topic: r.topic, Partition: p, Value: v})
		}
	}
	for i, err := range r.out.Publish(ctx, msgs) {
		if err != nil {
			errs = append(errs, fmt.Errorf("publish %s[%d]: %w", r.topic, msgs[i].Partition, err))
		}
	}
	r.lookupOffline(ctx, later)
	return errors.Join(errs...)
}

// lookupOffline passes the users of broadcast groups that have no live
// session to the offline hook, with one registry lookup for all of them,
// after their live records were published. While the registry fails nobody
// is notified (as in OnOffline).
func (r *Router) lookupOffline(ctx context.Context, groups []deliveryGroup) {
	if len(groups) == 0 {
		return
	}
	sessions, err := r.Sessions(ctx, groupUsers(groups))
	if err != nil {
		return
	}
	for _, g := range groups {
		r.notifyOffline(ctx, g, sessions)
	}
}

// groupUsers returns the users of groups, each once, in order of first
// appearance: what one registry lookup for them asks.
func groupUsers(groups []deliveryGroup) []string {
	var all []string
	seen := make(map[string]struct{})
	for _, g := range groups {
		for _, u := range g.users {
			if _, ok := seen[u]; !ok {
				seen[u] = struct{}{}
				all = append(all, u)
			}
		}
	}
	return all
}

// BroadcastMinUsers is the smallest delivery group the router broadcasts
// instead of looking up: a group of at least this many users, and at least
// as many as there are gateway partitions, is published to every gateway
// partition with all its users, and each gateway pushes to the ones it holds
// (the degraded path's shape, by choice). With m users spread over n
// gateways, m ≥ n already reaches ~63 % of the gateways or more, so at most
// ~1.6x the records go out, and the per-user registry lookup (two Redis
// commands per member, 1,000 per message of a 500-member group) leaves the
// path before delivery. It also cannot miss a session registered just before
// its sync. Smaller groups (DMs) are looked up, so an offline recipient
// costs no record. Issue 11, docs/benchmarks.md.
const BroadcastMinUsers = 32

// broadcasts reports whether a group of m users is broadcast to n partitions.
func broadcasts(m int, n int32) bool { return m >= BroadcastMinUsers && m >= int(n) }

// route adds every group's deliveries to the records of the gateways that
// hold its users' sessions: large groups to every gateway (broadcasts), the
// others after one registry lookup for all of them. It returns the large
// groups when offline notifications are due for them: who of their users is
// offline is only known after a lookup, which publish makes after the live
// records are out (lookupOffline), off the delivery's path.
// Offline notifications are left to the home region (offline false for
// relayed deliveries).
func (r *Router) route(ctx context.Context, groups []deliveryGroup, n int32, rec func(int32) *recordBuilder, offline bool) (later []deliveryGroup) {
	looked := groups[:0:0]
	for _, g := range groups {
		if !broadcasts(len(g.users), n) {
			looked = append(looked, g)
			continue
		}
		r.toEvery(g, n, rec)
		if offline && r.offline != nil {
			later = append(later, g)
		}
	}
	if len(looked) == 0 {
		return later
	}
	groups = looked
	all := groupUsers(groups)
	sessions, err := r.Sessions(ctx, all)
	if err != nil {
		// Degraded routing (docs/design.md §4): every gateway gets every
		// recipient and pushes to the ones it holds.
		if now, last := time.Now().UnixNano(), r.degradedLog.Load(); now-last >= int64(degradedLogEvery) && r.degradedLog.CompareAndSwap(last, now) {
			r.log.Warn("session registry failed; routing to every gateway", "err", err, "users", len(all))
		}
		for _, g := range groups {
			r.toEvery(g, n, rec)
		}
		return later
	}
	for _, g := range groups {
		per := make(map[int32][]string)
		var order []int32
		var mine []int32 // partitions already holding u: a user has few sessions
		for _, u := range g.users {
			mine = mine[:0]
			for _, s := range sessions[u] {
				p, err := ingress.GatewayPartition(s.GatewayID)
				if err != nil || p >= n {
					r.log.Warn("session on unknown gateway", "gateway", s.GatewayID, "user", u)
					continue
				}
				if slices.Contains(mine, p) {
					continue
				}
				mine = append(mine, p)
				if per[p] == nil {
					order = append(order, p)
				}
				per[p] = append(per[p], u)
			}
		}
		for _, p := range order {
			for _, d := range g.ds {
				rec(p).addDelivery(withUsers(d, per[p]))
			}
		}
		if offline && r.offline != nil {
			r.notifyOffline(ctx, g, sessions)
		}
	}
	return later
}

// toEvery adds g's deliveries, addressed to all its users, to every
// partition's record.
func (r *Router) toEvery(g deliveryGroup, n int32, rec func(int32) *recordBuilder) {
	for p := int32(0); p < n; p++ {
		for _, d := range g.ds {
			rec(p).addDelivery(withUsers(d, g.users))
		}
	}
}

// withUsers returns a shallow copy of d addressed to users; the body is
// shared, so a message is encoded once per record it appears in.
func withUsers(d *parleyv1.Delivery, users []string) *parleyv1.Delivery {
	c := &parleyv1.Delivery{UserIds: users, ExceptSessionId: d.GetExceptSessionId()}
	c.Body = d.Body
	return c
}

// recordBuilder accumulates one partition's records, starting a new one when
// the current would grow past maxRecordBytes.
type recordBuilder struct {
	recs []*parleyv1.DeliverRecord
	size int
}

func (rb *recordBuilder) cur(add int) *parleyv1.DeliverRecord {
	if len(rb.recs) == 0 || (rb.size > 0 && rb.size+add > maxRecordBytes) {
		rb.recs = append(rb.recs, &parleyv1.DeliverRecord{})
		rb.size = 0
	}
	rb.size += add
	return rb.recs[len(rb.recs)-1]
}

func (rb *recordBuilder) addReply(rep *parleyv1.Reply) {
	dr := rb.cur(proto.Size(rep) + 4)
	dr.Replies = append(dr.Replies, rep)
}

func (rb *recordBuilder) addDelivery(d *parleyv1.Delivery) {
	dr := rb.cur(proto.Size(d) + 4)
	dr.Deliveries = append(dr.Deliveries, d)
}

func (rb *recordBuilder) done() []*parleyv1.DeliverRecord { return rb.recs }

// addRelay adds to remote[peer] the RelayRecords carrying groups' deliveries
// (each addressed to all its users), split past maxRecordBytes, keyed by
// the first delivery's conversation so one conversation's relays stay in
// order.
func addRelay(remote map[string][]bus.Message, peer, from string, groups []deliveryGroup) map[string][]bus.Message {
	if remote == nil {
		remote = make(map[string][]bus.Message)
	}
	var key []byte
	rr, size := &parleyv1.RelayRecord{FromRegion: from}, 0
	emit := func() {
		if len(rr.Deliveries) == 0 {
			return
		}
		v, err := proto.Marshal(rr)
		if err == nil {
			remote[peer] = append(remote[peer], bus.Message{Topic: ingress.RelayTopic(peer), Partition: -1, Key: key, Value: v})
		}
		rr, size = &parleyv1.RelayRecord{FromRegion: from}, 0
	}
	for _, g := range groups {
		for _, d := range g.ds {
			c := withUsers(d, g.users)
			if key == nil {
				key = []byte(deliveryConversation(c))
			}
			n := proto.Size(c) + 4
			if size > 0 && size+n > maxRecordBytes {
				emit()
			}
			rr.Deliveries = append(rr.Deliveries, c)
			size += n
		}
	}
	emit()
	return remote
}

// deliveryConversation returns the conversation a delivery is about ("" for
// presence).
func deliveryConversation(d *parleyv1.Delivery) string {
	switch b := d.Body.(type) {
	case *parleyv1.Delivery_Message:
		return b.Message.GetConversationId()
	case *parleyv1.Delivery_Receipt:
		return b.Receipt.GetConversationId()
	case *parleyv1.Delivery_Typing:
		return b.Typing.GetConversationId()
	}
	return ""
}

// RelayBatch returns a Batch holding the deliveries of a RelayRecord, each
// to its own users, for PublishLocal.
func RelayBatch(rr *parleyv1.RelayRecord) *Batch {
	b := &Batch{}
	for _, d := range rr.GetDeliveries() {
		b.Deliver(d.GetUserIds(), d)
	}
	return b
}
