package wire

import (
	"fmt"
	"unicode/utf8"
)

// CheckJSONText reports why b cannot be JSON text Parley accepts, or nil:
// it must be valid UTF-8 (RFC 8259 §8.1) and hold no \u escape of a lone
// UTF-16 surrogate (§8.2 leaves their meaning undefined). Go's decoders turn
// both into U+FFFD, silently, or fail with an unhelpful message; REST bodies
// and WebSocket JSON frames are checked with this first, so both entry
// points refuse the same bytes with an error that names the problem, e.g.
// "has a lone UTF-16 surrogate escape at byte 12" (issue 14).
func CheckJSONText(b []byte) error {
	if !utf8.Valid(b) {
		return fmt.Errorf("is not valid UTF-8")
	}
	if at := loneSurrogate(b); at >= 0 {
		return fmt.Errorf("has a lone UTF-16 surrogate escape at byte %d", at)
	}
	return nil
}

// loneSurrogate returns the offset of the first \uD800-\uDFFF escape in a
// JSON text that is not a high surrogate followed at once by an escaped low
// one, or -1. An escaped backslash (\\u...) is not an escape.
func loneSurrogate(b []byte) int {
	hex4 := func(i int) (rune, bool) {
		if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
			return 0, false
		}
		var r rune
		for _, c := range b[i+2 : i+6] {
			switch {
			case c >= '0' && c <= '9':
				r = r<<4 | rune(c-'0')
			case c >= 'a' && c <= 'f':
				r = r<<4 | rune(c-'a'+10)
			case c >= 'A' && c <= 'F':
				r = r<<4 | rune(c-'A'+10)
			default:
				return 0, false
			}
		}
		return r, true
	}
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			continue
		}
		r, ok := hex4(i)
		if !ok {
			i++ // another escape (\\, \", \n...): skip its second byte
			continue
		}
		switch {
		case r >= 0xD800 && r <= 0xDBFF:
			if lo, ok := hex4(i + 6); ok && lo >= 0xDC00 && lo <= 0xDFFF {
				i += 11
				continue
			}
			return i
		case r >= 0xDC00 && r <= 0xDFFF:
			return i
		}
		i += 5
	}
	return -1
}
