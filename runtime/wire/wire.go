// Package wire names the constants of Parley's client protocol in one place
// (subprotocols, error codes, close codes, limits) and encodes and decodes
// frames in either subprotocol.
package wire

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// Subprotocols offered at /v1/ws (Sec-WebSocket-Protocol, RFC 6455 §11.3.4).
const (
	// SubprotocolProto carries Protobuf-encoded frames in binary messages.
	SubprotocolProto = "parley.v1.proto"
	// SubprotocolJSON carries protojson-encoded frames in text messages.
	SubprotocolJSON = "parley.v1.json"
)

// Error codes carried in Error.code on the wire and in REST error bodies.
// They are stable: clients switch on them.
const (
	// CodeUnauthenticated: no token, a forged token or a wrong algorithm. Do not retry with the same token.
	CodeUnauthenticated = "unauthenticated"
	// CodeTokenExpired: the token's exp has passed. Get a fresh token, then reconnect.
	CodeTokenExpired = "token_expired"
	// CodeNotMember: the caller is not a member of the conversation.
	CodeNotMember = "not_member"
	// CodeNotFound: the conversation (or other named object) does not exist.
	CodeNotFound = "not_found"
	// CodeTooLarge: a frame, message text or request body is over its limit.
	CodeTooLarge = "too_large"
	// CodeRateLimited: over the per-user send rate; retry after retry_after_ms.
	CodeRateLimited = "rate_limited"
	// CodeInvalid: a malformed frame or a missing or bad field.
	CodeInvalid = "invalid"
	// CodeGroupFull: the group already has its maximum number of members.
	CodeGroupFull = "group_full"
	// CodeUnavailable: the request was not enqueued; safe to retry after retry_after_ms.
	CodeUnavailable = "unavailable"
	// CodeTimeout: the outcome is unknown; retry with the same client_msg_id.
	CodeTimeout = "timeout"
	// CodeForbidden: the caller may not do this (for example remove another member without being the group's owner).
	CodeForbidden = "forbidden"
	// CodeInternal: a server fault; the request may be retried.
	CodeInternal = "internal"
	// CodeTooManySessions: the user already holds the most WebSocket
	// sessions allowed (--max-sessions-per-user); the newest connection is
	// refused, the older ones are kept. Close one, then reconnect.
	CodeTooManySessions = "too_many_sessions"
	// CodeMethodNotAllowed: a REST path that exists, asked with a method it
	// does not take (HTTP 405 with an Allow header).
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeEditWindowClosed: the message is older than the server's edit
	// window (--edit-window, default 48h), so its sender may no longer
	// edit or delete it (a group's owner may still delete it). HTTP 403.
	CodeEditWindowClosed = "edit_window_closed"
	// CodeTooManyReactions: a reaction over a message's limits: it already
	// carries the most distinct emoji (20), or the caller already reacted
	// with the most emoji one user may put on it (3). HTTP 409. Remove a
	// reaction first; retrying as it is fails again.
	CodeTooManyReactions = "too_many_reactions"
	// CodeBlocked: the other user of the DM blocks the caller, who cannot
	// start the DM or send, edit or react in it (issue 13, mute and block).
	// Terminal: retrying does not help until the block is lifted.
	CodeBlocked = "blocked"
	// CodeTooManyBlocks: the caller already blocks the most users one may
	// (chat.MaxBlocksPerUser, 1,000). HTTP 409. Unblock someone first.
	CodeTooManyBlocks = "too_many_blocks"
)

// WebSocket close codes (RFC 6455 §7.4.2: 4000–4999 are for applications).
// 4000–4499 mean "reconnect" (after a jittered delay); 4500–4999 mean "do not
// reconnect until something changes" (a new token, a fixed client).
const (
	// CloseDrain: the gateway is draining for an upgrade or scale-down.
	CloseDrain = 4000
	// CloseSlowConsumer: the client did not read fast enough; reconnect and sync.
	CloseSlowConsumer = 4001
	// CloseHeartbeatTimeout: nothing was heard from the client within the timeout.
	CloseHeartbeatTimeout = 4002
	// CloseOverload: the gateway sheds load.
	CloseOverload = 4003

	// CloseUnauthenticated: the token is invalid. Terminal.
	CloseUnauthenticated = 4500
	// CloseTokenExpired: the token expired on an open connection. Reconnect only with a fresh token.
	CloseTokenExpired = 4501
	// ClosePolicyViolation: repeated invalid frames or abuse. Terminal.
	ClosePolicyViolation = 4502

	// CloseMessageTooBig (RFC 6455 §7.4.1): a message over MaxFrameBytes,
	// after a too_large error frame with id 0. The client may reconnect;
	// sending the same message again gets the same answer.
	CloseMessageTooBig = 1009
)

// ShouldReconnect reports whether a client should reconnect after a close code.
func ShouldReconnect(code int) bool {
	return code < 4500 || code > 4999
}

