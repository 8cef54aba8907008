package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// NewClientMsgID returns a fresh client_msg_id: 16 random bytes in hex.
func NewClientMsgID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// request sends f (one attempt) and waits for the frame with its id. An
// Error reply is returned as *wire.Error; an attempt that outlives
// Options.RequestTimeout while ctx is still live is a *wire.Error timeout.
func (c *Client) request(ctx context.Context, f *parleyv1.ClientFrame) (*parleyv1.ServerFrame, error) {
	actx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	cn, err := c.waitConn(actx)
	if err != nil {
		return nil, c.attemptErr(ctx, err)
	}
	id := c.nextID.Add(1)
	f.Id = id
	cl := &call{conn: cn, ch: make(chan *parleyv1.ServerFrame, 1)}
	c.mu.Lock()
	c.pending[id] = cl
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()
	if err := cn.write(f); err != nil {
		return nil, err
	}
	select {
	case rep := <-cl.ch:
		return reply(rep)
	case <-cn.gone:
		select {
		case rep := <-cl.ch:
			return reply(rep)
		default:
		}
		return nil, ErrConnectionLost
	case <-actx.Done():
		return nil, c.attemptErr(ctx, actx.Err())
	case <-c.runCtx.Done():
		return nil, c.stopErr()
	}
}

// attemptErr names why an attempt ended without a reply: the caller's ctx,
// or the per-attempt timeout.
func (c *Client) attemptErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return wire.Errorf(wire.CodeTimeout, "no reply within %s; the outcome is unknown", c.opts.RequestTimeout)
	}
	return err
}

func reply(f *parleyv1.ServerFrame) (*parleyv1.ServerFrame, error) {
	if e := f.GetError(); e != nil {
		return nil, wireErr(e)
	}
	return f, nil
}

