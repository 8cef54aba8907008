package chat

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/chat/rules"
	"github.com/parleychat/parley/runtime/metrics"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

// sendOutcome is what one send job of a batch resolved to.
type sendOutcome struct {
	err error
	// msg is the message this send stored (new in this batch); dup is set
	// when an earlier send of the same batch carries the same
	// (sender, client_msg_id) and msg is that one.
	msg *parleyv1.Message
	dup bool
	// stored is the seq of an already stored copy (a retry).
	stored uint64
}

// sendPlan is a batch of sends sequenced against one state.
type sendPlan struct {
	state    *convState
	msgs     []*parleyv1.Message // to append, consecutive seqs from head+1
	outcomes []sendOutcome
	createDM bool // the conversation record must be created first
	dmUsers  []string
	effects  []store.Effect // of msgs: the DM's members when it creates one
}

// sends sequences and stores a run of send jobs with one store.Append
// (group commit), then replies and fans out. On ErrSeqTaken — another writer
// stored at our head: we are a stale owner or were one — it reloads the
// state from the store and sequences the batch again.
func (c *conversation) sends(ctx context.Context, jobs []*job, out *Batch) {
	s := c.p.s
	var plan *sendPlan
	for attempt := 0; ; attempt++ {
		state, err := c.load(ctx)
		if err != nil {
			for _, j := range jobs {
				c.fail(ctx, j, out, err)
			}
			return
		}
		senders := make([]string, len(jobs))
		for i, j := range jobs {
			senders[i] = j.rec.GetOrigin().GetUserId()
		}
		blocked, err := c.blockedSenders(ctx, senders)
		if err != nil {
			for _, j := range jobs {
				c.fail(ctx, j, out, err)
			}
			return
		}
		plan = c.plan(state, jobs, c.loadQuoted(ctx, state, jobs), blocked)
		if len(plan.msgs) == 0 {
			break
		}
		if plan.createDM && !state.exists {
			err = s.st.CreateConversation(ctx, store.Conversation{
				ID: c.id, Kind: store.KindDM, HomeRegion: s.cfg.Region,
				CreatedBy: plan.msgs[0].GetSenderId(), CreatedAt: time.UnixMilli(plan.msgs[0].GetCreatedAt()),
			})
			if errors.Is(err, store.ErrExists) && attempt+1 < maxAppendAttempts {
				c.state = nil // created by another writer meanwhile
				continue
			}
			if err != nil && !errors.Is(err, store.ErrExists) {
				c.failPlanned(ctx, plan, jobs, out, storeErr(s.log, "create dm", c.id, err))
				return
			}
		}
		began := time.Now()
		err = s.st.Append(ctx, c.id, forStorage(plan.msgs), plan.effects...)
		s.cfg.Metrics.ObserveStage(metrics.StageAppend, time.Since(began))
		if errors.Is(err, store.ErrSeqTaken) && attempt+1 < maxAppendAttempts {
			s.log.Info("seq taken; reloading conversation", "conversation", c.id, "seq", plan.msgs[0].GetSeq())
			c.state = nil
			continue
		}
		if err != nil {
			// Unknown outcome: if it was stored after all, the reloaded
			// dedupe cache answers the client's retry. Only a store that
			// wrote nothing (store.ErrNotStored) is answered unavailable;
			// otherwise the answer is timeout, which asks for a retry with
			// the same client_msg_id (issue 14: outcomes that never lie).
			c.state = nil
			answer := storeErr(s.log, "append", c.id, err)
			if !errors.Is(err, store.ErrNotStored) && ctx.Err() == nil {
				answer = &wire.Error{Code: wire.CodeTimeout, Message: "the message may have been stored (the store did not confirm it); retry with the same client_msg_id"}
			}
			c.failPlanned(ctx, plan, jobs, out, answer)
			return
		}
		c.applied(plan)
		s.countStored(plan.msgs)
		break
	}
	c.answer(ctx, plan, jobs, out)
}

// quoted is what loadQuoted read: the stored messages replies answer, by
// seq, or the error reading one (store.ErrNotFound when there is none).
type quoted map[uint64]quotedMsg

type quotedMsg struct {
	m   *parleyv1.Message
	err error
}

// loadQuoted reads the stored messages that jobs' sends reply to (at most
// state's head; later ones are in the same batch or invalid), one store read
// per distinct seq.
func (c *conversation) loadQuoted(ctx context.Context, state *convState, jobs []*job) quoted {
	var q quoted
	for _, j := range jobs {
		rt := j.rec.GetSend().GetReplyTo()
		if rt == 0 || rt > state.head {
			continue
		}
		if _, ok := q[rt]; ok {
			continue
		}
		if q == nil {
			q = quoted{}
		}
		m, err := c.p.s.st.Message(ctx, c.id, rt)
		q[rt] = quotedMsg{m: m, err: err}
	}
	return q
}

