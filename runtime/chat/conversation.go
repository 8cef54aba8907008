package chat

import (
	"context"
	"errors"
	"hash/maphash"
	"time"

	"github.com/parleychat/parley/runtime/chat/rules"
	"github.com/parleychat/parley/runtime/metrics"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
)

// maxAppendAttempts bounds re-sequencing after ErrSeqTaken: a competing
// writer that keeps winning means ownership is contested; the client gets
// unavailable and retries.
const maxAppendAttempts = 5

// conversation is one conversation of an owned partition: its queue and,
// once loaded, its state. At most one worker goroutine runs per conversation
// (started on demand by enqueue, exiting when the queue is empty), and only
// it touches state.
type conversation struct {
	p  *partition
	id string

	// Guarded by p.mu.
	queue   []*job
	running bool
	used    time.Time

	// Owned by the running worker; nil until loaded, reset to reload.
	state *convState
	// home is a DM's home region once known (regions.go); "" until then.
	home string
	// groupSeen: a group homed elsewhere was found stored (regions.go).
	groupSeen bool
	// blockedBy caches, per user of a DM, whether the DM's other user
	// blocks them (blockedSenders), since blocksAt; dropped by a
	// BlocksChanged record and after blockCacheTTL.
	blockedBy map[string]bool
	blocksAt  time.Time
}

// convState is what the sequencer knows of a conversation, loaded lazily
// from the store and kept in step with every append it makes.
type convState struct {
	exists  bool
	conv    store.Conversation
	head    uint64
	members map[string]store.Member
	ids     []string // member ids; rebuilt after membership changes, never mutated in place
	ptrs    map[string]pointers
	readMin uint64 // min over members of their effective read pointer
	// readAt counts the members at each effective read pointer (no zero
	// counts), kept as pointers move and members come and go: the minimum
	// is found among the distinct pointers, and only once no member is
	// left at readMin, instead of among every member of a 500-member group
	// on every send and read receipt (issue 16).
	readAt map[uint64]int

	// Dedupe of (sender, client_msg_id) over the newest DedupeWindow
	// messages: a 64-bit hash -> seq. A hit is confirmed against the stored
	// message before it is used, so a hash collision cannot misreport.
	dedupe map[uint64]uint64
	ring   []uint64
	ringAt int
}

type pointers struct{ delivered, read uint64 }

// run serves c's queue until it is empty.
func (c *conversation) run() {
	defer c.p.wg.Done()
	for {
		jobs := c.p.take(c, c.p.s.cfg.MaxBatch)
		if jobs == nil {
			return
		}
		c.process(jobs)
		c.p.finish(jobs)
	}
}

// process handles one batch of c's jobs in order; consecutive sends share one
// store append. All replies and pushes of the batch go out in one Publish.
func (c *conversation) process(jobs []*job) {
	s := c.p.s
	ctx := c.p.ctx
	out := &Batch{}
	if s.cfg.Regions != nil {
		// Even with no peers (an operator-managed cluster of one region, or
		// one whose peers file is momentarily empty) the homes are checked:
		// a region must never sequence a conversation homed elsewhere
		// (TestSetPeersLive), whatever that costs a lone region.
		jobs = c.forward(ctx, jobs, out)
	}
	nowMs := time.Now().UnixMilli()
	// Sends are stored in runs with one append (group commit) and receipts
	// are applied after the run they arrived in: a receipt only names seqs
	// its client has already received (and seqs past the head are clamped),
	// so moving it behind sends of the same batch changes nothing it says,
	// while applying it in place would split the run, and with it the
	// append, wherever acks interleave with sends — in a busy group, after
	// every send (issue 11). Membership operations stay ordered against
	// both.
	var sends, receipts []*job
	flush := func() {
		if len(sends) > 0 {
			c.sends(ctx, sends, out)
			sends = nil
		}
		for _, j := range receipts {
			c.receipt(ctx, j, out)
		}
		receipts = nil
	}
	for _, j := range jobs {
		rec := j.rec
		if !rules.ValidUserID(rec.GetOrigin().GetUserId()) {
			c.fail(ctx, j, out, errInvalid("origin user id is missing or invalid"))
			continue
		}
		switch rec.Op.(type) {
		case nil:
			c.fail(ctx, j, out, errInvalid("request has no operation"))
			continue
		case *parleyv1.IngressRecord_CreateGroup:
		default:
			if err := rules.CheckConversationID(rec.GetConversationId()); err != nil {
				c.fail(ctx, j, out, err)
				continue
			}
		}
		switch rec.Op.(type) {
		case *parleyv1.IngressRecord_Ack, *parleyv1.IngressRecord_Read:
			// Receipts are idempotent and forward-only: applied even past
			// the deadline, since the client does not retry them.
			receipts = append(receipts, j)
			continue
		case *parleyv1.IngressRecord_BlocksChanged:
			// Applied even past the deadline: it only drops a cache.
			flush()
			c.blocksChanged(j, out)
			continue
		}
		if rec.GetDeadline() != 0 && nowMs > rec.GetDeadline() {
			// The client already got timeout and retries with the same
			// client_msg_id; doing it now could only duplicate work.
			j.finished = true
			continue
		}
		switch rec.Op.(type) {
		case *parleyv1.IngressRecord_Send:
			sends = append(sends, j)
		case *parleyv1.IngressRecord_CreateGroup:
			flush()
			c.createGroup(ctx, j, out)
		case *parleyv1.IngressRecord_AddMembers:
			flush()
			c.addMembers(ctx, j, out)
		case *parleyv1.IngressRecord_RemoveMembers:
			flush()
			c.removeMembers(ctx, j, out)
		case *parleyv1.IngressRecord_Edit, *parleyv1.IngressRecord_Delete:
			flush()
			c.change(ctx, j, out)
		case *parleyv1.IngressRecord_React:
			flush()
			c.react(ctx, j, out)
		case *parleyv1.IngressRecord_SetRole:
			flush()
			c.setRole(ctx, j, out)
		case *parleyv1.IngressRecord_Rename:
			flush()
			c.rename(ctx, j, out)
		}
	}
	flush()
	began := time.Now()
	err := s.r.Publish(ctx, out)
	s.cfg.Metrics.ObserveStage(metrics.StageDeliverPublish, time.Since(began))
	if err != nil {
		s.log.Warn("publish replies and deliveries", "conversation", c.id, "err", err)
	}
}