// post writes a frame that has no reply, on the current connection or, if
// that is lost before the write, on the next one (within ctx).
func (c *Client) post(ctx context.Context, f *parleyv1.ClientFrame) error {
	for {
		cn, err := c.waitConn(ctx)
		if err != nil {
			return err
		}
		f.Id = c.nextID.Add(1)
		err = cn.write(f)
		if err == nil || !errors.Is(err, ErrConnectionLost) {
			return err
		}
		select {
		case <-cn.gone:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Send sends a text message to conversation conv (for a DM:
// "dm:<a>:<b>", a < b) and returns its send_ok once it is durably stored.
// See SendMessage for retries and errors.
func (c *Client) Send(ctx context.Context, conv, text string) (*parleyv1.SendOk, error) {
	return c.SendMessage(ctx, &parleyv1.Send{ConversationId: conv, Content: &parleyv1.Send_Text{Text: text}})
}

// SendReply sends text to conv as a reply to the message at seq replyTo (the
// stored message and the pushes carry a quote of it, Message.reply_to). See
// SendMessage; a replyTo after the conversation's last message or naming a
// system event is invalid, one with no message not_found.
func (c *Client) SendReply(ctx context.Context, conv, text string, replyTo uint64) (*parleyv1.SendOk, error) {
	return c.SendMessage(ctx, &parleyv1.Send{ConversationId: conv, Content: &parleyv1.Send_Text{Text: text}, ReplyTo: replyTo})
}

// SendMedia sends a media message (an uploaded object) to conv. See
// SendMessage.
func (c *Client) SendMedia(ctx context.Context, conv string, m *parleyv1.Media) (*parleyv1.SendOk, error) {
	return c.SendMessage(ctx, &parleyv1.Send{ConversationId: conv, Content: &parleyv1.Send_Media{Media: m}})
}

// SendMessage sends s, with a fresh client_msg_id when s has none (pass one
// to make a send idempotent across restarts of the application). While ctx
// lasts it retries with the same client_msg_id, which never stores a second
// copy, after timeout (outcome unknown), after a lost connection (once
// reconnected), and after unavailable (when retry_after_ms has passed).
// Other failures are returned at once as *wire.Error (errors.As): not_member,
// not_found, too_large, rate_limited (with RetryAfterMs), invalid,
// group_full, unauthenticated, token_expired. When ctx ends first, the error
// wraps ctx's error and the last timeout, if any. The message is also
// emitted as a MessageEvent (once, like any other).
//
// When the conversation's home region is unreachable from the region this
// client is connected to, the server takes the send into a durable outbox:
// SendMessage then returns a nil SendOk and an *AcceptedError (errors.Is
// ErrAccepted). The message is pending: it has no seq yet, and arrives later
// as a MessageEvent with the same client_msg_id once its home sequenced it
// (docs/multi-region.md). Do not resend it under a new client_msg_id.
func (c *Client) SendMessage(ctx context.Context, s *parleyv1.Send) (*parleyv1.SendOk, error) {
	if s.GetClientMsgId() == "" {
		s = proto.CloneOf(s)
		s.ClientMsgId = NewClientMsgID()
	}
	what := fmt.Sprintf("send to %s (client_msg_id %s)", s.GetConversationId(), s.GetClientMsgId())
	rep, err := c.retrying(ctx, what, func() *parleyv1.ClientFrame {
		return &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Send{Send: s}}
	})
	if err != nil {
		return nil, err
	}
	if acc := rep.GetSendAccepted(); acc != nil {
		return nil, &AcceptedError{Accepted: acc}
	}
	ok := rep.GetSendOk()
	if ok == nil {
		return nil, fmt.Errorf("send to %s: reply without send_ok", s.GetConversationId())
	}
	c.ownMessage(s, ok)
	return ok, nil
}

// retrying sends the frame that frame makes, again while ctx lasts after
// a lost connection (once reconnected), timeout (half the backoff) and
// unavailable (retry_after_ms, else the backoff), and returns the first
// reply. Other errors, and ctx ending, are returned wrapped as "what: err"
// (with the last retried error when ctx ended). Only requests whose retry
// is safe use it: sends (client_msg_id), edits and deletes (answered with
// the first outcome).
func (c *Client) retrying(ctx context.Context, what string, frame func() *parleyv1.ClientFrame) (*parleyv1.ServerFrame, error) {
	var last error
	for retries := 0; ; retries++ {
		rep, err := c.request(ctx, frame())
		if err == nil {
			return rep, nil
		}
		var we *wire.Error
		var delay time.Duration
		switch {
		case errors.Is(err, ErrConnectionLost):
			// The next attempt waits for the reconnect.
		case errors.As(err, &we) && we.Code == wire.CodeTimeout:
			delay = c.bo.Delay(retries) / 2
		case errors.As(err, &we) && we.Code == wire.CodeUnavailable:
			delay = time.Duration(we.RetryAfterMs) * time.Millisecond
			if delay <= 0 {
				delay = c.bo.Delay(retries + 1)
			}
		default:
			if last != nil && ctx.Err() != nil {
				err = errors.Join(err, last)
			}
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		last = err
		if !sleepCtx(ctx, delay) {
			return nil, fmt.Errorf("%s: %w", what, errors.Join(ctx.Err(), last))
		}
	}
}

// Edit replaces the text of the user's own message at seq of conv and
// returns the MESSAGE_KIND_EDITED event (target_seq = seq), which is also
// emitted as a MessageEvent like any message; other devices and members get
// it pushed. Like SendMessage it retries while ctx lasts after timeout, a
// lost connection and unavailable: safe, since a retry of an edit already
// applied is answered with the same event. Other failures are returned as
// *wire.Error: forbidden (not the sender), edit_window_closed, not_found
// (no such message, or deleted), invalid (an event or media message, text
// unchanged or not allowed), too_large, not_member.
func (c *Client) Edit(ctx context.Context, conv string, seq uint64, text string) (*parleyv1.Message, error) {
	f := &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Edit{Edit: &parleyv1.Edit{ConversationId: conv, Seq: seq, Text: text}}}
	return c.change(ctx, f, fmt.Sprintf("edit %s seq %d", conv, seq))
}

// Delete deletes the message at seq of conv (the user's own within the
// edit window, any message of a group the user owns or administers) and returns the
// MESSAGE_KIND_DELETED event, emitted as a MessageEvent too. Retries and
// errors as Edit; deleting a message already deleted returns the event
// that deleted it.
func (c *Client) Delete(ctx context.Context, conv string, seq uint64) (*parleyv1.Message, error) {
	f := &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Delete{Delete: &parleyv1.Delete{ConversationId: conv, Seq: seq}}}
	return c.change(ctx, f, fmt.Sprintf("delete %s seq %d", conv, seq))
}

// React adds the user's reaction emoji to the message at seq of conv and
// returns the MESSAGE_KIND_REACTION event (target_seq = seq, reactions =
// the message's counts after it), emitted as a MessageEvent too; other
// devices and members get it pushed. When the user already has that
// reaction (a retry, another device) nothing is sequenced: the returned
// message has seq 0, carries the current counts and is not emitted.
// Retries as Edit. Other failures are *wire.Error: too_many_reactions (the
// message has the most distinct emoji, or the user the most emoji on it),
// not_found (no such message, deleted), invalid (an event; emoji not
// allowed), too_large (emoji over 32 bytes), not_member.
func (c *Client) React(ctx context.Context, conv string, seq uint64, emoji string) (*parleyv1.Message, error) {
	return c.react(ctx, conv, seq, emoji, false)
}

// Unreact removes the user's reaction emoji from the message at seq of
// conv, as React adds it; removing a reaction the user does not have
// returns a message with seq 0 and sequences nothing.
func (c *Client) Unreact(ctx context.Context, conv string, seq uint64, emoji string) (*parleyv1.Message, error) {
	return c.react(ctx, conv, seq, emoji, true)
}

func (c *Client) react(ctx context.Context, conv string, seq uint64, emoji string, remove bool) (*parleyv1.Message, error) {
	f := &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_React{React: &parleyv1.React{ConversationId: conv, Seq: seq, Emoji: emoji, Remove: remove}}}
	what := "react"
	if remove {
		what = "unreact"
	}
	return c.change(ctx, f, fmt.Sprintf("%s %q to %s seq %d", what, emoji, conv, seq))
}

// SetRole gives user, a member of group conv, the role "admin" or
// "member" and returns the ROLE_CHANGED event (members: [user], text: the
// role), emitted as a MessageEvent too; the other members get it pushed.
// Only the group's owner may. When the member has that role already (a
// retry) nothing is sequenced: the returned message has seq 0 and is not
// emitted. Retries as Edit. Other failures are *wire.Error: forbidden (not
// the owner), not_found (no such group; user is not a member), invalid (a
// DM; a role other than admin or member; user is the owner), not_member.
func (c *Client) SetRole(ctx context.Context, conv, user, role string) (*parleyv1.Message, error) {
	f := &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_SetRole{SetRole: &parleyv1.SetRole{ConversationId: conv, UserId: user, Role: role}}}
	return c.change(ctx, f, fmt.Sprintf("make %s %s of %s", user, role, conv))
}

