package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// typingGate lets one typing fan-out per user and conversation through per
// Config.TypingInterval, from whichever of the user's sessions on this gateway:
// 40 sessions of one user typing made every member of a group receive 40
// typing frames a second (issue 14). Past maxTypingKeys it forgets the
// entries older than the interval, at most once an interval, so it holds
// about the users who typed in the last interval.
type typingGate struct {
	mu    sync.Mutex
	last  map[typingKey]int64 // unix ns of the last fan-out
	swept int64               // unix ns of the last sweep
}

type typingKey struct{ user, conv string }

// maxTypingKeys is the size past which typingGate sweeps stale entries.
const maxTypingKeys = 10_000

func (t *typingGate) allow(user, conv string, now int64, interval time.Duration) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.last == nil {
		t.last = make(map[typingKey]int64)
	}
	k := typingKey{user, conv}
	if now-t.last[k] < int64(interval) {
		return false
	}
	if len(t.last) >= maxTypingKeys && now-t.swept >= int64(interval) {
		t.swept = now
		for k, at := range t.last {
			if now-at >= int64(interval) {
				delete(t.last, k)
			}
		}
	}
	t.last[k] = now
	return true
}

// maxConversationIDBytes bounds conversation ids ("dm:<64>:<64>" or
// "g:<snowflake>").
const maxConversationIDBytes = 2*auth.MaxIDBytes + 4

// maxErrorMessage bounds the problem description echoed in an error frame.
const maxErrorMessage = 200

// handleFrame dispatches one client frame on the session's reader. Request
// and reply frames carry the request's id. Reads (sync, history) are served
// inline: a connection has one read in flight, which bounds what one client
// can make the store do at once. Sends go to the chat role asynchronously.
func (g *Gateway) handleFrame(s *session, mt int, data []byte) {
	if s.closing.Load() {
		// Nothing more is queued on a closing session: spare the work
		// (a slow consumer may still have many requests in the socket).
		return
	}
	if want := s.messageType(); mt != want {
		s.invalidFrame(0, fmt.Sprintf("subprotocol %s carries %s frames, got a %s frame", s.subprotocol(), frameKind(want), frameKind(mt)))
		return
	}
	f, err := s.codec().DecodeClient(data)
	if err != nil {
		id := f.GetId()
		if f == nil {
			// The client waits for an answer to the frame's id: find it in
			// what did not decode.
			id = frameID(s.binary, data)
		}
		s.invalidFrame(id, decodeProblem(err))
		return
	}
	s.invalidRun = 0
	id := f.GetId()
	switch b := f.Body.(type) {
	case *parleyv1.ClientFrame_Send:
		g.handleSend(s, id, b.Send)
	case *parleyv1.ClientFrame_Ack:
		if g.validReceipt(s, id, b.Ack.GetConversationId(), b.Ack.GetSeq()) {
			rec := g.record(s, b.Ack.GetConversationId())
			rec.Op = &parleyv1.IngressRecord_Ack{Ack: b.Ack}
			g.cc.Receipt(rec, g.replyError(s, id))
		}
	case *parleyv1.ClientFrame_Read:
		if g.validReceipt(s, id, b.Read.GetConversationId(), b.Read.GetSeq()) {
			rec := g.record(s, b.Read.GetConversationId())
			rec.Op = &parleyv1.IngressRecord_Read{Read: b.Read}
			g.cc.Receipt(rec, g.replyError(s, id))
		}
	case *parleyv1.ClientFrame_Edit:
		g.handleChange(s, id, b.Edit.GetConversationId(), rules.ValidateEdit(b.Edit, g.cfg.MaxMessageBytes),
			func(rec *parleyv1.IngressRecord) { rec.Op = &parleyv1.IngressRecord_Edit{Edit: b.Edit} })
	case *parleyv1.ClientFrame_Delete:
		g.handleChange(s, id, b.Delete.GetConversationId(), rules.ValidateDelete(b.Delete),
			func(rec *parleyv1.IngressRecord) { rec.Op = &parleyv1.IngressRecord_Delete{Delete: b.Delete} })
	case *parleyv1.ClientFrame_React:
		g.handleChange(s, id, b.React.GetConversationId(), rules.ValidateReact(b.React),
			func(rec *parleyv1.IngressRecord) { rec.Op = &parleyv1.IngressRecord_React{React: b.React} })
	case *parleyv1.ClientFrame_SetRole:
		g.handleChange(s, id, b.SetRole.GetConversationId(), rules.ValidateSetRole(b.SetRole),
			func(rec *parleyv1.IngressRecord) { rec.Op = &parleyv1.IngressRecord_SetRole{SetRole: b.SetRole} })
	case *parleyv1.ClientFrame_Rename:
		g.handleChange(s, id, b.Rename.GetConversationId(), rules.ValidateRename(b.Rename),
			func(rec *parleyv1.IngressRecord) { rec.Op = &parleyv1.IngressRecord_Rename{Rename: b.Rename} })
	case *parleyv1.ClientFrame_Mute:
		g.handleMute(s, id, b.Mute)
	case *parleyv1.ClientFrame_Block:
		g.handleBlock(s, id, b.Block)
	case *parleyv1.ClientFrame_Sync:
		g.handleSync(s, id, b.Sync)
	case *parleyv1.ClientFrame_History:
		g.handleHistory(s, id, b.History)
	case *parleyv1.ClientFrame_Typing:
		g.handleTyping(s, id, b.Typing)
	case *parleyv1.ClientFrame_PresenceSub:
		g.handlePresenceSub(s, id, b.PresenceSub)
	case *parleyv1.ClientFrame_Ping:
		s.send(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Pong{Pong: &parleyv1.Pong{}}})
	}
}

