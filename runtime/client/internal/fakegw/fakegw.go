// Package fakegw is a small in-memory Parley gateway for the client's tests:
// it speaks the wire protocol (both subprotocols) with an in-memory log per
// conversation and lets a test drop pushes, inject errors, close
// connections with a code, send Reconnect frames and expire tokens. It is
// not the server: the real gateway lives in runtime/gateway.
package fakegw

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// Server is a fake gateway. Its exported hook fields may be set before
// clients connect (or under Lock/Unlock).
type Server struct {
	HTTP *httptest.Server
	// URL is the ws:// address of the server root.
	URL string

	mu sync.Mutex
	// HeartbeatMs is announced in Welcome (default 30000).
	HeartbeatMs uint32
	// DropPush, when set, decides to drop the push of m to user.
	DropPush func(m *parleyv1.Message, user string) bool
	// OnSend, when set, may fail a send before it is applied; returning nil
	// applies it.
	OnSend func(user string, s *parleyv1.Send) *wire.Error
	// AfterSend, when set, runs after a send was stored and before send_ok;
	// returning true withholds the send_ok (as a lost reply would).
	AfterSend func(user string, s *parleyv1.Send, ok *parleyv1.SendOk) bool
	// NoSelfPush: do not push a message back to the connection that sent it.
	NoSelfPush bool
	// Refuse answers upgrades with 503 unavailable.
	Refuse bool
	// Silent stops answering pings (a link that went dark).
	Silent bool

	tokens  map[string]tokenInfo
	logs    map[string][]*parleyv1.Message
	members map[string]map[string]uint64 // conv -> user -> joined seq
	owners  map[string]string            // group -> its creator
	admins  map[string]map[string]bool   // group -> its admins
	muted   map[string]bool              // "<user>\x00<conv>" muted
	blocks  map[string]map[string]bool   // user -> the users it blocks
	dedupe  map[string]*parleyv1.SendOk
	conns   map[*Conn]struct{}
	frames  map[string][]*parleyv1.ClientFrame
	dials   int
	nextMID int64
}

type tokenInfo struct {
	user    string
	expired bool
}

// Conn is one client connection on the fake.
type Conn struct {
	s     *Server
	User  string
	ws    *websocket.Conn
	codec wire.Codec
	wmu   sync.Mutex
}

// New starts a fake gateway; it stops at the end of the test.
func New(t testing.TB) *Server {
	s := &Server{
		HeartbeatMs: 30000,
		tokens:      map[string]tokenInfo{},
		logs:        map[string][]*parleyv1.Message{},
		members:     map[string]map[string]uint64{},
		owners:      map[string]string{},
		admins:      map[string]map[string]bool{},
		muted:       map[string]bool{},
		blocks:      map[string]map[string]bool{},
		dedupe:      map[string]*parleyv1.SendOk{},
		conns:       map[*Conn]struct{}{},
		frames:      map[string][]*parleyv1.ClientFrame{},
	}
	s.HTTP = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = "ws" + strings.TrimPrefix(s.HTTP.URL, "http")
	t.Cleanup(func() {
		s.CloseAll(websocket.CloseGoingAway, "test over")
		s.HTTP.Close()
	})
	return s
}

// Lock and Unlock guard the hook fields while clients are connected.
func (s *Server) Lock()   { s.mu.Lock() }
func (s *Server) Unlock() { s.mu.Unlock() }

// AddToken lets token authenticate as user.
func (s *Server) AddToken(token, user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = tokenInfo{user: user}
}

// ExpireToken makes token fail with token_expired from now on.
func (s *Server) ExpireToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ti := s.tokens[token]
	ti.expired = true
	s.tokens[token] = ti
}

// Dials counts upgrade attempts (accepted or refused).
func (s *Server) Dials() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dials
}

// Conns returns the open connections of user.
func (s *Server) Conns(user string) []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*Conn
	for c := range s.conns {
		if c.User == user {
			out = append(out, c)
		}
	}
	return out
}

// Frames returns the frames user's connections sent, in order.
func (s *Server) Frames(user string) []*parleyv1.ClientFrame {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*parleyv1.ClientFrame(nil), s.frames[user]...)
}

// Log returns conv's stored messages.
func (s *Server) Log(conv string) []*parleyv1.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*parleyv1.Message(nil), s.logs[conv]...)
}