// Rename sets group conv's title and returns the RENAMED event (text: the
// title), emitted as a MessageEvent too. The owner and admins may. Renaming
// to the current title sequences nothing and returns seq 0 (not emitted).
// Retries as Edit. Other failures are *wire.Error: forbidden, not_found,
// invalid (a DM; an empty or malformed title), too_large (over 256 bytes),
// not_member.
func (c *Client) Rename(ctx context.Context, conv, title string) (*parleyv1.Message, error) {
	f := &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Rename{Rename: &parleyv1.Rename{ConversationId: conv, Title: title}}}
	return c.change(ctx, f, fmt.Sprintf("rename %s", conv))
}

// change sends an edit, delete, react, set_role or rename frame, retrying
// as SendMessage does. A reply with seq 0 (a request that changed nothing)
// is not emitted.
func (c *Client) change(ctx context.Context, f *parleyv1.ClientFrame, what string) (*parleyv1.Message, error) {
	rep, err := c.retrying(ctx, what, func() *parleyv1.ClientFrame { return proto.CloneOf(f) })
	if err != nil {
		return nil, err
	}
	ev := rep.GetMessage()
	if ev == nil {
		return nil, fmt.Errorf("%s: reply without the event", what)
	}
	c.onMessage(ev)
	return ev, nil
}