// frameID recovers the id of a client frame that did not decode, 0 when it
// has none that can be read. JSON: the top-level "id" (a number or a string
// of digits, as protojson accepts), read up to the first syntax error.
// Protobuf: the last field 1 (varint) before the bytes stop parsing.
func frameID(binary bool, data []byte) uint64 {
	if binary {
		return protoFrameID(data)
	}
	return jsonFrameID(data)
}

func protoFrameID(b []byte) (id uint64) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return id
		}
		b = b[n:]
		if num == 1 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return id
			}
			id, b = v, b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return id
		}
		b = b[n:]
	}
	return id
}

func jsonFrameID(data []byte) (id uint64) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return 0
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return id
		}
		if key != "id" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return id
			}
			continue
		}
		v, err := dec.Token()
		if err != nil {
			return id
		}
		var perr error
		switch v := v.(type) {
		case json.Number:
			id, perr = strconv.ParseUint(v.String(), 10, 64)
		case string:
			id, perr = strconv.ParseUint(v, 10, 64)
		default:
			return 0 // an object or array: not an id, and not skippable here
		}
		if perr != nil {
			// Not a uint64 (negative, fractional, 2^64 or more): the
			// frame has no id the client could match, so the error goes
			// out with id 0, never a clamped one (issue 14).
			return 0
		}
	}
	return id
}

// decodeProblem words a decoding error for the client: the protobuf
// library's "proto:" prefix goes, and a JSON position comes last, so the
// message starts with the problem (`undecodable frame: unknown field
// "bogus" at line 1:9`).
func decodeProblem(err error) string {
	msg := err.Error()
	prefix := ""
	if errors.Is(err, wire.ErrDecode) {
		prefix = wire.ErrDecode.Error() + ": "
		msg = strings.TrimPrefix(msg, prefix)
	}
	// The protobuf library separates words with a space or, at random, a
	// no-break space, so that nobody matches its messages; this only trims.
	msg = strings.ReplaceAll(msg, "\u00a0", " ")
	msg = strings.TrimPrefix(msg, "proto: ")
	if i := strings.Index(msg, "(line "); i >= 0 {
		if j := strings.Index(msg[i:], "): "); j > 0 {
			where := msg[i+1 : i+j]
			head := strings.TrimSpace(msg[:i])
			msg = msg[i+j+3:] + " at " + where
			if head != "" {
				msg = head + ": " + msg
			}
		}
	}
	return prefix + msg
}

func frameKind(mt int) string {
	switch mt {
	case websocket.BinaryMessage:
		return "binary"
	case websocket.TextMessage:
		return "text"
	}
	return fmt.Sprintf("type-%d", mt)
}

