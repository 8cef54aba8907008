package chat

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

// readByAllScan caps how many messages are read to find the senders owed a
// read-by-all push; when the pointer jumps further, only the senders of the
// newest readByAllScan messages below it are told.
const readByAllScan = 1000

// receipt applies an ack (delivered pointer) or read (read pointer).
//
// Decisions: a seq beyond the head is clamped to the head rather than
// refused (a client may race a message it has not seen sequenced yet); a
// pointer that would not move changes nothing and pushes nothing; the reply
// is empty either way. Routing (docs/design.md §3): in a DM the receipt
// goes to the peer and to the user's own devices, in a group only to the
// user's own devices, plus one READ_BY_ALL push to the senders of the
// messages everyone has now read; a group's delivered pointers are stored
// and not pushed.
func (c *conversation) receipt(ctx context.Context, j *job, out *Batch) {
	rec := j.rec
	user := rec.GetOrigin().GetUserId()
	var kind parleyv1.ReceiptKind
	var seq uint64
	var conv string
	switch op := rec.Op.(type) {
	case *parleyv1.IngressRecord_Ack:
		kind, seq, conv = parleyv1.ReceiptKind_RECEIPT_KIND_DELIVERED, op.Ack.GetSeq(), op.Ack.GetConversationId()
	case *parleyv1.IngressRecord_Read:
		kind, seq, conv = parleyv1.ReceiptKind_RECEIPT_KIND_READ, op.Read.GetSeq(), op.Read.GetConversationId()
	}
	if rec.GetConversationId() == "" || (conv != "" && conv != rec.GetConversationId()) {
		c.fail(ctx, j, out, errInvalid("conversation_id is empty or does not match the record"))
		return
	}
	state, err := c.load(ctx)
	if err != nil {
		c.fail(ctx, j, out, err)
		return
	}
	if !state.exists {
		c.fail(ctx, j, out, wire.Errorf(wire.CodeNotFound, "conversation %s does not exist", c.id))
		return
	}
	if _, ok := state.members[user]; !ok {
		c.fail(ctx, j, out, wire.Errorf(wire.CodeNotMember, "not a member of %s", c.id))
		return
	}
	seq = min(seq, state.head)
	moved := seq > 0 && c.advance(state, user, kind, seq)
	p := state.ptrs[user]
	var stored error
	if moved && kind == parleyv1.ReceiptKind_RECEIPT_KIND_READ {
		// Read-your-writes (issue 13): a read is stored before it is
		// answered, so every later inbox, sync or history read of the
		// user, from any device or gateway, reflects it. Reads are a
		// person's action; acks (one per delivery) stay coalesced in the
		// flush. If the write fails the pointer stays marked for the flush
		// and the client gets unavailable (a retry is answered from memory).
		stored = c.p.s.st.AdvanceReceipts(ctx, c.id, []store.Receipt{{UserID: user, DeliveredSeq: p.delivered, ReadSeq: p.read}})
		if stored == nil {
			c.p.s.recpts.written(c.id, user, p)
		}
	}
	defer func() {
		if stored != nil {
			c.fail(ctx, j, out, storeErr(c.p.s.log, "store read pointer", c.id, stored))
			return
		}
		// The answer names the pointer as it now stands, which may be
		// above the seq that was sent.
		now := p.delivered
		if kind == parleyv1.ReceiptKind_RECEIPT_KIND_READ {
			now = p.read
		}
		c.reply(j, out, &parleyv1.Reply{Receipt: &parleyv1.Receipt{ConversationId: c.id, UserId: user, Kind: kind, Seq: now}})
	}()
	if !moved {
		return
	}
	isGroup := state.conv.Kind == store.KindGroup
	if isGroup && kind == parleyv1.ReceiptKind_RECEIPT_KIND_DELIVERED {
		// Stored, not pushed: in a group nobody is shown another member's
		// delivered pointer (the sender asks for receipts on request), and
		// the member's own devices each receive the messages themselves. A
		// 500-member group acknowledges every message ~500 times, so each
		// push would have cost a registry lookup and a deliver record for
		// nothing (issue 11).
		return
	}
	users := []string{user}
	if peer := dmPeer(c.id, user); !isGroup && peer != "" {
		users = append(users, peer)
	}
	out.Deliver(users, &parleyv1.Delivery{
		ExceptSessionId: rec.GetOrigin().GetSessionId(),
		Body: &parleyv1.Delivery_Receipt{Receipt: &parleyv1.Receipt{
			ConversationId: c.id, UserId: user, Kind: kind, Seq: seq,
		}},
	})
	if isGroup && kind == parleyv1.ReceiptKind_RECEIPT_KIND_READ {
		c.readByAll(ctx, state, out)
	}
}

// advance moves user's pointer forward in memory and marks it for the next
// flush; it reports whether it moved. A read pointer also raises the
// delivered pointer.
func (c *conversation) advance(state *convState, user string, kind parleyv1.ReceiptKind, seq uint64) bool {
	p := state.ptrs[user]
	switch kind {
	case parleyv1.ReceiptKind_RECEIPT_KIND_DELIVERED:
		if seq <= p.delivered {
			return false
		}
		p.delivered = seq
	case parleyv1.ReceiptKind_RECEIPT_KIND_READ:
		if seq <= p.read {
			return false
		}
		p.read = seq
		p.delivered = max(p.delivered, seq)
	default:
		return false
	}
	if m, ok := state.members[user]; ok {
		state.countRead(m, state.ptrs[user], -1)
		state.countRead(m, p, 1)
	}
	state.ptrs[user] = p
	c.p.s.recpts.mark(c.p.id, c.id, user, p)
	return true
}