// ErrAccepted is what an *AcceptedError matches with errors.Is: the send
// is pending in the server's outbox, not failed.
var ErrAccepted = errors.New("send accepted, pending: its home region is unreachable; it is sequenced when the link heals")

// AcceptedError is SendMessage's outcome for a send answered send_accepted.
type AcceptedError struct {
	Accepted *parleyv1.SendAccepted
}

func (e *AcceptedError) Error() string {
	return fmt.Sprintf("send to %s (client_msg_id %s): %v (home region %s)",
		e.Accepted.GetConversationId(), e.Accepted.GetClientMsgId(), ErrAccepted, e.Accepted.GetHomeRegion())
}

// Is reports whether target is ErrAccepted.
func (e *AcceptedError) Is(target error) bool { return target == ErrAccepted }

// ownMessage emits a message this client sent, so the application sees its
// own messages in the log like everyone else's (and no gap is pulled for
// them when the gateway does not push them back to the sending session).
func (c *Client) ownMessage(s *parleyv1.Send, ok *parleyv1.SendOk) {
	conv := ok.GetConversationId()
	if conv == "" {
		conv = s.GetConversationId()
	}
	m := &parleyv1.Message{
		ConversationId: conv,
		Seq:            ok.GetSeq(),
		MessageId:      ok.GetMessageId(),
		SenderId:       c.UserID(),
		ClientMsgId:    s.GetClientMsgId(),
		CreatedAt:      ok.GetCreatedAt(),
		ReplyTo:        ok.GetReplyTo(),
		Mentions:       ok.GetMentions(),
	}
	switch ct := s.GetContent().(type) {
	case *parleyv1.Send_Text:
		m.Kind, m.Text = parleyv1.MessageKind_MESSAGE_KIND_TEXT, ct.Text
	case *parleyv1.Send_Media:
		m.Kind, m.Media = parleyv1.MessageKind_MESSAGE_KIND_MEDIA, ct.Media
	}
	c.onMessage(m)
}

// Ack moves the user's delivered pointer in conv up to seq. The client acks
// what it emits by itself unless Options.NoAutoAck is set.
func (c *Client) Ack(ctx context.Context, conv string, seq uint64) error {
	err := c.post(ctx, &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Ack{Ack: &parleyv1.Ack{ConversationId: conv, Seq: seq}}})
	if err == nil {
		c.mu.Lock()
		c.tr.acked(conv, seq)
		c.mu.Unlock()
	}
	return err
}

// Read moves the user's read pointer in conv up to seq; the server sends
// the receipts. It returns once the frame is written (waiting for a
// reconnect within ctx); a rejection arrives as an ErrorEvent.
func (c *Client) Read(ctx context.Context, conv string, seq uint64) error {
	return c.post(ctx, &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Read{Read: &parleyv1.Read{ConversationId: conv, Seq: seq}}})
}

// Typing tells conv's members that the user is typing (ephemeral).
func (c *Client) Typing(ctx context.Context, conv string) error {
	return c.post(ctx, &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Typing{Typing: &parleyv1.Typing{ConversationId: conv}}})
}

// SubscribePresence replaces the presence subscription of this connection
// with users (the gateway caps their number). The server answers with their
// current presence as PresenceEvents, then pushes changes. The client renews
// the subscription after each reconnect.
func (c *Client) SubscribePresence(ctx context.Context, users []string) error {
	users = append([]string(nil), users...)
	c.mu.Lock()
	c.presenceSub = users
	c.mu.Unlock()
	return c.post(ctx, &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_PresenceSub{PresenceSub: &parleyv1.PresenceSub{UserIds: users}}})
}