// invalidFrame answers an undecodable or mistyped frame with invalid, and
// closes a session that sends more than MaxInvalidFrames of them in a row
// (a broken or hostile client). Requests that decode but fail validation
// answer invalid too without counting: a client that gets them wrong is not
// speaking another protocol.
func (s *session) invalidFrame(id uint64, problem string) {
	s.invalidRun++
	if len(problem) > maxErrorMessage {
		problem = problem[:maxErrorMessage] + "…"
	}
	s.sendError(id, wire.Errorf(wire.CodeInvalid, "%s", problem))
	if s.invalidRun > MaxInvalidFrames {
		s.close(wire.ClosePolicyViolation, fmt.Sprintf("more than %d invalid frames in a row", MaxInvalidFrames), true)
	}
}

func validConversationID(conv string) *wire.Error {
	switch {
	case conv == "":
		return wire.Errorf(wire.CodeInvalid, "conversation_id is required")
	case len(conv) > maxConversationIDBytes || !rules.IsDM(conv) && !rules.IsGroup(conv):
		return wire.Errorf(wire.CodeInvalid, "conversation_id %.80q is not a conversation id (dm:<a>:<b> or g:<id>)", conv)
	}
	return nil
}

// validateSend checks a send before it costs a rate-limit token or a bus
// record. The chat role validates again; this is the cheap early answer.
func (g *Gateway) validateSend(m *parleyv1.Send) *wire.Error {
	if err := validConversationID(m.GetConversationId()); err != nil {
		return err
	}
	if err := rules.ValidateSend(m, g.cfg.MaxMessageBytes); err != nil {
		return wire.AsError(err)
	}
	return nil
}

func (g *Gateway) handleSend(s *session, id uint64, m *parleyv1.Send) {
	if err := g.validateSend(m); err != nil {
		s.sendError(id, err)
		return
	}
	if ok, wait := g.sendRate.Allow(s.user); !ok {
		s.sendError(id, wire.RateLimited(fmt.Sprintf("over %g sends per second", g.cfg.SendRate), wait))
		return
	}
	if md := m.GetMedia(); md != nil {
		// Checked inline on the reader, like reads: it keeps a client's
		// sends in order, and one HEAD at a time per connection.
		checked, err := g.checkMedia(s.user, md)
		if err != nil {
			s.sendError(id, wire.AsError(err))
			return
		}
		m = &parleyv1.Send{ConversationId: m.GetConversationId(), ClientMsgId: m.GetClientMsgId(),
			Content: &parleyv1.Send_Media{Media: checked}}
	}
	rec := g.record(s, m.GetConversationId())
	rec.Op = &parleyv1.IngressRecord_Send{Send: m}
	g.do(s, id, rec, func(rep *parleyv1.Reply) {
		if ok := rep.GetSendOk(); ok != nil {
			s.send(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_SendOk{SendOk: ok}})
		} else if acc := rep.GetSendAccepted(); acc != nil {
			s.send(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_SendAccepted{SendAccepted: acc}})
		}
	})
}

// handleChange sends an edit, delete, reaction, role change or rename
// (setOp sets it) of conv to the chat role after the checks
// rules.ValidateEdit, ValidateDelete, ValidateReact, ValidateSetRole or
// ValidateRename made (invalid, the error of those), spending a send token
// like a send. The reply is a `message` frame with the request's id
// carrying the event (or an error frame).
func (g *Gateway) handleChange(s *session, id uint64, conv string, invalid error, setOp func(*parleyv1.IngressRecord)) {
	if err := validConversationID(conv); err != nil {
		s.sendError(id, err)
		return
	}
	if invalid != nil {
		s.sendError(id, wire.AsError(invalid))
		return
	}
	if ok, wait := g.sendRate.Allow(s.user); !ok {
		s.sendError(id, wire.RateLimited(fmt.Sprintf("over %g sends per second (edits, deletes, reactions and group changes count as sends)", g.cfg.SendRate), wait))
		return
	}
	rec := g.record(s, conv)
	setOp(rec)
	g.do(s, id, rec, func(rep *parleyv1.Reply) {
		if ev := rep.GetEvent(); ev != nil {
			s.send(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Message{Message: ev}})
		}
	})
}

func (g *Gateway) checkMedia(user string, md *parleyv1.Media) (*parleyv1.Media, error) {
	if g.cfg.Media == nil {
		return nil, wire.Errorf(wire.CodeInvalid, "this server accepts no media messages (no media store configured)")
	}
	ctx, cancel := g.requestCtx()
	defer cancel()
	return g.cfg.Media.Check(ctx, user, md)
}