// MaxQuoteRunes bounds the text a reply quotes of the message it answers.
const MaxQuoteRunes = 100

// quote returns the Quote a reply to seq rt carries, from the stored messages
// (q) or the ones planned before it in this batch (planned, consecutive from
// head+1), or the error the send is answered with: invalid when rt is after
// the last seq (head, batch included) or names a system, edit or delete
// event; not_found when there is no message at rt or it is before the
// sender joined (joined: a member sees nothing from before it joined, not
// even through a quote). The quote's text is for the push and the answer
// only: the stored reply keeps none (StoredQuote), readers get the
// original's current text (Queries.fillQuotes), so an edit shows and a
// delete leaves no copy behind.
func (c *conversation) quote(rt, head, stored, joined uint64, planned []*parleyv1.Message, q quoted) (*parleyv1.Quote, error) {
	var m *parleyv1.Message
	switch {
	case rt > head:
		return nil, wire.Errorf(wire.CodeInvalid, "reply_to %d is after the conversation's last message (seq %d)", rt, head)
	case rt < joined:
		return nil, wire.Errorf(wire.CodeNotFound, "reply_to %d: no message at that seq in %s", rt, c.id)
	case rt > stored:
		for _, pm := range planned {
			if pm.GetSeq() == rt {
				m = pm
			}
		}
	default:
		got := q[rt]
		if errors.Is(got.err, store.ErrNotFound) || (got.err == nil && got.m == nil) {
			return nil, wire.Errorf(wire.CodeNotFound, "reply_to %d: no message at that seq in %s", rt, c.id)
		}
		if got.err != nil {
			return nil, storeErr(c.p.s.log, "read the message a reply quotes", c.id, got.err)
		}
		m = got.m
	}
	if m == nil {
		return nil, wire.Errorf(wire.CodeNotFound, "reply_to %d: no message at that seq in %s", rt, c.id)
	}
	switch m.GetKind() {
	case parleyv1.MessageKind_MESSAGE_KIND_TEXT, parleyv1.MessageKind_MESSAGE_KIND_MEDIA:
	default:
		return nil, wire.Errorf(wire.CodeInvalid, "reply_to %d is a system event (%s), not a message", rt, strings.ToLower(strings.TrimPrefix(m.GetKind().String(), "MESSAGE_KIND_")))
	}
	qt := &parleyv1.Quote{Seq: rt, SenderId: m.GetSenderId()}
	FillQuote(qt, m)
	return qt, nil
}

// FillQuote sets qt's text and flags from orig, the message it quotes as it
// is now: media, deleted (then no text), else the text cut to MaxQuoteRunes.
func FillQuote(qt *parleyv1.Quote, orig *parleyv1.Message) {
	qt.Media, qt.Deleted = orig.GetMedia() != nil, orig.GetDeleted()
	qt.Text = ""
	if !orig.GetDeleted() {
		qt.Text = cutRunes(orig.GetText(), MaxQuoteRunes)
	}
}

// forStorage returns msgs as they are stored: a reply's quote without its
// text (readers fill it from the original, Queries.fillQuotes), so no copy
// of a message's text outlives its delete. msgs are not modified; when no
// quote carries text, msgs itself is returned.
func forStorage(msgs []*parleyv1.Message) []*parleyv1.Message {
	var out []*parleyv1.Message
	for i, m := range msgs {
		if m.GetReplyTo().GetText() == "" {
			if out != nil {
				out[i] = m
			}
			continue
		}
		if out == nil {
			out = make([]*parleyv1.Message, len(msgs))
			copy(out, msgs[:i])
		}
		c := proto.CloneOf(m)
		c.ReplyTo.Text = ""
		out[i] = c
	}
	if out == nil {
		return msgs
	}
	return out
}

// cutRunes returns s cut to at most n runes.
func cutRunes(s string, n int) string {
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos]
		}
		i++
	}
	return s
}

