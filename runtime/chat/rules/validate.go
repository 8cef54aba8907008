package rules

import (
	"strings"
	"unicode/utf8"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

// Limits of a send's media, bytes.
const (
	// MaxMediaURLBytes bounds Media.url (too_large past it).
	MaxMediaURLBytes = 2048
	// MaxMimeBytes bounds Media.mime (invalid past it).
	MaxMimeBytes = 255
)

// errInvalid is the invalid *wire.Error with message msg.
func errInvalid(msg string) *wire.Error { return &wire.Error{Code: wire.CodeInvalid, Message: msg} }

// ValidateSend checks a send's fields other than its conversation: the one
// rule every entry point applies (the gateway and REST before a send costs
// anything, the sequencer as the authority; issue 15). It returns nil or a
// *wire.Error: client_msg_id 1..wire.MaxClientMsgIDBytes bytes (invalid);
// text as ValidateText has it; or media with a url of 1..MaxMediaURLBytes
// bytes (too_large past it), a mime of 1..MaxMimeBytes bytes, a positive
// size, both strings valid UTF-8 (invalid); exactly one of text and media.
func ValidateSend(send *parleyv1.Send, maxTextBytes int) error {
	if n := len(send.GetClientMsgId()); n == 0 || n > wire.MaxClientMsgIDBytes {
		return wire.Errorf(wire.CodeInvalid, "client_msg_id must be 1..%d bytes, got %d (retries reuse it)", wire.MaxClientMsgIDBytes, n)
	}
	switch ct := send.Content.(type) {
	case *parleyv1.Send_Text:
		return ValidateText(ct.Text, maxTextBytes)
	case *parleyv1.Send_Media:
		m := ct.Media
		switch {
		case m.GetUrl() == "":
			return errInvalid("media.url is required")
		case len(m.GetUrl()) > MaxMediaURLBytes:
			return wire.Errorf(wire.CodeTooLarge, "media.url is %d bytes, over the limit of %d", len(m.GetUrl()), MaxMediaURLBytes)
		case m.GetMime() == "" || len(m.GetMime()) > MaxMimeBytes:
			return wire.Errorf(wire.CodeInvalid, "media.mime must be 1..%d bytes", MaxMimeBytes)
		case m.GetSize() <= 0:
			return errInvalid("media.size must be positive")
		case !utf8.ValidString(m.GetUrl()) || !utf8.ValidString(m.GetMime()):
			return errInvalid("media fields are not valid UTF-8")
		}
		return nil
	}
	return errInvalid("send has no content: set text or media")
}

// ValidateText checks the text of a send or of an edit, the same rule for
// both: non-empty and not only white space (invalid), at most maxTextBytes
// bytes (too_large), and allowed by CheckText (invalid).
func ValidateText(text string, maxTextBytes int) error {
	switch {
	case text == "":
		return errInvalid("text is empty")
	case strings.TrimSpace(text) == "":
		return errInvalid("text is only white space")
	case len(text) > maxTextBytes:
		return wire.Errorf(wire.CodeTooLarge, "text is %d bytes, over the limit of %d", len(text), maxTextBytes)
	}
	return CheckText(text)
}

// ValidateEdit checks an edit before it reaches the sequencer: seq at least
// 1 and text as ValidateText has it (the same rule as a send's text). It
// returns nil or a *wire.Error.
func ValidateEdit(e *parleyv1.Edit, maxTextBytes int) error {
	if e.GetSeq() == 0 {
		return errInvalid("seq must be at least 1: the message to edit")
	}
	return ValidateText(e.GetText(), maxTextBytes)
}

// ValidateDelete checks a delete before it reaches the sequencer: seq at
// least 1. It returns nil or a *wire.Error.
func ValidateDelete(d *parleyv1.Delete) error {
	if d.GetSeq() == 0 {
		return errInvalid("seq must be at least 1: the message to delete")
	}
	return nil
}

// ValidateReact checks a reaction before it reaches the sequencer: seq at
// least 1 and the emoji as CheckEmoji has it. It returns nil or a
// *wire.Error (invalid, too_large).
func ValidateReact(r *parleyv1.React) error {
	if r.GetSeq() == 0 {
		return errInvalid("seq must be at least 1: the message to react to")
	}
	return CheckEmoji(r.GetEmoji())
}

// ValidateSetRole checks a role change before it reaches the sequencer: a
// valid user id and the role "admin" or "member" (ownership is not given,
// it passes when the owner leaves). It returns nil or an invalid
// *wire.Error.
func ValidateSetRole(r *parleyv1.SetRole) error {
	if !ValidUserID(r.GetUserId()) {
		return errInvalid("user_id is missing or not a valid user id: the member whose role to set")
	}
	switch r.GetRole() {
	case store.RoleAdmin, store.RoleMember:
		return nil
	case store.RoleOwner:
		return errInvalid(`role "owner" cannot be given: ownership passes to the longest-standing admin, else member, when the owner leaves`)
	}
	return errInvalid(`role must be "admin" or "member"`)
}

// ValidateRename checks a rename before it reaches the sequencer: a title
// CheckTitle allows that is not empty or white space only. It returns nil
// or a *wire.Error (invalid, too_large).
func ValidateRename(r *parleyv1.Rename) error {
	if strings.TrimSpace(r.GetTitle()) == "" {
		return errInvalid("title is empty: a group is renamed to a title of 1 to 256 bytes")
	}
	return CheckTitle(r.GetTitle())
}

// ValidateMute checks a mute request that does not depend on the store:
// a well-formed conversation id and, for a mute with an end, an end after
// nowMs (invalid otherwise).
func ValidateMute(m *parleyv1.Mute, nowMs int64) error {
	if err := CheckConversationID(m.GetConversationId()); err != nil {
		return err
	}
	switch {
	case m.GetRemove() && m.GetUntil() != 0:
		return errInvalid("until is for a mute, not an unmute")
	case !m.GetRemove() && m.GetUntil() != 0 && m.GetUntil() <= nowMs:
		return errInvalid("until must be a time in the future (Unix milliseconds), or 0 to mute until unmuted")
	case m.GetUntil() > MaxMuteUntilMs:
		return errInvalid("until is past the year 9999; use 0 to mute until unmuted")
	}
	return nil
}

// MaxMuteUntilMs is the latest end of a mute: the last millisecond of the
// year 9999, so every client can show it as a date.
const MaxMuteUntilMs = 253402300799999

// ValidateBlock checks a block request by user: another valid user id
// (invalid for the caller itself or a malformed id).
func ValidateBlock(user string, b *parleyv1.Block) error {
	verb := "block"
	if b.GetRemove() {
		verb = "unblock"
	}
	switch other := b.GetUserId(); {
	case !ValidUserID(other):
		return errInvalid("user_id must be 1..64 bytes of A-Za-z0-9._@-")
	case other == user:
		return errInvalid("you cannot " + verb + " yourself")
	}
	return nil
}