// validReceipt checks an ack (delivered up to seq) or read (read up to
// seq), answering invalid when it is not. Success has no reply.
func (g *Gateway) validReceipt(s *session, id uint64, conv string, seq uint64) bool {
	if err := validConversationID(conv); err != nil {
		s.sendError(id, err)
		return false
	}
	if seq == 0 {
		s.sendError(id, wire.Errorf(wire.CodeInvalid, "seq must be at least 1"))
		return false
	}
	return true
}

// record returns an ingress record from s for conv, due within
// RequestTimeout; the caller sets its op.
func (g *Gateway) record(s *session, conv string) *parleyv1.IngressRecord {
	now := time.Now()
	return &parleyv1.IngressRecord{
		Origin:         &parleyv1.Origin{UserId: s.user, DeviceId: s.device, SessionId: s.id, HomeRegion: s.home},
		ConversationId: conv,
		SentAt:         now.UnixMilli(),
		Deadline:       now.Add(g.cfg.RequestTimeout).UnixMilli(),
	}
}

// replyError returns a callback that answers an error reply to s as an
// error frame with id; success has no frame.
func (g *Gateway) replyError(s *session, id uint64) func(*parleyv1.Reply) {
	return func(rep *parleyv1.Reply) {
		if e := rep.GetError(); e != nil {
			s.sendError(id, &wire.Error{Code: e.GetCode(), Message: e.GetMessage(), RetryAfterMs: e.GetRetryAfterMs()})
		}
	}
}

// do sends rec to the chat role. The reply comes back on the bus (Run); an
// error reply becomes an error frame with the request's id, and ok (if any)
// handles success.
func (g *Gateway) do(s *session, id uint64, rec *parleyv1.IngressRecord, ok func(*parleyv1.Reply)) {
	ctx, cancel := g.requestCtx()
	defer cancel()
	replyErr := g.replyError(s, id)
	g.cc.Do(ctx, rec, func(rep *parleyv1.Reply) {
		if rep.GetError() != nil {
			replyErr(rep)
			return
		}
		if ok != nil {
			ok(rep)
		}
	})
}

// readAllowed spends one of s's user's read budget (Config.ReadLimits),
// answering rate_limited when it is empty.
func (g *Gateway) readAllowed(s *session, id uint64) bool {
	if g.cfg.ReadLimits == nil {
		return true
	}
	ok, wait := g.cfg.ReadLimits.Allow(s.user)
	if !ok {
		s.sendError(id, wire.RateLimited("over the per-user rate of sync and history requests", wait))
	}
	return ok
}

func (g *Gateway) handleSync(s *session, id uint64, m *parleyv1.Sync) {
	if !g.readAllowed(s, id) {
		return
	}
	if m == nil {
		m = &parleyv1.Sync{}
	}
	if m.GetLimit() > wire.MaxPageSize {
		s.sendError(id, wire.Errorf(wire.CodeInvalid, "limit %d is over %d", m.GetLimit(), wire.MaxPageSize))
		return
	}
	ctx, cancel := g.requestCtx()
	res, err := g.q.Sync(ctx, s.user, m)
	cancel()
	if err != nil {
		s.sendError(id, err)
		return
	}
	s.send(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_SyncResult{SyncResult: res}})
}

func (g *Gateway) handleHistory(s *session, id uint64, m *parleyv1.History) {
	if !g.readAllowed(s, id) {
		return
	}
	if err := validConversationID(m.GetConversationId()); err != nil {
		s.sendError(id, err)
		return
	}
	if m.GetLimit() > wire.MaxPageSize {
		s.sendError(id, wire.Errorf(wire.CodeInvalid, "limit %d is over %d", m.GetLimit(), wire.MaxPageSize))
		return
	}
	if m.GetBefore() != 0 && m.After != nil {
		s.sendError(id, wire.Errorf(wire.CodeInvalid, "set at most one of before and after"))
		return
	}
	ctx, cancel := g.requestCtx()
	res, err := g.q.History(ctx, s.user, m)
	cancel()
	if err != nil {
		s.sendError(id, err)
		return
	}
	s.send(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_HistoryResult{HistoryResult: res}})
}