// plan validates and sequences jobs against state without changing it;
// quotes holds the stored messages replies answer (loadQuoted), blocked the
// senders the other user of a DM blocks (blockedSenders).
func (c *conversation) plan(state *convState, jobs []*job, quotes quoted, blocked map[string]bool) *sendPlan {
	s := c.p.s
	p := &sendPlan{state: state, outcomes: make([]sendOutcome, len(jobs))}
	seq := state.head
	now := time.Now().UnixMilli()
	inBatch := make(map[uint64]*parleyv1.Message)
	for i, j := range jobs {
		o := &p.outcomes[i]
		user := j.rec.GetOrigin().GetUserId()
		send := j.rec.GetSend()
		if err := c.validateSend(j.rec.GetConversationId(), send); err != nil {
			o.err = err
			continue
		}
		key := s.dedupeKey(user, send.GetClientMsgId())
		if m := inBatch[key]; m != nil && m.GetSenderId() == user && m.GetClientMsgId() == send.GetClientMsgId() {
			o.msg, o.dup = m, true
			continue
		}
		if stored, ok := state.dedupe[key]; ok {
			o.stored = stored
			continue
		}
		if blocked[user] {
			// Before the DM's creation is planned: a blocked user cannot
			// start the DM either. A retry of a send stored before the
			// block is still answered from dedupe, above.
			o.err = errBlocked(c.id)
			continue
		}
		if _, ok := state.members[user]; !ok {
			if !c.mayCreateDM(state, user) {
				o.err = c.notMember(state)
				continue
			}
			if !p.createDM && send.GetReplyTo() > 0 {
				// Nothing to answer in a DM this send would create; refused
				// before the creation is planned, so no empty DM is left.
				o.err = wire.Errorf(wire.CodeInvalid, "reply_to %d is after the conversation's last message (seq 0)", send.GetReplyTo())
				continue
			}
			if !p.createDM {
				a, b, _ := rules.ParseDM(c.id)
				p.createDM, p.dmUsers = true, []string{a, b}
				seq++
				p.msgs = append(p.msgs, &parleyv1.Message{
					ConversationId: c.id, Seq: seq, MessageId: s.node.Generate().Int64(), SenderId: user,
					Kind: parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED, Members: p.dmUsers, CreatedAt: now,
				})
			}
		}
		var qt *parleyv1.Quote
		if rt := send.GetReplyTo(); rt > 0 {
			var err error
			joined := uint64(1) // the sender of a DM this batch creates
			if mb, ok := state.members[user]; ok {
				joined = mb.JoinedSeq
			}
			if qt, err = c.quote(rt, seq, state.head, joined, p.msgs, quotes); err != nil {
				o.err = err
				continue
			}
		}
		seq++
		m := &parleyv1.Message{
			ConversationId: c.id,
			ReplyTo:        qt,
			Seq:            seq,
			MessageId:      s.node.Generate().Int64(),
			SenderId:       user,
			ClientMsgId:    send.GetClientMsgId(),
			CreatedAt:      now,
		}
		switch ct := send.Content.(type) {
		case *parleyv1.Send_Text:
			m.Kind, m.Text = parleyv1.MessageKind_MESSAGE_KIND_TEXT, ct.Text
			if strings.IndexByte(ct.Text, '@') >= 0 {
				m.Mentions = Mentions(ct.Text, func(u string) bool {
					_, ok := state.members[u]
					return ok || (p.createDM && slices.Contains(p.dmUsers, u))
				})
			}
		case *parleyv1.Send_Media:
			m.Kind, m.Media = parleyv1.MessageKind_MESSAGE_KIND_MEDIA, ct.Media
		}
		p.msgs = append(p.msgs, m)
		inBatch[key] = m
		o.msg = m
	}
	if p.createDM {
		p.effects = effects(state.conv, state.members, p.msgs)
	}
	return p
}

// mayCreateDM reports whether user's send creates the DM: the conversation
// is a well-formed DM of user's and has no log yet.
func (c *conversation) mayCreateDM(state *convState, user string) bool {
	return state.head == 0 && (!state.exists || state.conv.Kind == store.KindDM) && dmPeer(c.id, user) != ""
}

// notMember is the error for a sender outside the conversation.
func (c *conversation) notMember(state *convState) error {
	switch {
	case state.exists && len(state.members) == 0:
		// Its last member left: nobody can write, add or rename again.
		return wire.Errorf(wire.CodeNotMember, "not a member of %s: the group has no members left and is read-only", c.id)
	case state.exists:
		return wire.Errorf(wire.CodeNotMember, "not a member of %s", c.id)
	case rules.IsDM(c.id):
		if _, _, ok := rules.ParseDM(c.id); !ok {
			return errInvalid("malformed dm id: want dm:<a>:<b> with two distinct valid user ids, a < b")
		}
		return wire.Errorf(wire.CodeNotMember, "not a member of %s", c.id)
	}
	return wire.Errorf(wire.CodeNotFound, "conversation %s does not exist", c.id)
}