// AddMembers makes users members of conv from its next seq on and appends
// a MEMBER_ADDED event (pushed like any message).
func (s *Server) AddMembers(conv, by string, users ...string) *parleyv1.Message {
	s.mu.Lock()
	m := s.appendLocked(conv, by, &parleyv1.Message{Kind: parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED, Members: users})
	if s.members[conv] == nil {
		s.members[conv] = map[string]uint64{}
	}
	for _, u := range append([]string{by}, users...) {
		if _, ok := s.members[conv][u]; !ok {
			s.members[conv][u] = m.Seq
		}
	}
	s.mu.Unlock()
	s.push(m, nil)
	return m
}

// Post appends a text message by sender to conv (as if sent through
// another gateway) and pushes it.
func (s *Server) Post(conv, sender, text string) *parleyv1.Message {
	s.mu.Lock()
	m := s.appendLocked(conv, sender, &parleyv1.Message{Kind: parleyv1.MessageKind_MESSAGE_KIND_TEXT, Text: text})
	s.mu.Unlock()
	s.push(m, nil)
	return m
}

// Push sends a server frame to every connection of user.
func (s *Server) Push(user string, f *parleyv1.ServerFrame) {
	for _, c := range s.Conns(user) {
		c.Write(f)
	}
}

// CloseAll closes every connection with code and reason.
func (s *Server) CloseAll(code int, reason string) {
	s.mu.Lock()
	var cs []*Conn
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.Close(code, reason)
	}
}

// Write sends f on the connection.
func (c *Conn) Write(f *parleyv1.ServerFrame) {
	b, err := c.codec.EncodeServer(f)
	if err != nil {
		return
	}
	mt := websocket.TextMessage
	if c.codec.Binary {
		mt = websocket.BinaryMessage
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = c.ws.WriteMessage(mt, b)
}

// Close sends a close frame with code and reason and drops the connection.
func (c *Conn) Close(code int, reason string) {
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	_ = c.ws.Close()
}

// Drop closes the TCP connection without a close frame.
func (c *Conn) Drop() { _ = c.ws.Close() }

func (s *Server) memberLocked(conv, user string) (uint64, bool) {
	if strings.HasPrefix(conv, "dm:") {
		parts := strings.Split(conv, ":")
		if len(parts) == 3 && (parts[1] == user || parts[2] == user) {
			return 1, true
		}
		return 0, false
	}
	j, ok := s.members[conv][user]
	return j, ok
}

func (s *Server) membersLocked(conv string) []string {
	if strings.HasPrefix(conv, "dm:") {
		parts := strings.Split(conv, ":")
		if len(parts) == 3 {
			return []string{parts[1], parts[2]}
		}
		return nil
	}
	var out []string
	for u := range s.members[conv] {
		out = append(out, u)
	}
	return out
}

func (s *Server) appendLocked(conv, sender string, m *parleyv1.Message) *parleyv1.Message {
	s.nextMID++
	m.ConversationId = conv
	m.Seq = uint64(len(s.logs[conv]) + 1)
	m.MessageId = s.nextMID
	m.SenderId = sender
	m.CreatedAt = time.Now().UnixMilli()
	s.logs[conv] = append(s.logs[conv], m)
	return m
}

// push delivers m to every connection of every member, except skip.
func (s *Server) push(m *parleyv1.Message, skip *Conn) {
	s.mu.Lock()
	members := s.membersLocked(m.ConversationId)
	var targets []*Conn
	for c := range s.conns {
		if c == skip {
			continue
		}
		for _, u := range members {
			if c.User == u && (s.DropPush == nil || !s.DropPush(m, u)) {
				targets = append(targets, c)
			}
		}
	}
	s.mu.Unlock()
	for _, c := range targets {
		c.Write(&parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Message{Message: m}})
	}
}

func writeHTTPError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": msg}})
}

