package client

import (
	"time"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// Event is something that happened on the client: one of MessageEvent,
// ReceiptEvent, PresenceEvent, TypingEvent, ErrorEvent, ReconnectingEvent,
// ReconnectedEvent and ClosedEvent. Use a type switch.
type Event interface{ event() }

// MessageEvent carries one message of a conversation log. The application
// sees each (conversation_id, seq) exactly once and in seq order per
// conversation, whether the message was pushed, pulled to fill a gap, pulled
// after a reconnect, or sent by this client itself (then it is emitted when
// send_ok arrives, with sender_id the client's user).
type MessageEvent struct {
	Message *parleyv1.Message
	// Pulled is true when the message came from a sync or history pull
	// (catch-up) rather than a live push or this client's own send.
	Pulled bool
}

// ReceiptEvent carries a delivered or read pointer of a member (the peer in
// a DM, the user's own other devices, or READ_BY_ALL in a group).
type ReceiptEvent struct{ Receipt *parleyv1.Receipt }

// PresenceEvent carries a presence change of a subscribed user or DM peer,
// or the current presence in answer to SubscribePresence.
type PresenceEvent struct{ Presence *parleyv1.Presence }

// TypingEvent says that a user is typing in a conversation.
type TypingEvent struct{ Typing *parleyv1.Typing }

// ErrorEvent carries an error frame that answered no pending request, such
// as a rejected Ack or Typing, or a warning before the server closes.
type ErrorEvent struct{ Err *wire.Error }

// ReconnectingEvent is emitted before each reconnect attempt.
type ReconnectingEvent struct {
	// Attempt counts attempts since the last connection that stayed up, from 1.
	Attempt int
	// Delay is the wait before this attempt.
	Delay time.Duration
	// Err is why the previous connection or attempt ended.
	Err error
}

// ReconnectedEvent is emitted when a new connection has been welcomed; the
// messages missed meanwhile follow as MessageEvents (Pulled).
type ReconnectedEvent struct{ Welcome *parleyv1.Welcome }

// ClosedEvent is the last event: the client has stopped and will not
// reconnect.
type ClosedEvent struct {
	// Code and Reason are the server's close code and reason when it ended
	// the connection for good (wire.CloseUnauthenticated,
	// wire.CloseTokenExpired, wire.ClosePolicyViolation, ...); 0 otherwise.
	Code   int
	Reason string
	// Err is the cause: ErrClosed after Close, a *wire.Error
	// (unauthenticated, token_expired) when the server refused the token, a
	// *CloseError for a terminal close code, or the connection error when
	// reconnection is off.
	Err error
}

func (MessageEvent) event()      {}
func (ReceiptEvent) event()      {}
func (PresenceEvent) event()     {}
func (TypingEvent) event()       {}
func (ErrorEvent) event()        {}
func (ReconnectingEvent) event() {}
func (ReconnectedEvent) event()  {}
func (ClosedEvent) event()       {}

// droppable reports whether ev may be dropped when the queue is full:
// ephemeral or superseded-by-the-next events. Messages are never dropped
// (they are left for a later pull instead), nor are Reconnected and Closed.
func droppable(ev Event) bool {
	switch ev.(type) {
	case ReceiptEvent, PresenceEvent, TypingEvent, ErrorEvent, ReconnectingEvent:
		return true
	}
	return false
}
