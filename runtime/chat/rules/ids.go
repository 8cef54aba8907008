package rules

import (
	"strings"

	"github.com/parleychat/parley/runtime/wire"
)

// Conversation id prefixes: a DM is "dm:<a>:<b>" (DMID), a group is
// GroupPrefix followed by its decimal snowflake, which the sequencer mints.
const (
	dmPrefix = "dm:"
	// GroupPrefix starts every group id ("g:" + 1..20 decimal digits).
	GroupPrefix = "g:"
)

// ValidUserID reports whether id is a valid user or device id
// (wire.ValidID).
func ValidUserID(id string) bool { return wire.ValidID(id) }

// DMID returns the id of the DM between users a and b: "dm:<lo>:<hi>" with
// lo < hi in byte order, so either side derives the same id.
func DMID(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return dmPrefix + a + ":" + b
}

// ParseDM splits a DM id into its two users (a < b). ok is false unless id
// is "dm:<a>:<b>" with two valid, distinct user ids in order: a DM with
// oneself is not a conversation Parley has (decision: refused as invalid).
func ParseDM(id string) (a, b string, ok bool) {
	rest, found := strings.CutPrefix(id, dmPrefix)
	if !found {
		return "", "", false
	}
	a, b, found = strings.Cut(rest, ":")
	if !found || !ValidUserID(a) || !ValidUserID(b) || !(a < b) {
		return "", "", false
	}
	return a, b, true
}

// IsDM reports whether id has the DM prefix (it may still be malformed).
func IsDM(id string) bool { return strings.HasPrefix(id, dmPrefix) }

// IsGroup reports whether id has the group prefix "g:".
func IsGroup(id string) bool { return strings.HasPrefix(id, GroupPrefix) }

// maxGroupIDDigits bounds the decimal snowflake of a group id.
const maxGroupIDDigits = 20

// CheckConversationID returns an invalid *wire.Error unless id is a
// well-formed DM id (see ParseDM) or group id ("g:" + decimal digits).
func CheckConversationID(id string) error {
	if _, _, ok := ParseDM(id); ok {
		return nil
	}
	if digits, ok := strings.CutPrefix(id, GroupPrefix); ok && len(digits) > 0 && len(digits) <= maxGroupIDDigits {
		valid := true
		for i := 0; i < len(digits); i++ {
			if digits[i] < '0' || digits[i] > '9' {
				valid = false
				break
			}
		}
		if valid {
			return nil
		}
	}
	if IsDM(id) {
		return errInvalid("malformed dm id: want dm:<a>:<b> with two distinct valid user ids, a < b")
	}
	return errInvalid("malformed conversation id: want dm:<a>:<b> or g:<id>")
}