var upgrader = websocket.Upgrader{
	Subprotocols: []string{wire.SubprotocolProto, wire.SubprotocolJSON},
	CheckOrigin:  func(*http.Request) bool { return true },
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/ws" && strings.HasPrefix(r.URL.Path, "/v1/conversations") {
		s.serveREST(w, r)
		return
	}
	if r.URL.Path != "/v1/ws" {
		writeHTTPError(w, http.StatusNotFound, wire.CodeNotFound, "no route "+r.URL.Path)
		return
	}
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	s.dials++
	ti, ok := s.tokens[tok]
	hb := s.HeartbeatMs
	refuse := s.Refuse
	s.mu.Unlock()
	switch {
	case refuse:
		writeHTTPError(w, http.StatusServiceUnavailable, wire.CodeUnavailable, "refusing connections")
		return
	case !ok:
		writeHTTPError(w, http.StatusUnauthorized, wire.CodeUnauthenticated, "unknown token")
		return
	case ti.expired:
		writeHTTPError(w, http.StatusUnauthorized, wire.CodeTokenExpired, "token expired")
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	codec, ok := wire.CodecFor(ws.Subprotocol())
	if !ok {
		_ = ws.Close()
		return
	}
	c := &Conn{s: s, User: ti.user, ws: ws, codec: codec}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		_ = ws.Close()
	}()
	c.Write(&parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Welcome{Welcome: &parleyv1.Welcome{
		UserId: ti.user, DeviceId: "d1", SessionId: "s" + strconv.Itoa(s.Dials()), HeartbeatMs: hb, GatewayId: "gateway-0"}}})
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			return
		}
		f, err := codec.DecodeClient(b)
		if err != nil {
			c.Write(wire.ErrorFrame(0, wire.CodeInvalid, err.Error(), 0))
			continue
		}
		s.mu.Lock()
		s.frames[c.User] = append(s.frames[c.User], f)
		s.mu.Unlock()
		s.handle(c, f)
	}
}

func (s *Server) handle(c *Conn, f *parleyv1.ClientFrame) {
	id := f.GetId()
	switch b := f.GetBody().(type) {
	case *parleyv1.ClientFrame_Ping:
		s.mu.Lock()
		silent := s.Silent
		s.mu.Unlock()
		if silent {
			return
		}
		c.Write(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Pong{Pong: &parleyv1.Pong{}}})
	case *parleyv1.ClientFrame_Send:
		s.send(c, id, b.Send)
	case *parleyv1.ClientFrame_Sync:
		c.Write(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_SyncResult{SyncResult: s.sync(c.User, b.Sync)}})
	case *parleyv1.ClientFrame_History:
		res, we := s.history(c.User, b.History)
		if we != nil {
			c.Write(wire.ErrorFrame(id, we.Code, we.Message, 0))
			return
		}
		c.Write(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_HistoryResult{HistoryResult: res}})
	case *parleyv1.ClientFrame_Read:
		s.mu.Lock()
		members := s.membersLocked(b.Read.ConversationId)
		s.mu.Unlock()
		rc := &parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Receipt{Receipt: &parleyv1.Receipt{
			ConversationId: b.Read.ConversationId, UserId: c.User, Kind: parleyv1.ReceiptKind_RECEIPT_KIND_READ, Seq: b.Read.Seq}}}
		for _, u := range members {
			if u != c.User {
				s.Push(u, rc)
			}
		}
	case *parleyv1.ClientFrame_Typing:
		s.mu.Lock()
		members := s.membersLocked(b.Typing.ConversationId)
		s.mu.Unlock()
		tf := &parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Typing{Typing: &parleyv1.Typing{ConversationId: b.Typing.ConversationId, UserId: c.User}}}
		for _, u := range members {
			if u != c.User {
				s.Push(u, tf)
			}
		}
	case *parleyv1.ClientFrame_PresenceSub:
		for _, u := range b.PresenceSub.UserIds {
			st := parleyv1.PresenceStatus_PRESENCE_STATUS_OFFLINE
			if len(s.Conns(u)) > 0 {
				st = parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE
			}
			c.Write(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Presence{Presence: &parleyv1.Presence{UserId: u, Status: st}}})
		}
	case *parleyv1.ClientFrame_Ack:
		// Recorded in frames.
	case *parleyv1.ClientFrame_Edit:
		s.change(c, id, b.Edit.GetConversationId(), b.Edit.GetSeq(), b.Edit.GetText(), false)
	case *parleyv1.ClientFrame_Delete:
		s.change(c, id, b.Delete.GetConversationId(), b.Delete.GetSeq(), "", true)
	case *parleyv1.ClientFrame_React:
		s.react(c, id, b.React)
	case *parleyv1.ClientFrame_SetRole:
		s.setRole(c, id, b.SetRole)
	case *parleyv1.ClientFrame_Rename:
		s.rename(c, id, b.Rename)
	case *parleyv1.ClientFrame_Mute:
		s.mu.Lock()
		s.muted[c.User+"\x00"+b.Mute.GetConversationId()] = !b.Mute.GetRemove()
		s.mu.Unlock()
		c.Write(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Mute{Mute: b.Mute}})
	case *parleyv1.ClientFrame_Block:
		s.block(c, id, b.Block)
	}
}