// Limits applied where data enters.
const (
	// MaxFrameBytes is the largest client frame a gateway reads, in bytes.
	MaxFrameBytes = 64 << 10
	// DefaultMaxMessageBytes is the default largest message text, in bytes (UTF-8).
	DefaultMaxMessageBytes = 4 << 10
	// MaxClientMsgIDBytes bounds client_msg_id.
	MaxClientMsgIDBytes = 64
	// DefaultPageSize and MaxPageSize bound history and sync pages, in messages.
	DefaultPageSize = 50
	MaxPageSize     = 200
)

// Codec encodes server frames and decodes client frames in one subprotocol.
type Codec struct {
	// Binary is true for SubprotocolProto (binary WebSocket messages).
	Binary bool
}

// CodecFor returns the codec of a negotiated subprotocol; ok is false for an unknown one.
func CodecFor(subprotocol string) (Codec, bool) {
	switch subprotocol {
	case SubprotocolProto:
		return Codec{Binary: true}, true
	case SubprotocolJSON:
		return Codec{Binary: false}, true
	}
	return Codec{}, false
}

var (
	jsonMarshal = protojson.MarshalOptions{UseProtoNames: true}
	// A server refuses client frames with unknown fields (a typo must not
	// pass silently), while a client ignores server fields it does not know
	// yet, so older SDKs keep working against newer servers.
	jsonStrict  = protojson.UnmarshalOptions{DiscardUnknown: false}
	jsonLenient = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// ErrDecode wraps every decoding failure.
var ErrDecode = errors.New("undecodable frame")

// EncodeServer encodes f. The result is owned by the caller.
func (c Codec) EncodeServer(f *parleyv1.ServerFrame) ([]byte, error) {
	if c.Binary {
		return proto.Marshal(f)
	}
	return jsonMarshal.Marshal(f)
}

// EncodeClient encodes f (used by the SDK).
func (c Codec) EncodeClient(f *parleyv1.ClientFrame) ([]byte, error) {
	if c.Binary {
		return proto.Marshal(f)
	}
	return jsonMarshal.Marshal(f)
}

// DecodeClient decodes a client frame. It returns an error wrapping ErrDecode
// when the bytes are not a frame, and an error naming the problem when the
// frame carries no known body.
func (c Codec) DecodeClient(b []byte) (*parleyv1.ClientFrame, error) {
	if c.Binary {
		if f := new(parleyv1.ClientFrame); decodeEnvelope(b, f, &f.Id, clientBodies[:]) {
			return f, nil
		}
	}
	f := &parleyv1.ClientFrame{}
	if err := c.unmarshal(b, f, jsonStrict); err != nil {
		return nil, err
	}
	if f.Body == nil {
		return f, fmt.Errorf("%w: frame has no known body (send, ack, read, sync, history, typing, presence_sub, ping, edit, delete, react, set_role, rename, mute, block)", ErrDecode)
	}
	return f, nil
}

// DecodeServer decodes a server frame (used by the SDK).
func (c Codec) DecodeServer(b []byte) (*parleyv1.ServerFrame, error) {
	if c.Binary {
		if f := new(parleyv1.ServerFrame); decodeEnvelope(b, f, &f.Id, serverBodies[:]) {
			return f, nil
		}
	}
	f := &parleyv1.ServerFrame{}
	if err := c.unmarshal(b, f, jsonLenient); err != nil {
		return nil, err
	}
	return f, nil
}

func (c Codec) unmarshal(b []byte, m proto.Message, jsonOpts protojson.UnmarshalOptions) error {
	var err error
	if c.Binary {
		err = proto.Unmarshal(b, m)
	} else if err = CheckJSONText(b); err != nil {
		err = fmt.Errorf("text frame %w", err)
	} else {
		err = jsonOpts.Unmarshal(b, m)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDecode, err)
	}
	return nil
}

// ErrorFrame builds a ServerFrame carrying an error reply to request id.
func ErrorFrame(id uint64, code, msg string, retryAfterMs uint32) *parleyv1.ServerFrame {
	return &parleyv1.ServerFrame{Id: id, Body: &parleyv1.ServerFrame_Error{Error: &parleyv1.Error{Code: code, Message: msg, RetryAfterMs: retryAfterMs}}}
}

// MaxIDBytes is the longest user or device id, in bytes.
const MaxIDBytes = 64

// ValidID reports whether s is a valid user or device id: 1..MaxIDBytes
// bytes of [A-Za-z0-9._@-]. ':' is excluded because DM conversation ids
// ("dm:<a>:<b>") are built from user ids. The one definition of the id
// grammar: auth (tokens), chat (records) and the clients use it.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !IDByte(s[i]) {
			return false
		}
	}
	return true
}

// IDByte reports whether c may appear in a user or device id (ValidID).
func IDByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	case c == '.', c == '_', c == '@', c == '-':
		return true
	}
	return false
}