// validateSend checks what does not depend on state.
func (c *conversation) validateSend(conv string, send *parleyv1.Send) error {
	if conv == "" {
		return errInvalid("conversation_id is empty")
	}
	if send.GetConversationId() != "" && send.GetConversationId() != conv {
		return errInvalid("send.conversation_id does not match the record")
	}
	return rules.ValidateSend(send, c.p.s.cfg.MaxMessageBytes)
}

// applied brings the state in step with a stored plan.
func (c *conversation) applied(p *sendPlan) {
	st := p.state
	if p.createDM {
		if !st.exists {
			st.exists = true
			st.conv = store.Conversation{ID: c.id, Kind: store.KindDM, HomeRegion: c.p.s.cfg.Region}
			c.state = st
		}
	}
	st.apply(p.effects)
	for _, m := range p.msgs {
		if m.GetClientMsgId() != "" {
			st.remember(c.p.s.dedupeKey(m.GetSenderId(), m.GetClientMsgId()), m.GetSeq())
		}
	}
	st.head = p.msgs[len(p.msgs)-1].GetSeq()
}

// failPlanned answers a batch whose append failed: the sends that needed it
// get err (unavailable: not stored, safe to retry), the others their outcome.
func (c *conversation) failPlanned(ctx context.Context, p *sendPlan, jobs []*job, out *Batch, err error) {
	for i := range p.outcomes {
		if p.outcomes[i].msg != nil {
			p.outcomes[i] = sendOutcome{err: err}
		}
	}
	p.msgs = nil
	c.answer(ctx, p, jobs, out)
}

// answer replies to every job of a planned batch and queues the pushes:
// stored messages go to every current member (the sender's other devices
// too), skipping the session that sent them.
func (c *conversation) answer(ctx context.Context, p *sendPlan, jobs []*job, out *Batch) {
	s := c.p.s
	st := p.state
	if len(p.msgs) > 0 && p.createDM {
		// The creation event tells both users' devices the DM exists.
		deliverMessage(out, st.memberIDs(), p.msgs[0], "")
	}
	lastRead := map[string]uint64{}
	for i, j := range jobs {
		o := p.outcomes[i]
		session := j.rec.GetOrigin().GetSessionId()
		if j.rec.GetAccepted() {
			// The sending session holds it as pending (send_accepted) and
			// learns its seq from this push.
			session = ""
		}
		switch {
		case o.err != nil:
			c.fail(ctx, j, out, o.err)
		case o.msg != nil:
			c.reply(j, out, &parleyv1.Reply{SendOk: sendOk(o.msg)})
			if !o.dup {
				deliverMessage(out, st.memberIDs(), o.msg, session)
				lastRead[o.msg.GetSenderId()] = o.msg.GetSeq()
			}
		case o.stored != 0:
			m, err := s.st.Message(ctx, c.id, o.stored)
			if err == nil && (m.GetSenderId() != j.rec.GetOrigin().GetUserId() || m.GetClientMsgId() != j.rec.GetSend().GetClientMsgId()) {
				// A dedupe hash collision: let the client retry; by then the
				// entry has usually been evicted. Practically never happens.
				s.log.Error("dedupe collision", "conversation", c.id, "seq", o.stored)
				err = errors.New("dedupe collision")
			}
			if err != nil {
				c.fail(ctx, j, out, storeErr(s.log, "load deduped message", c.id, err))
				continue
			}
			c.reply(j, out, &parleyv1.Reply{SendOk: sendOk(m)})
			viewReactions([]*parleyv1.Message{m}, "") // its reactions since, without who
			if _, member := st.members[m.GetSenderId()]; member {
				// The first push may have been lost with its gateway.
				deliverMessage(out, st.memberIDs(), m, session)
			}
		default:
			j.finished = true
		}
	}
	// Sending advances the sender's own read pointer (docs/design.md §3).
	for user, seq := range lastRead {
		c.advance(st, user, parleyv1.ReceiptKind_RECEIPT_KIND_READ, seq)
	}
	if len(lastRead) > 0 {
		c.readByAll(ctx, st, out)
	}
}

func sendOk(m *parleyv1.Message) *parleyv1.SendOk {
	return &parleyv1.SendOk{
		ConversationId: m.GetConversationId(),
		Seq:            m.GetSeq(),
		MessageId:      m.GetMessageId(),
		CreatedAt:      m.GetCreatedAt(),
		ClientMsgId:    m.GetClientMsgId(),
		ReplyTo:        m.GetReplyTo(),
		Mentions:       m.GetMentions(),
	}
}