// block stores a block like the server: oneself or a malformed id is
// invalid; a repeat changes nothing.
func (s *Server) block(c *Conn, id uint64, b *parleyv1.Block) {
	if b.GetUserId() == c.User || !wire.ValidID(b.GetUserId()) {
		c.Write(wire.ErrorFrame(id, wire.CodeInvalid, "cannot block that user", 0))
		return
	}
	s.mu.Lock()
	if s.blocks[c.User] == nil {
		s.blocks[c.User] = map[string]bool{}
	}
	s.blocks[c.User][b.GetUserId()] = !b.GetRemove()
	s.mu.Unlock()
	c.Write(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Block{Block: b}})
}

// Muted reports whether user muted conv.
func (s *Server) Muted(user, conv string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.muted[user+"\x00"+conv]
}

// setRole makes a member an admin or a member again like the server: the
// creator owns the group and alone may; a ROLE_CHANGED event, or seq 0
// when the member has the role already.
func (s *Server) setRole(c *Conn, id uint64, r *parleyv1.SetRole) {
	conv, user, role := r.GetConversationId(), r.GetUserId(), r.GetRole()
	s.mu.Lock()
	var werr *wire.Error
	_, member := s.memberLocked(conv, user)
	switch _, caller := s.memberLocked(conv, c.User); {
	case !caller:
		werr = wire.Errorf(wire.CodeNotMember, "not a member")
	case s.owners[conv] != c.User:
		werr = wire.Errorf(wire.CodeForbidden, "only the group's owner may make or unmake admins")
	case role != "admin" && role != "member":
		werr = wire.Errorf(wire.CodeInvalid, `role must be "admin" or "member"`)
	case !member:
		werr = wire.Errorf(wire.CodeNotFound, "%s is not a member of %s", user, conv)
	}
	if werr != nil {
		s.mu.Unlock()
		c.Write(wire.ErrorFrame(id, werr.Code, werr.Message, 0))
		return
	}
	ev := &parleyv1.Message{ConversationId: conv, SenderId: c.User, Kind: parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED, Members: []string{user}, Text: role}
	if s.admins[conv][user] == (role == "admin") {
		s.mu.Unlock()
		c.Write(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Message{Message: ev}})
		return
	}
	if s.admins[conv] == nil {
		s.admins[conv] = map[string]bool{}
	}
	s.admins[conv][user] = role == "admin"
	ev = s.appendLocked(conv, c.User, ev)
	s.mu.Unlock()
	s.push(ev, c)
	c.Write(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Message{Message: ev}})
}

// rename sets a group's title like the server: the owner and admins may; a
// RENAMED event.
func (s *Server) rename(c *Conn, id uint64, r *parleyv1.Rename) {
	conv := r.GetConversationId()
	s.mu.Lock()
	if _, ok := s.memberLocked(conv, c.User); !ok {
		s.mu.Unlock()
		c.Write(wire.ErrorFrame(id, wire.CodeNotMember, "not a member", 0))
		return
	}
	if s.owners[conv] != c.User && !s.admins[conv][c.User] {
		s.mu.Unlock()
		c.Write(wire.ErrorFrame(id, wire.CodeForbidden, "only the group's owner and admins may rename it", 0))
		return
	}
	ev := s.appendLocked(conv, c.User, &parleyv1.Message{Kind: parleyv1.MessageKind_MESSAGE_KIND_RENAMED, Text: r.GetTitle()})
	s.mu.Unlock()
	s.push(ev, c)
	c.Write(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Message{Message: ev}})
}