// reply queues rep for j's origin and marks j finished.
func (c *conversation) reply(j *job, out *Batch, rep *parleyv1.Reply) {
	out.Reply(j.rec.GetOrigin(), rep)
	j.finished = true
}

// fail replies err to j. An unavailable outcome caused by the partition being
// revoked is not replied and leaves j unfinished, so its offset is not
// committed and the next owner handles it.
func (c *conversation) fail(ctx context.Context, j *job, out *Batch, err error) {
	we := asWire(err)
	if we.Code == codeUnavailable && ctx.Err() != nil {
		return
	}
	c.reply(j, out, &parleyv1.Reply{Error: &parleyv1.Error{Code: we.Code, Message: we.Message, RetryAfterMs: we.RetryAfterMs}})
}

// load returns c's state, reading it from the store when not cached. A
// conversation that does not exist yields a state with exists false, which
// is not cached (it may be created by the next operation).
func (c *conversation) load(ctx context.Context) (*convState, error) {
	if c.state != nil {
		return c.state, nil
	}
	st := c.p.s.st
	conv, err := st.Conversation(ctx, c.id)
	if errors.Is(err, store.ErrNotFound) {
		return &convState{members: map[string]store.Member{}, ptrs: map[string]pointers{}}, nil
	}
	if err != nil {
		return nil, storeErr(c.p.s.log, "load conversation", c.id, err)
	}
	head, err := st.Head(ctx, c.id)
	if err != nil {
		return nil, storeErr(c.p.s.log, "load head", c.id, err)
	}
	ms, err := st.Members(ctx, c.id)
	if err != nil {
		return nil, storeErr(c.p.s.log, "load members", c.id, err)
	}
	rs, err := st.Receipts(ctx, c.id)
	if err != nil {
		return nil, storeErr(c.p.s.log, "load receipts", c.id, err)
	}
	state := &convState{
		exists:  true,
		conv:    conv,
		head:    head,
		members: make(map[string]store.Member, len(ms)),
		ptrs:    make(map[string]pointers, len(rs)),
		dedupe:  make(map[uint64]uint64),
	}
	for _, m := range ms {
		state.members[m.UserID] = m
	}
	for _, r := range rs {
		state.ptrs[r.UserID] = pointers{delivered: r.DeliveredSeq, read: r.ReadSeq}
	}
	if err := c.rebuildDedupe(ctx, state); err != nil {
		return nil, err
	}
	for u, m := range state.members {
		state.countRead(m, state.ptrs[u], 1)
	}
	state.readMin = state.lowestRead()
	c.state = state
	return state, nil
}

// rebuildDedupe fills state's dedupe cache from the newest DedupeWindow
// messages of the log, so a new owner recognises replayed sends, and
// repairs the edits and deletes among them whose effect is missing
// (healChanges).
func (c *conversation) rebuildDedupe(ctx context.Context, state *convState) error {
	var all []*parleyv1.Message // newest first
	var before uint64
	for len(all) < DedupeWindow {
		limit := min(store.MaxLimit, DedupeWindow-len(all))
		msgs, more, err := c.p.s.st.Messages(ctx, c.id, store.Page{Before: before, Limit: limit})
		if err != nil {
			return storeErr(c.p.s.log, "load recent messages", c.id, err)
		}
		all = append(all, msgs...)
		if !more || len(msgs) == 0 {
			break
		}
		before = msgs[len(msgs)-1].GetSeq()
		if before <= 1 {
			break
		}
	}
	for i := len(all) - 1; i >= 0; i-- {
		m := all[i]
		if m.GetClientMsgId() != "" {
			state.remember(c.p.s.dedupeKey(m.GetSenderId(), m.GetClientMsgId()), m.GetSeq())
		}
	}
	return c.healChanges(ctx, all)
}