// Sync asks for what the device missed after cursors (each conversation's
// head, read pointer and first page after the cursor); with no cursors, the
// inbox heads of every conversation of the user. The result is returned as
// is; the client's own catch-up after reconnects does not need this call.
func (c *Client) Sync(ctx context.Context, cursors []*parleyv1.Cursor) (*parleyv1.SyncResult, error) {
	return c.sync(ctx, cursors, 0)
}

func (c *Client) sync(ctx context.Context, cursors []*parleyv1.Cursor, limit uint32) (*parleyv1.SyncResult, error) {
	rep, err := c.request(ctx, &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Sync{Sync: &parleyv1.Sync{Cursors: cursors, Limit: limit}}})
	if err != nil {
		return nil, err
	}
	res := rep.GetSyncResult()
	if res == nil {
		return nil, errors.New("sync: reply without sync_result")
	}
	return res, nil
}

// History returns a page of conv's log: with before > 0 the messages with
// seq < before, newest first; with after > 0 those with seq > after, oldest
// first; with neither the newest page, newest first. 0 means "not set" for
// both; to page forward from the very start use HistoryAfter(conv, 0, …).
// limit is 1..200 (0 means 50); a page of large messages may hold fewer,
// with has_more. Errors: not_member, not_found, invalid as *wire.Error.
func (c *Client) History(ctx context.Context, conv string, before, after uint64, limit uint32) (*parleyv1.HistoryResult, error) {
	return c.history(ctx, &parleyv1.History{ConversationId: conv, Before: optSeq(before), After: optSeq(after), Limit: limit})
}

// HistoryAfter returns the messages of conv with seq > after, oldest first,
// after = 0 included: the page from the very start of the log. Otherwise as
// History.
func (c *Client) HistoryAfter(ctx context.Context, conv string, after uint64, limit uint32) (*parleyv1.HistoryResult, error) {
	return c.history(ctx, &parleyv1.History{ConversationId: conv, After: &after, Limit: limit})
}

// optSeq maps History's "0 means not set" to the optional field.
func optSeq(v uint64) *uint64 {
	if v == 0 {
		return nil
	}
	return &v
}

func (c *Client) history(ctx context.Context, h *parleyv1.History) (*parleyv1.HistoryResult, error) {
	rep, err := c.request(ctx, &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_History{History: h}})
	if err != nil {
		return nil, err
	}
	res := rep.GetHistoryResult()
	if res == nil {
		return nil, errors.New("history: reply without history_result")
	}
	return res, nil
}

// pull returns the visible messages of conv after seq after, oldest first.
// A pull from the very start goes through Sync with a cursor at 0 rather
// than HistoryAfter(0): servers before History.after became optional read
// after = 0 as "not set" (the newest page, newest first), and Sync means
// the same on every server.
// It also returns the seq the user joined at (0 when the server does not say).
func (c *Client) pull(ctx context.Context, conv string, after uint64, limit uint32) ([]*parleyv1.Message, bool, uint64, error) {
	if after > 0 {
		res, err := c.History(ctx, conv, 0, after, limit)
		if err != nil {
			return nil, false, 0, err
		}
		return res.GetMessages(), res.GetHasMore(), res.GetJoinedSeq(), nil
	}
	res, err := c.sync(ctx, []*parleyv1.Cursor{{ConversationId: conv}}, limit)
	if err != nil {
		return nil, false, 0, err
	}
	for _, st := range res.GetConversations() {
		if st.GetConversationId() == conv {
			if st.GetJoinedSeq() == 0 && st.GetHeadSeq() == 0 && len(st.GetMessages()) == 0 {
				break // a former member: nothing to see
			}
			return st.GetMessages(), st.GetHasMore(), st.GetJoinedSeq(), nil
		}
	}
	return nil, false, 0, wire.Errorf(wire.CodeNotMember, "%s is not in the user's inbox", conv)
}

// Ping round-trips a ping frame.
func (c *Client) Ping(ctx context.Context) error {
	rep, err := c.request(ctx, &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Ping{Ping: &parleyv1.Ping{}}})
	if err != nil {
		return err
	}
	if rep.GetPong() == nil {
		return errors.New("ping: reply without pong")
	}
	return nil
}