// react adds or removes the caller's reaction like the server (no limits):
// a REACTION event with the counts, pushed to the other connections and
// answered to the request; one that changes nothing is answered with seq 0.
// The target keeps the users of each emoji; history shows count and me.
func (s *Server) react(c *Conn, id uint64, r *parleyv1.React) {
	s.mu.Lock()
	conv, seq := r.GetConversationId(), r.GetSeq()
	log := s.logs[conv]
	if _, ok := s.memberLocked(conv, c.User); !ok {
		s.mu.Unlock()
		c.Write(wire.ErrorFrame(id, wire.CodeNotMember, "not a member", 0))
		return
	}
	if seq == 0 || seq > uint64(len(log)) || log[seq-1].GetDeleted() {
		s.mu.Unlock()
		c.Write(wire.ErrorFrame(id, wire.CodeNotFound, fmt.Sprintf("%s has no message at seq %d", conv, seq), 0))
		return
	}
	target := log[seq-1]
	ev := &parleyv1.Message{Kind: parleyv1.MessageKind_MESSAGE_KIND_REACTION, TargetSeq: seq, Emoji: r.GetEmoji(), ReactionRemoved: r.GetRemove()}
	after, changed := reacted(target.GetReactions(), r.GetEmoji(), c.User, !r.GetRemove())
	if !changed {
		ev.ConversationId, ev.SenderId, ev.Reactions = conv, c.User, counts(after)
		s.mu.Unlock()
		c.Write(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Message{Message: ev}})
		return
	}
	ev.Reactions = counts(after)
	ev = s.appendLocked(conv, c.User, ev)
	target.Reactions, target.ReactionSeq = after, ev.GetSeq()
	s.mu.Unlock()
	s.push(ev, c)
	c.Write(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Message{Message: ev}})
}

// reacted returns rs with user added to (or taken out of) emoji's users.
func reacted(rs []*parleyv1.Reaction, emoji, user string, add bool) (out []*parleyv1.Reaction, changed bool) {
	found := false
	for _, r := range rs {
		users := r.GetUserIds()
		if r.GetEmoji() == emoji {
			found = true
			has := slices.Contains(users, user)
			switch {
			case add && !has:
				users, changed = append(slices.Clone(users), user), true
			case !add && has:
				users, changed = slices.DeleteFunc(slices.Clone(users), func(u string) bool { return u == user }), true
			}
		}
		if len(users) > 0 {
			out = append(out, &parleyv1.Reaction{Emoji: r.GetEmoji(), Count: uint32(len(users)), UserIds: users})
		}
	}
	if add && !found {
		out, changed = append(out, &parleyv1.Reaction{Emoji: emoji, Count: 1, UserIds: []string{user}}), true
	}
	return out, changed
}

// counts drops the users of stored reactions.
func counts(rs []*parleyv1.Reaction) []*parleyv1.Reaction {
	var out []*parleyv1.Reaction
	for _, r := range rs {
		out = append(out, &parleyv1.Reaction{Emoji: r.GetEmoji(), Count: r.GetCount()})
	}
	return out
}

// viewed is m as user reads it: reactions with count and me, no users.
func viewed(m *parleyv1.Message, user string) *parleyv1.Message {
	if len(m.GetReactions()) == 0 || m.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_REACTION {
		return m
	}
	v := proto.CloneOf(m)
	for _, r := range v.Reactions {
		r.Me, r.UserIds = slices.Contains(r.GetUserIds(), user), nil
	}
	return v
}

// change edits or deletes the sender's own message seq of conv like the
// server: an EDITED or DELETED event pushed to every member and answered
// to the request; forbidden for another's message, not_found for a seq
// the log does not hold.
func (s *Server) change(c *Conn, id uint64, conv string, seq uint64, text string, del bool) {
	s.mu.Lock()
	log := s.logs[conv]
	if _, ok := s.memberLocked(conv, c.User); !ok {
		s.mu.Unlock()
		c.Write(wire.ErrorFrame(id, wire.CodeNotMember, "not a member", 0))
		return
	}
	if seq == 0 || seq > uint64(len(log)) {
		s.mu.Unlock()
		c.Write(wire.ErrorFrame(id, wire.CodeNotFound, fmt.Sprintf("%s has no message at seq %d", conv, seq), 0))
		return
	}
	target := log[seq-1]
	if target.GetSenderId() != c.User {
		s.mu.Unlock()
		c.Write(wire.ErrorFrame(id, wire.CodeForbidden, "only the sender may change a message", 0))
		return
	}
	ev := &parleyv1.Message{Kind: parleyv1.MessageKind_MESSAGE_KIND_EDITED, TargetSeq: seq, Text: text}
	if del {
		ev.Kind = parleyv1.MessageKind_MESSAGE_KIND_DELETED
		target.Deleted, target.Text = true, ""
	} else {
		target.Text = text
	}
	ev = s.appendLocked(conv, c.User, ev)
	if !del {
		target.EditedAt = ev.CreatedAt
	}
	s.mu.Unlock()
	s.push(ev, c)
	c.Write(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Message{Message: ev}})
}