// readByAll pushes one RECEIPT_KIND_READ_BY_ALL {seq = new minimum} to the
// senders (still members) of the messages in (old minimum, new minimum]
// when the minimum read pointer of a group's members moved.
func (c *conversation) readByAll(ctx context.Context, state *convState, out *Batch) {
	if state.conv.Kind != store.KindGroup || len(state.members) == 0 {
		return
	}
	lo := state.lowestRead()
	if lo <= state.readMin {
		return
	}
	prev := state.readMin
	state.readMin = lo
	limit := int(min(lo-prev, readByAllScan))
	msgs, _, err := c.p.s.st.Messages(ctx, c.id, store.Page{Before: lo + 1, Limit: limit})
	if err != nil {
		c.p.s.log.Warn("read-by-all: load messages", "conversation", c.id, "err", err)
		return
	}
	var senders []string
	seen := make(map[string]bool)
	for _, m := range msgs {
		if m.GetSeq() <= prev || seen[m.GetSenderId()] {
			continue
		}
		switch m.GetKind() {
		case parleyv1.MessageKind_MESSAGE_KIND_TEXT, parleyv1.MessageKind_MESSAGE_KIND_MEDIA:
		default:
			continue
		}
		seen[m.GetSenderId()] = true
		if _, ok := state.members[m.GetSenderId()]; ok {
			senders = append(senders, m.GetSenderId())
		}
	}
	if len(senders) == 0 {
		return
	}
	out.Deliver(senders, &parleyv1.Delivery{Body: &parleyv1.Delivery_Receipt{Receipt: &parleyv1.Receipt{
		ConversationId: c.id, Kind: parleyv1.ReceiptKind_RECEIPT_KIND_READ_BY_ALL, Seq: lo,
	}}})
}

// errMissing stands for an outcome the store did not report (fewer errors
// than conversations from AdvanceReceiptsOf): the pointers stay marked.
var errMissing = errors.New("store reported no outcome")

// receiptFlusher persists receipt pointers: marks accumulate in memory and
// a flush writes each dirty member+conversation once, so with one flush per
// Config.ReceiptFlush a pointer is written at most once per interval.
type receiptFlusher struct {
	st  store.MessageStore
	log *slog.Logger

	mu    sync.Mutex
	dirty map[receiptKey]dirtyPtr
}

type receiptKey struct{ conv, user string }

type dirtyPtr struct {
	part int32
	pointers
}

func newReceiptFlusher(st store.MessageStore, log *slog.Logger) *receiptFlusher {
	return &receiptFlusher{st: st, log: log, dirty: make(map[receiptKey]dirtyPtr)}
}

func (f *receiptFlusher) mark(part int32, conv, user string, p pointers) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := receiptKey{conv, user}
	d := f.dirty[k]
	d.part = part
	d.delivered = max(d.delivered, p.delivered)
	d.read = max(d.read, p.read)
	f.dirty[k] = d
}

// written forgets user's dirty pointers in conv when p (just stored)
// covers them.
func (f *receiptFlusher) written(conv, user string, p pointers) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := receiptKey{conv, user}
	if d, ok := f.dirty[k]; ok && d.delivered <= p.delivered && d.read <= p.read {
		delete(f.dirty, k)
	}
}

// flush writes the dirty pointers of the partitions accepted by only (all
// when nil). Pointers that fail to write stay dirty for the next flush.
func (f *receiptFlusher) flush(ctx context.Context, only func(int32) bool) {
	f.mu.Lock()
	batch := make(map[receiptKey]dirtyPtr)
	for k, d := range f.dirty {
		if only == nil || only(d.part) {
			batch[k] = d
			delete(f.dirty, k)
		}
	}
	f.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	// One call for every conversation (store.AdvanceReceiptsOf): Cassandra
	// writes a group's pointers as one partition and up to 10
	// conversations in one request.
	byConv := make(map[string]int) // index in cs
	var cs []store.ConversationReceipts
	var parts []int32
	for k, d := range batch {
		i, ok := byConv[k.conv]
		if !ok {
			i = len(cs)
			byConv[k.conv] = i
			cs = append(cs, store.ConversationReceipts{ConversationID: k.conv})
			parts = append(parts, d.part)
		}
		cs[i].Receipts = append(cs[i].Receipts, store.Receipt{UserID: k.user, DeliveredSeq: d.delivered, ReadSeq: d.read})
	}
	errs := f.st.AdvanceReceiptsOf(ctx, cs)
	failed := 0
	for i := range cs {
		err := errMissing
		if i < len(errs) {
			err = errs[i]
		}
		if err == nil {
			continue
		}
		if failed++; failed == 1 {
			f.log.Warn("flush receipts", "conversation", cs[i].ConversationID, "users", len(cs[i].Receipts), "err", err)
		}
		for _, r := range cs[i].Receipts {
			f.mark(parts[i], cs[i].ConversationID, r.UserID, pointers{delivered: r.DeliveredSeq, read: r.ReadSeq})
		}
	}
	if failed > 1 {
		f.log.Warn("flush receipts: more conversations failed; their pointers stay for the next flush", "conversations", failed, "of", len(cs))
	}
}
