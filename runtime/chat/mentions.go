package chat

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/parleychat/parley/runtime/wire"
)

// MaxMentions bounds the members one message mentions (Message.mentions).
const MaxMentions = 50

// Mentions returns the members text mentions, once each, in order of first
// mention, at most MaxMentions: every "@" at the start of text or after white
// space followed by a user id (wire.ValidID) for which isMember holds. A
// trailing '.', '-' or '_' (the end of a sentence, "@bob.") is dropped when
// the id with it is not a member. Anything else after "@" — a non-member,
// an e-mail address ("a@b.com": no space before the "@") — is plain text,
// not an error: a person typing "@home" or the name of someone not in the
// conversation is writing, not addressing (issue 13 lists mentions of
// non-members under bad input; we chose what every chat app does instead,
// docs/design.md "Replies and mentions").
func Mentions(text string, isMember func(user string) bool) []string {
	var out []string
	prevSpace := true
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		if r == '@' && prevSpace {
			j := i + 1
			for j < len(text) && j-i-1 < wire.MaxIDBytes && wire.IDByte(text[j]) {
				j++
			}
			id := text[i+1 : j]
			for id != "" && !isMember(id) && strings.ContainsRune(".-_", rune(id[len(id)-1])) {
				id = id[:len(id)-1]
			}
			if id != "" && wire.ValidID(id) && isMember(id) && !slices.Contains(out, id) {
				out = append(out, id)
				if len(out) == MaxMentions {
					return out
				}
			}
			prevSpace = false
			i = j
			continue
		}
		prevSpace = unicode.IsSpace(r)
		i += size
	}
	return out
}