func (s *Server) send(c *Conn, id uint64, snd *parleyv1.Send) {
	s.mu.Lock()
	hook := s.OnSend
	s.mu.Unlock()
	if hook != nil {
		if we := hook(c.User, snd); we != nil {
			c.Write(wire.ErrorFrame(id, we.Code, we.Message, we.RetryAfterMs))
			return
		}
	}
	key := snd.ConversationId + "\x00" + c.User + "\x00" + snd.ClientMsgId
	s.mu.Lock()
	if _, ok := s.memberLocked(snd.ConversationId, c.User); !ok {
		s.mu.Unlock()
		c.Write(wire.ErrorFrame(id, wire.CodeNotMember, "not a member", 0))
		return
	}
	if p := strings.Split(snd.ConversationId, ":"); len(p) == 3 && p[0] == "dm" && (s.blocks[p[1]][c.User] || s.blocks[p[2]][c.User]) {
		s.mu.Unlock()
		c.Write(wire.ErrorFrame(id, wire.CodeBlocked, "the other user of the DM has blocked you", 0))
		return
	}
	ok, dup := s.dedupe[key]
	var m *parleyv1.Message
	if !dup {
		m = &parleyv1.Message{ClientMsgId: snd.ClientMsgId}
		switch ct := snd.Content.(type) {
		case *parleyv1.Send_Text:
			m.Kind, m.Text = parleyv1.MessageKind_MESSAGE_KIND_TEXT, ct.Text
		case *parleyv1.Send_Media:
			m.Kind, m.Media = parleyv1.MessageKind_MESSAGE_KIND_MEDIA, ct.Media
		}
		m = s.appendLocked(snd.ConversationId, c.User, m)
		ok = &parleyv1.SendOk{ConversationId: m.ConversationId, Seq: m.Seq, MessageId: m.MessageId, CreatedAt: m.CreatedAt, ClientMsgId: m.ClientMsgId}
		s.dedupe[key] = ok
	}
	after := s.AfterSend
	noSelf := s.NoSelfPush
	s.mu.Unlock()
	if m != nil {
		var skip *Conn
		if noSelf {
			skip = c
		}
		s.push(m, skip)
	}
	if after != nil && after(c.User, snd, ok) {
		return
	}
	c.Write(&parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_SendOk{SendOk: ok}})
}

func (s *Server) sync(user string, req *parleyv1.Sync) *parleyv1.SyncResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := int(req.GetLimit())
	if limit <= 0 {
		limit = wire.DefaultPageSize
	}
	res := &parleyv1.SyncResult{}
	if len(req.GetCursors()) == 0 {
		var convs []string
		for conv := range s.logs {
			if _, ok := s.memberLocked(conv, user); ok {
				convs = append(convs, conv)
			}
		}
		sort.Strings(convs)
		for _, conv := range convs {
			j, _ := s.memberLocked(conv, user)
			res.Conversations = append(res.Conversations, &parleyv1.ConversationState{
				ConversationId: conv, HeadSeq: uint64(len(s.logs[conv])), JoinedSeq: j})
		}
		return res
	}
	for _, cu := range req.GetCursors() {
		j, ok := s.memberLocked(cu.ConversationId, user)
		if !ok {
			continue
		}
		log := s.logs[cu.ConversationId]
		if len(log) == 0 {
			continue
		}
		st := &parleyv1.ConversationState{ConversationId: cu.ConversationId, HeadSeq: uint64(len(log)), JoinedSeq: j}
		for _, m := range log {
			if m.Seq > cu.Seq && m.Seq >= j {
				if len(st.Messages) == limit {
					st.HasMore = true
					break
				}
				st.Messages = append(st.Messages, m)
			}
		}
		res.Conversations = append(res.Conversations, st)
	}
	return res
}

