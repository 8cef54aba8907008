package rules

import (
	"strings"
	"testing"

	"github.com/parleychat/parley/runtime/wire"
)

func TestCheckText(t *testing.T) {
	for _, ok := range []string{
		"hello", "two\nlines", "tab\there", "windows\r\nline", "\u00a0no-break space", "U+FFFD \ufffd is text",
		"\u2067עברית\u2069 isolates and \u200f marks are allowed", "emoji 🙂", "\u00a0\u00ff",
	} {
		if err := CheckText(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{
		"nul\x00", "\x01", "bell\a", "backspace\b", "vt\v", "ff\f", "esc\x1b[2J", "\x1f", "del\x7f",
		"c1 \u0080", "csi \u009b", "\u009f", "bad utf-8 \xff",
		"abc\u202egnp.exe", "\u202Dlro", "\u202Alre", "\u202Brle", "\u202Cpdf",
	} {
		err := CheckText(bad)
		if code(err) != wire.CodeInvalid {
			t.Errorf("%q: %v, want invalid", bad, err)
		}
	}
	if err := CheckText("ok\x00"); err == nil || !strings.Contains(err.Error(), "U+0000 at byte 2") {
		t.Errorf("the error names neither the character nor where: %v", err)
	}
}

func TestCheckTitle(t *testing.T) {
	for _, ok := range []string{
		"", "book club", "Ünïcödé 🙂", "\u200fעברית\u200e", strings.Repeat("t", MaxTitleBytes),
	} {
		if err := CheckTitle(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, tc := range []struct{ title, want string }{
		{"two\nlines", "control character U+000A"},
		{"tab\t", "control character U+0009"},
		{"cr\r", "control character U+000D"},
		{"nul\x00", "control character U+0000"},
		{"esc\x1b[31m", "control character U+001B"},
		{"del\x7f", "control character U+007F"},
		{"c1\u0085", "control character U+0085"},
		{"line\u2028sep", "line separator U+2028"},
		{"para\u2029sep", "line separator U+2029"},
		{"evil\u202Egpj.exe", "bidirectional control U+202E"},
		{"\u202Dlro", "bidirectional control U+202D"},
		{"\u202Alre", "bidirectional control U+202A"},
		{"\u2066isolate\u2069", "bidirectional control U+2066"},
		{"pdi\u2069", "bidirectional control U+2069"},
		{"bad \xff", "UTF-8"},
		{"\u200b", "invisible format character U+200B"},
		{"\ufeff", "invisible format character U+FEFF"},
		{"a\u00adb", "invisible format character U+00AD"},
		{"\u3164", "shows nothing"},
		{"\u2800\u2800", "shows nothing"},
		{"   ", "shows nothing"},
	} {
		err := CheckTitle(tc.title)
		if code(err) != wire.CodeInvalid || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want invalid naming %q", tc.title, err, tc.want)
		}
	}
	if err := CheckTitle(strings.Repeat("t", MaxTitleBytes+1)); code(err) != wire.CodeTooLarge || !strings.Contains(err.Error(), "over the limit") {
		t.Errorf("a title one byte over the limit: %v, want too_large", err)
	}
}

func TestCheckEmoji(t *testing.T) {
	for _, ok := range []string{
		"👍", "❤️", "👍🏽", "👩‍💻", "🏳️‍🌈", "🇫🇷", "🏴\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F", "+1", "ok",
		"1️⃣", "👩🏽‍❤️‍💋‍👨🏿", // keycap (a combining mark after the selector); 35 bytes, the longest standard sequences
		strings.Repeat("x", MaxEmojiBytes), strings.Repeat("👍", MaxEmojiBytes/4),
	} {
		if err := CheckEmoji(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, tc := range []struct {
		emoji, code string
	}{
		{"", wire.CodeInvalid},
		{strings.Repeat("x", MaxEmojiBytes+1), wire.CodeTooLarge},
		{strings.Repeat("👍", MaxEmojiBytes/4) + "x", wire.CodeTooLarge},
		{"👍 👍", wire.CodeInvalid},
		{" ", wire.CodeInvalid},
		{"👍\n", wire.CodeInvalid},
		{"\u00a0", wire.CodeInvalid},     // no-break space
		{"\u2028", wire.CodeInvalid},     // line separator
		{"\x1b[31m", wire.CodeInvalid},   // terminal escape
		{"\u0085", wire.CodeInvalid},     // C1
		{"\u202e👍", wire.CodeInvalid},    // bidi override
		{"\u2066👍", wire.CodeInvalid},    // bidi isolate
		{"\u200b", wire.CodeInvalid},     // zero-width space
		{"\u200d", wire.CodeInvalid},     // a joiner alone
		{"\ufe0f", wire.CodeInvalid},     // a variation selector alone
		{"\U000E0041", wire.CodeInvalid}, // a tag alone
		{"\u0301", wire.CodeInvalid},     // a combining accent alone
		{"👍\u200d", wire.CodeInvalid},    // a joiner joining nothing
		{"👍\u200d\u200d👍", wire.CodeInvalid},
		{"\ufeff👍", wire.CodeInvalid}, // BOM
		{"\xff", wire.CodeInvalid},
	} {
		if err := CheckEmoji(tc.emoji); code(err) != tc.code {
			t.Errorf("%q: %v, want %s", tc.emoji, err, tc.code)
		}
	}
}
