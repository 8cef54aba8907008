package cli

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// TextNewline is what a newline inside message text prints as: a
// continuation line, indented and marked, so that text can never begin a
// line that looks like a new "[conv] user: ..." message.
const TextNewline = "\n    │ "

// Sanitize returns s, a string from the network (an id, a title, a URL, an
// error message), made safe to print on a terminal as part of one line.
// Everything a terminal acts on instead of showing becomes a visible escape:
// C0 controls and DEL as \n, \r, \t or \xNN (ESC is \x1b), so no colour,
// cursor movement, line erase or OSC title change gets through; C1 controls
// (U+0080..U+009F) and bidirectional controls (U+061C, U+200E, U+200F,
// U+202A..U+202E, U+2066..U+2069) and line/paragraph separators as <U+XXXX>;
// bytes that are not UTF-8 as \xNN, since some terminals read a lone 0x9b
// byte as CSI. Other text, including non-ASCII letters and emoji, is kept.
func Sanitize(s string) string { return sanitize(s, false) }

// SanitizeText is Sanitize for message text, where a newline (or CRLF)
// prints as TextNewline, a visibly indented continuation line.
func SanitizeText(s string) string { return sanitize(s, true) }

func sanitize(s string, text bool) string {
	if isPlain(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case text && r == '\n':
			b.WriteString(TextNewline)
		case text && r == '\r' && strings.HasPrefix(s[i+1:], "\n"):
			b.WriteString(TextNewline)
			size = 2
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, "<U+%04X>", r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// isPlain reports whether s is printable ASCII only, the common case that
// needs no copy.
func isPlain(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// unsafeRune reports whether r, a non-ASCII rune, is one a terminal acts on
// or that changes how the rest of the line reads, or that shows nothing:
// C1 controls, bidi controls, line and paragraph separators, and the
// invisible zero-width space, word joiner, BOM and soft hyphen (the
// zero-width joiner stays: emoji sequences use it).
func unsafeRune(r rune) bool {
	switch {
	case r >= 0x80 && r <= 0x9f: // C1 controls (0x9b is CSI, 0x9d is OSC)
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f: // ALM, LRM, RLM
		return true
	case r >= 0x202a && r <= 0x202e: // LRE, RLE, PDF, LRO, RLO
		return true
	case r >= 0x2066 && r <= 0x2069: // LRI, RLI, FSI, PDI
		return true
	case r == 0x2028, r == 0x2029: // line and paragraph separators
		return true
	case r == 0x200b, r == 0x2060, r == 0xfeff, r == 0x00ad: // ZWSP, WJ, BOM, soft hyphen: invisible
		return true
	}
	return false
}

// quote prints a string from the network in double quotes, sanitised.
func quote(s string) string { return `"` + Sanitize(s) + `"` }

// joinClean sanitises each of ids and joins them with ", ".
func joinClean(ids []string) string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = Sanitize(id)
	}
	return strings.Join(out, ", ")
}