func (s *Sequencer) dedupeKey(sender, clientMsgID string) uint64 {
	var h maphash.Hash
	h.SetSeed(s.seed)
	h.WriteString(sender)
	h.WriteByte(0)
	h.WriteString(clientMsgID)
	return h.Sum64()
}

// remember records key -> seq, forgetting the oldest entry beyond the window.
func (st *convState) remember(key, seq uint64) {
	if st.dedupe == nil {
		st.dedupe = make(map[uint64]uint64)
	}
	if len(st.ring) < DedupeWindow {
		st.ring = append(st.ring, key)
	} else {
		old := st.ring[st.ringAt]
		delete(st.dedupe, old)
		st.ring[st.ringAt] = key
		st.ringAt = (st.ringAt + 1) % DedupeWindow
	}
	st.dedupe[key] = seq
}

// memberIDs returns the current member ids; the slice is shared and must not
// be modified.
func (st *convState) memberIDs() []string {
	if st.ids == nil {
		st.ids = make([]string, 0, len(st.members))
		for id := range st.members {
			st.ids = append(st.ids, id)
		}
	}
	return st.ids
}

// countRead adds d (1: m joins the count or arrives at pointers p; -1: m
// leaves it or its pointers move on from p) to the count of members at m's
// effective read pointer with pointers p, dropping a count that reaches
// zero.
func (st *convState) countRead(m store.Member, p pointers, d int) {
	if st.readAt == nil {
		st.readAt = make(map[uint64]int)
	}
	k := effectiveRead(m, p)
	if st.readAt[k] += d; st.readAt[k] <= 0 {
		delete(st.readAt, k)
	}
}

// lowestRead is the lowest effective read pointer of the current members
// (0 without members).
func (st *convState) lowestRead() uint64 {
	if st.readAt[st.readMin] > 0 {
		return st.readMin
	}
	first, lo := true, uint64(0)
	for k := range st.readAt {
		if first || k < lo {
			first, lo = false, k
		}
	}
	return lo
}

// effectiveRead is member m's read pointer as read-by-all counts it: at
// least joined_seq-1.
func effectiveRead(m store.Member, p pointers) uint64 {
	if m.JoinedSeq > 0 && m.JoinedSeq-1 > p.read {
		return m.JoinedSeq - 1
	}
	return p.read
}

// appendOne sequences the event built by build at the conversation's head
// and appends it, rebuilding the state and retrying after ErrSeqTaken. build
// returns nil for "nothing to do"; its errors are replied as they are.
func (c *conversation) appendOne(ctx context.Context, build func(*convState) (*parleyv1.Message, error)) (*convState, *parleyv1.Message, error) {
	state, evs, err := c.appendEvents(ctx, func(st *convState) ([]*parleyv1.Message, error) {
		ev, err := build(st)
		if ev == nil {
			return nil, err
		}
		return []*parleyv1.Message{ev}, err
	})
	if len(evs) == 0 {
		return state, nil, err
	}
	return state, evs[0], err
}

// appendEvents is appendOne for events at consecutive seqs from the head,
// stored by one Append (so an owner's leave and the ownership transfer it
// causes are stored together or not at all) with their effects on the
// members and the title (effects), which the returned state then has.
func (c *conversation) appendEvents(ctx context.Context, build func(*convState) ([]*parleyv1.Message, error)) (*convState, []*parleyv1.Message, error) {
	for attempt := 0; ; attempt++ {
		state, err := c.load(ctx)
		if err != nil {
			return nil, nil, err
		}
		evs, err := build(state)
		if err != nil || len(evs) == 0 {
			return state, nil, err
		}
		effs := effects(state.conv, state.members, evs)
		began := time.Now()
		err = c.p.s.st.Append(ctx, c.id, evs, effs...)
		c.p.s.cfg.Metrics.ObserveStage(metrics.StageAppend, time.Since(began))
		if errors.Is(err, store.ErrSeqTaken) && attempt+1 < maxAppendAttempts {
			c.p.s.log.Info("seq taken; reloading conversation", "conversation", c.id, "seq", evs[0].GetSeq())
			c.state = nil
			continue
		}
		if err != nil {
			c.state = nil // unknown outcome: reload before the next decision
			return nil, nil, storeErr(c.p.s.log, "append event", c.id, err)
		}
		state.head = evs[len(evs)-1].GetSeq()
		state.apply(effs)
		c.p.s.countStored(evs)
		return state, evs, nil
	}
}

// event returns a system event at seq for the conversation.
func (c *conversation) event(seq uint64, kind parleyv1.MessageKind, sender string, members []string) *parleyv1.Message {
	return &parleyv1.Message{
		ConversationId: c.id,
		Seq:            seq,
		MessageId:      c.p.s.node.Generate().Int64(),
		SenderId:       sender,
		Kind:           kind,
		Members:        members,
		CreatedAt:      time.Now().UnixMilli(),
	}
}

// deliverMessage queues a push of m to users, skipping exceptSession.
func deliverMessage(out *Batch, users []string, m *parleyv1.Message, exceptSession string) {
	out.Deliver(users, &parleyv1.Delivery{ExceptSessionId: exceptSession, Body: &parleyv1.Delivery_Message{Message: m}})
}