// handleTyping fans a typing indicator out to the conversation's other
// members. It is best effort: throttled per session, never stored, and
// dropped first under backpressure. In a DM whose other user blocks the
// typist it reaches no one, by the block lookup presence pushes use
// (audienceOf, so a block made on another gateway counts within
// dmPeersTTL).
func (g *Gateway) handleTyping(s *session, id uint64, m *parleyv1.Typing) {
	conv := m.GetConversationId()
	if err := validConversationID(conv); err != nil {
		s.sendError(id, err)
		return
	}
	now := time.Now().UnixNano()
	if every := g.cfg.TypingInterval; now-s.lastTyping < int64(every) || !g.typing.allow(s.user, conv, now, every) {
		return
	}
	s.lastTyping = now
	ctx, cancel := g.requestCtx()
	defer cancel()
	if _, err := g.q.CheckMember(ctx, s.user, conv); err != nil {
		s.sendError(id, err)
		return
	}
	members, err := g.conversationMembers(ctx, conv)
	if err != nil {
		g.log.Debug("typing: list members", "conversation", conv, "err", err)
		return
	}
	dm := rules.IsDM(conv)
	to := make([]string, 0, len(members))
	for _, u := range members {
		if u != s.user && !(dm && g.audienceOf(u).hidden[s.user]) {
			to = append(to, u)
		}
	}
	if len(to) == 0 {
		return
	}
	d := &parleyv1.Delivery{Body: &parleyv1.Delivery_Typing{Typing: &parleyv1.Typing{ConversationId: conv, UserId: s.user}}}
	if err := g.r.Deliver(ctx, to, d); err != nil {
		g.log.Debug("typing: deliver", "conversation", conv, "err", err)
	}
}

// conversationMembers returns conv's member ids, cached for membersTTL.
func (g *Gateway) conversationMembers(ctx context.Context, conv string) ([]string, error) {
	now := time.Now()
	if ids, ok := g.members.get(conv, now); ok {
		return ids, nil
	}
	ids, err := g.q.MemberIDs(ctx, conv)
	if err != nil {
		return nil, err
	}
	g.members.put(conv, ids, now)
	return ids, nil
}

// handlePresenceSub replaces the session's presence subscriptions and
// answers with one presence frame per user (carrying the request's id).
func (g *Gateway) handlePresenceSub(s *session, id uint64, m *parleyv1.PresenceSub) {
	req := m.GetUserIds()
	users := make([]string, 0, min(len(req), g.cfg.MaxPresenceSubs+1))
	seen := make(map[string]struct{}, cap(users))
	for _, u := range req {
		if !auth.ValidID(u) {
			s.sendError(id, wire.Errorf(wire.CodeInvalid, "user id %.80q is not 1..64 bytes of A-Za-z0-9._@-", u))
			return
		}
		if _, dup := seen[u]; !dup {
			seen[u] = struct{}{}
			users = append(users, u)
		}
	}
	if len(users) > g.cfg.MaxPresenceSubs {
		s.sendError(id, wire.Errorf(wire.CodeInvalid, "presence_sub lists %d users, over the limit of %d per connection", len(users), g.cfg.MaxPresenceSubs))
		return
	}
	ctx, cancel := g.requestCtx()
	defer cancel()
	hidden := map[string]bool{}
	if len(users) > 0 {
		// Public presence still hides users who block the viewer.
		check := g.q.PresenceVisible
		if g.cfg.PresencePublic {
			check = g.q.PresenceUnblocked
		}
		visible, err := check(ctx, s.user, users)
		if err != nil {
			s.sendError(id, err)
			return
		}
		shown := users[:0]
		for _, u := range users {
			if visible[u] {
				shown = append(shown, u)
			} else {
				hidden[u] = true
			}
		}
		users = shown
	}
	g.hub.setSubs(s, users)
	for u := range hidden {
		// Not subscribed: answered like a user nobody knows of.
		s.send(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Presence{Presence: &parleyv1.Presence{UserId: u, Status: parleyv1.PresenceStatus_PRESENCE_STATUS_UNKNOWN}}})
	}
	if len(users) == 0 {
		return
	}
	pres, err := g.ps.Get(ctx, users)
	if err != nil {
		// The subscription stands; changes will still be pushed.
		g.log.Debug("presence_sub: get", "err", err)
	}
	for _, u := range users {
		p := pres[u]
		if p == nil {
			p = &parleyv1.Presence{UserId: u, Status: parleyv1.PresenceStatus_PRESENCE_STATUS_UNKNOWN}
		}
		s.send(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Presence{Presence: p}})
	}
}
