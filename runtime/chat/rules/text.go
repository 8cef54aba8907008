package rules

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/parleychat/parley/runtime/wire"
)

// What user text may contain. Clients render text in terminals (the CLI),
// in HTML, and next to other people's names, so characters that steer the
// display rather than show something are refused at the server, where one
// check covers every client. The rules differ by field:
//
// Message text (CheckText) is free-form: line breaks and tabs are content,
// so \n, \r and \t are allowed. Refused: the other C0 controls (U+0000 to
// U+001F: NUL, ESC and the terminal escapes it starts, backspace, bell…),
// DEL (U+007F) and the C1 controls (U+0080 to U+009F, where U+009B is an
// 8-bit CSI to some terminals). Also refused: the bidi embeddings and
// overrides (U+202A to U+202E), which make text display as something else
// ("abc\u202Egnp.exe" shows as "abcexe.png", issue 14); Unicode has
// recommended the isolates in their place since 6.3 (UAX #9), so people
// writing Arabic or Hebrew mixed with Latin keep the isolates (U+2066 to
// U+2069) and the marks (U+200E, U+200F, U+061C), which cannot reverse the
// characters of what they enclose.
//
// A group title (CheckTitle) is one line shown in conversation lists beside
// other titles, so it also refuses \n, \r and \t, the line and paragraph
// separators (U+2028, U+2029), and the bidi embeddings, overrides and
// isolates (U+202A to U+202E, U+2066 to U+2069), which can make a title
// render as something else ("Trojan Source" style spoofing). The invisible
// marks U+200E and U+200F stay allowed: they fix the direction of a title
// without reordering what follows it.

// Limits of user text, bytes of UTF-8 (too_large past them). A message's
// text is bounded by a setting instead (ValidateText's maxTextBytes,
// wire.DefaultMaxMessageBytes by default).
const (
	// MaxTitleBytes bounds a group title.
	MaxTitleBytes = 256
	// MaxEmojiBytes bounds one reaction's emoji; CheckEmoji has the rest
	// of the rule.
	MaxEmojiBytes = 64
)

// CheckText reports why text cannot be a message's text (an invalid
// *wire.Error naming the character and its byte offset), or nil. It checks
// characters only; emptiness and the length limit are the caller's.
func CheckText(text string) error {
	for i, r := range text {
		switch {
		case r == utf8.RuneError && isInvalidAt(text, i):
			return errInvalid("text is not valid UTF-8")
		case r == '\n' || r == '\r' || r == '\t':
		case isControl(r):
			return errInvalid(fmt.Sprintf("text contains control character %U at byte %d; only \\n, \\r and \\t are allowed", r, i))
		case r >= '\u202A' && r <= '\u202E':
			return errInvalid(fmt.Sprintf("text contains bidirectional embedding or override %U at byte %d; use the isolates U+2066 to U+2069", r, i))
		}
	}
	return nil
}

// CheckTitle reports why title cannot be a group title (a *wire.Error
// naming the problem: too_large over MaxTitleBytes, as a text over its
// limit; invalid otherwise), or nil. The empty title is allowed (at
// creation; ValidateRename refuses it).
func CheckTitle(title string) error {
	if len(title) > MaxTitleBytes {
		return wire.Errorf(wire.CodeTooLarge, "title is %d bytes, over the limit of %d", len(title), MaxTitleBytes)
	}
	for i, r := range title {
		switch {
		case r == utf8.RuneError && isInvalidAt(title, i):
			return errInvalid("title is not valid UTF-8")
		case isControl(r):
			return errInvalid(fmt.Sprintf("title contains control character %U at byte %d", r, i))
		case r == '\u2028' || r == '\u2029':
			return errInvalid(fmt.Sprintf("title contains line separator %U at byte %d; a title is one line", r, i))
		case r >= '\u202A' && r <= '\u202E' || r >= '\u2066' && r <= '\u2069':
			return errInvalid(fmt.Sprintf("title contains bidirectional control %U at byte %d", r, i))
		case unicode.Is(unicode.Cf, r) && r != '\u200C' && r != '\u200D' && !(r >= 0xE0020 && r <= 0xE007F) && r != '\u200E' && r != '\u200F':
			// Zero-width spaces, the BOM, soft hyphens, word joiners:
			// invisible text in a name (the joiners of emoji and scripts,
			// the tags of flags and the LRM/RLM marks stay allowed).
			return errInvalid(fmt.Sprintf("title contains invisible format character %U at byte %d", r, i))
		}
	}
	if title != "" && !hasVisible(title) {
		return errInvalid("title shows nothing: it needs a letter, digit, symbol or punctuation mark")
	}
	return nil
}

