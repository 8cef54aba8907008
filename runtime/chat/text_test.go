package chat

import (
	"fmt"
	"strings"
	"testing"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
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

// TestTextRulesApplied: the chat role refuses group titles and message
// texts that the rules refuse, and stores nothing for them.
func TestTextRulesApplied(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	for _, title := range []string{"a\nb", "nul\x00", "esc\x1b", "c1\u0090", "\u202Eevil", "\u2068x"} {
		_, err := e.call(&parleyv1.IngressRecord{Origin: origin("alice"), Op: &parleyv1.IngressRecord_CreateGroup{
			CreateGroup: &parleyv1.CreateGroup{Title: title, Members: []string{"bob"}}}})
		if code(err) != wire.CodeInvalid {
			t.Errorf("create group titled %q: %v, want invalid", title, err)
		}
	}
	if ids, err := e.st.Inbox(e.ctx, "alice"); err != nil || len(ids) != 0 {
		t.Fatalf("refused groups were created: %v %v", ids, err)
	}
	dm := DMID("alice", "bob")
	for i, text := range []string{"nul\x00", "esc\x1b[2J", "del\x7f", "c1\u009b"} {
		if _, err := e.send("alice", dm, fmt.Sprint("bad", i), text); code(err) != wire.CodeInvalid {
			t.Errorf("send %q: %v, want invalid", text, err)
		}
	}
	ok := e.mustSend(t, "alice", dm, "good", "line one\nline\ttwo\r\n")
	m, err := e.st.Message(e.ctx, dm, ok.GetSeq())
	if err != nil || m.GetText() != "line one\nline\ttwo\r\n" {
		t.Fatalf("stored %v, %v", m, err)
	}
}