func (s *Server) history(user string, h *parleyv1.History) (*parleyv1.HistoryResult, *wire.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.memberLocked(h.ConversationId, user)
	if !ok {
		return nil, wire.Errorf(wire.CodeNotMember, "not a member of %s", h.ConversationId)
	}
	limit := int(h.GetLimit())
	if limit <= 0 {
		limit = wire.DefaultPageSize
	}
	log := s.logs[h.ConversationId]
	res := &parleyv1.HistoryResult{ConversationId: h.ConversationId}
	visible := func(m *parleyv1.Message) bool { return m.Seq >= j }
	if h.After != nil {
		for _, m := range log {
			if m.Seq > h.GetAfter() && visible(m) {
				if len(res.Messages) == limit {
					res.HasMore = true
					break
				}
				res.Messages = append(res.Messages, viewed(m, user))
			}
		}
		return res, nil
	}
	before := h.GetBefore()
	if before == 0 {
		before = uint64(len(log)) + 1
	}
	for i := len(log) - 1; i >= 0; i-- {
		m := log[i]
		if m.Seq < before && visible(m) {
			if len(res.Messages) == limit {
				res.HasMore = true
				break
			}
			res.Messages = append(res.Messages, viewed(m, user))
		}
	}
	return res, nil
}

// serveREST answers the few REST calls the CLI makes: create a group, add
// and remove members, and the inbox.
func (s *Server) serveREST(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ti, ok := s.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	s.mu.Unlock()
	if !ok || ti.expired {
		writeHTTPError(w, http.StatusUnauthorized, wire.CodeUnauthenticated, "bad token")
		return
	}
	user := ti.user
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/") // v1 conversations [id members [user]]
	var body struct {
		Title   string   `json:"title"`
		Members []string `json:"members"`
		UserIDs []string `json:"user_ids"`
	}
	if r.Body != nil {
		_ = json.NewDecoder(r.Body).Decode(&body)
	}
	reply := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	event := func(m *parleyv1.Message) json.RawMessage {
		b, _ := protojsonOpts.Marshal(m)
		return b
	}
	switch {
	case r.Method == http.MethodPost && len(parts) == 2:
		s.mu.Lock()
		s.nextMID++
		id := "g:" + strconv.FormatInt(s.nextMID, 10)
		m := s.appendLocked(id, user, &parleyv1.Message{Kind: parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED, Text: body.Title, Members: body.Members})
		s.members[id] = map[string]uint64{user: 1}
		s.owners[id] = user
		for _, u := range body.Members {
			s.members[id][u] = 1
		}
		s.mu.Unlock()
		s.push(m, nil)
		reply(map[string]any{"conversation": map[string]any{"id": id, "kind": "group", "title": body.Title}, "event": event(m)})
	case r.Method == http.MethodGet && len(parts) == 2:
		res := s.sync(user, &parleyv1.Sync{})
		var out []json.RawMessage
		for _, st := range res.Conversations {
			b, _ := protojsonOpts.Marshal(st)
			out = append(out, b)
		}
		reply(map[string]any{"conversations": out})
	case r.Method == http.MethodPost && len(parts) == 4 && parts[3] == "members":
		reply(map[string]any{"event": event(s.AddMembers(parts[2], user, body.UserIDs...))})
	case r.Method == http.MethodDelete && len(parts) == 5 && parts[3] == "members":
		s.mu.Lock()
		m := s.appendLocked(parts[2], user, &parleyv1.Message{Kind: parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED, Members: []string{parts[4]}})
		s.mu.Unlock()
		s.push(m, nil)
		s.mu.Lock()
		delete(s.members[parts[2]], parts[4])
		s.mu.Unlock()
		reply(map[string]any{"event": event(m)})
	default:
		writeHTTPError(w, http.StatusNotFound, wire.CodeNotFound, "no route "+r.Method+" "+r.URL.Path)
	}
}

var protojsonOpts = protojson.MarshalOptions{UseProtoNames: true}