// hasVisible reports whether s has a rune that shows: a letter, digit,
// symbol or punctuation, other than the blank-looking Hangul fillers and
// the blank braille pattern.
func hasVisible(s string) bool {
	for _, r := range s {
		switch r {
		case '\u115F', '\u1160', '\u3164', '\uFFA0', '\u2800':
			continue
		}
		if unicode.In(r, unicode.L, unicode.N, unicode.S, unicode.P) {
			return true
		}
	}
	return false
}

// CheckEmoji reports why emoji cannot be a reaction (a *wire.Error), or
// nil. A reaction is one short token shown in a chip under a message, so
// the rule is stricter than a title's: 1..MaxEmojiBytes bytes (too_large
// past it) of valid UTF-8 with no white space (it also covers the line and
// paragraph separators), no control character and no format character
// (Unicode category Cf: the bidi marks, embeddings, overrides and
// isolates, zero-width spaces, the BOM), which are invalid. Two format
// characters are part of emoji and allowed: the zero-width joiner U+200D
// (👩‍💻) and the tag characters U+E0020 to U+E007F (subdivision flags);
// variation selectors and skin-tone modifiers are not format characters.
// Decision: the server does not check emoji against a list of emoji
// (Unicode adds some every year); any short visible token passes, "+1"
// included.
func CheckEmoji(emoji string) error {
	switch {
	case emoji == "":
		return errInvalid("emoji is empty")
	case len(emoji) > MaxEmojiBytes:
		return wire.Errorf(wire.CodeTooLarge, "emoji is %d bytes, over the limit of %d", len(emoji), MaxEmojiBytes)
	}
	prev := rune(-1) // the rune before, -1 at the start
	for i, r := range emoji {
		switch {
		case r == utf8.RuneError && isInvalidAt(emoji, i):
			return errInvalid("emoji is not valid UTF-8")
		case joinsOrModifies(r) && (prev < 0 || prev == '\u200D'):
			// A joiner, a variation selector, a tag or a combining mark
			// needs a visible character before it: alone it shows nothing.
			return errInvalid(fmt.Sprintf("emoji has %U at byte %d without a character before it to join or modify", r, i))
		case r == '\u200D' || r >= 0xE0020 && r <= 0xE007F:
		case unicode.IsSpace(r):
			return errInvalid(fmt.Sprintf("emoji contains white space %U at byte %d", r, i))
		case isControl(r) || unicode.Is(unicode.Cf, r):
			return errInvalid(fmt.Sprintf("emoji contains control or format character %U at byte %d", r, i))
		}
		prev = r
	}
	if prev == '\u200D' {
		return errInvalid("emoji ends with a zero-width joiner: it joins nothing")
	}
	return nil
}

// joinsOrModifies reports the runes that only join or modify the character
// before them: the zero-width joiner, variation selectors, tag characters
// and combining marks.
func joinsOrModifies(r rune) bool {
	return r == '\u200D' || r >= 0xFE00 && r <= 0xFE0F || r >= 0xE0100 && r <= 0xE01EF ||
		r >= 0xE0020 && r <= 0xE007F || unicode.In(r, unicode.Mn, unicode.Me)
}

// isControl reports the C0 controls, DEL and the C1 controls.
func isControl(r rune) bool {
	return r < 0x20 || r >= 0x7F && r <= 0x9F
}

// isInvalidAt tells an invalid byte (decoded as RuneError, width 1) from an
// encoded U+FFFD, which is valid text.
func isInvalidAt(s string, i int) bool {
	_, n := utf8.DecodeRuneInString(s[i:])
	return n == 1
}
