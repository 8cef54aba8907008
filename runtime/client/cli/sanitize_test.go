package cli

import (
	"strings"
	"testing"
	"time"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// The tester's payload: a fake line from bob, ANSI colours, an OSC title
// change, a line erase and a right-to-left override.
const hostile = "hi\n[dm:alice:bob] bob: please send me your password\n\x1b[31mRED\x1b[0m \x1b]0;pwned-title\x07"

func TestSanitize(t *testing.T) {
	cases := []struct {
		in, id, text string
	}{
		{"plain ascii", "plain ascii", "plain ascii"},
		{"héllo 👋 日本", "héllo 👋 日本", "héllo 👋 日本"},
		{hostile,
			`hi\n[dm:alice:bob] bob: please send me your password\n\x1b[31mRED\x1b[0m \x1b]0;pwned-title\x07`,
			"hi" + TextNewline + "[dm:alice:bob] bob: please send me your password" + TextNewline + `\x1b[31mRED\x1b[0m \x1b]0;pwned-title\x07`},
		{"\x1b[2K\rbob: fake", `\x1b[2K\rbob: fake`, `\x1b[2K\rbob: fake`},
		{"a\r\nb", `a\r\nb`, "a" + TextNewline + "b"},
		{"tab\there", `tab\there`, `tab\there`},
		{"bell\a del\x7f nul\x00", `bell\x07 del\x7f nul\x00`, `bell\x07 del\x7f nul\x00`},
		{"evil\u202Etxt.exe", "evil<U+202E>txt.exe", "evil<U+202E>txt.exe"},
		{"\u202A\u202B\u202C\u202D\u2066\u2067\u2068\u2069\u200E\u200F\u061C", "<U+202A><U+202B><U+202C><U+202D><U+2066><U+2067><U+2068><U+2069><U+200E><U+200F><U+061C>", ""},
		{"c1 \u009b31m \u0085 \u009d0;t\u009c", "c1 <U+009B>31m <U+0085> <U+009D>0;t<U+009C>", ""},
		{"raw \x9b31m byte", `raw \x9b31m byte`, ""},
		{"sep\u2028x\u2029", "sep<U+2028>x<U+2029>", ""},
		{"\u200b\u2060\ufeff\u00ad", "<U+200B><U+2060><U+FEFF><U+00AD>", ""},
		{"👩\u200d💻", "👩\u200d💻", ""}, // the joiner of an emoji sequence stays
	}
	for _, c := range cases {
		if got := Sanitize(c.in); got != c.id {
			t.Errorf("Sanitize(%q) = %q, want %q", c.in, got, c.id)
		}
		want := c.text
		if want == "" {
			want = c.id
		}
		if got := SanitizeText(c.in); got != want {
			t.Errorf("SanitizeText(%q) = %q, want %q", c.in, got, want)
		}
		for _, got := range []string{Sanitize(c.in), SanitizeText(c.in)} {
			assertPrintable(t, got)
		}
	}
}

// assertPrintable fails when line holds anything a terminal acts on.
func assertPrintable(t *testing.T, out string) {
	t.Helper()
	for _, r := range out {
		if (r < 0x20 && r != '\n') || r == 0x7f || unsafeRune(r) || r == '\uFFFD' {
			t.Errorf("output holds %U: %q", r, out)
		}
	}
}

func TestFormatSanitises(t *testing.T) {
	const conv = "dm:alice:bob"
	cases := []struct {
		got, want string
	}{
		{FormatMessage(&parleyv1.Message{ConversationId: conv, SenderId: "bob", Text: hostile}),
			"[dm:alice:bob] bob: hi\n    │ [dm:alice:bob] bob: please send me your password\n    │ " + `\x1b[31mRED\x1b[0m \x1b]0;pwned-title\x07`},
		{FormatMessage(&parleyv1.Message{ConversationId: "g:1\x1b[2K", SenderId: "mal\u202Elory\n[g:1] bob", Text: "x"}),
			`[g:1\x1b[2K] mal<U+202E>lory\n[g:1] bob: x`},
		{FormatMessage(&parleyv1.Message{ConversationId: "g:1", SenderId: "a", Kind: parleyv1.MessageKind_MESSAGE_KIND_MEDIA,
			Media: &parleyv1.Media{Url: "https://x/\x1b]8;;evil\x07y", Mime: "image/png\n[g:1] b: hi", Size: 1}}),
			`[g:1] a sent https://x/\x1b]8;;evil\x07y (image/png\n[g:1] b: hi, 1 bytes)`},
		{FormatMessage(&parleyv1.Message{ConversationId: "g:1", SenderId: "a", Kind: parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED,
			Text: "Team\n\x1b[1m", Members: []string{"b\x1b", "c"}}),
			`[g:1] * a created the group "Team\n\x1b[1m" with b\x1b, c`},
		{FormatMessage(&parleyv1.Message{ConversationId: "g:1", SenderId: "a", Kind: parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED, Members: []string{"\u009bx"}}),
			`[g:1] * a added <U+009B>x`},
		{FormatReceipt(&parleyv1.Receipt{ConversationId: "c\r", UserId: "b\x07", Kind: parleyv1.ReceiptKind_RECEIPT_KIND_READ, Seq: 1}, "alice"),
			`[c\r] ✓✓ read by b\x07 up to #1`},
		{FormatPresence(&parleyv1.Presence{UserId: "bob\x1b]0;t\x07", Status: parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE}),
			`bob\x1b]0;t\x07 is online`},
		{FormatState(&parleyv1.ConversationState{ConversationId: "g:1", Title: "\u202Emeti", LastMessage: &parleyv1.Message{ConversationId: "g:1", SenderId: "b", Text: "x\ny"}}, "alice"),
			`g:1 "<U+202E>meti"  last: b: x` + TextNewline + "y"},
		{errText(wire.Errorf(wire.CodeInvalid, "bad\x1b[2K\r\nerror: fake")), `invalid: bad\x1b[2K\r\nerror: fake`},
	}
	for i, c := range cases {
		if c.got != c.want {
			t.Errorf("case %d: got %q, want %q", i, c.got, c.want)
		}
		assertPrintable(t, c.got)
		// No line but the first may look like a message line.
		for _, l := range strings.Split(c.got, "\n")[1:] {
			if !strings.HasPrefix(l, "    │ ") {
				t.Errorf("case %d: continuation line %q is not indented", i, l)
			}
		}
	}
}

func TestValidUserIDMatchesTheServerRule(t *testing.T) {
	for _, id := range []string{"bob", "a.b_c@d-e", strings.Repeat("x", 64)} {
		if !ValidUserID(id) {
			t.Errorf("ValidUserID(%q) = false", id)
		}
	}
	for _, id := range []string{"", "bob/x", "a:b", "bob x", "b\x1b", "é", strings.Repeat("x", 65)} {
		if ValidUserID(id) {
			t.Errorf("ValidUserID(%q) = true", id)
		}
	}
}

func TestAboutLeft(t *testing.T) {
	s := &session{left: map[string]time.Time{"g:1": time.Now().Add(-time.Hour)}}
	cases := []struct {
		err  *wire.Error
		want bool
	}{
		{wire.Errorf(wire.CodeNotMember, "not a member of g:1"), true},
		{wire.Errorf(wire.CodeNotMember, "not a member of g:12"), false},
		{wire.Errorf(wire.CodeNotMember, "not a member"), false}, // left long ago
		{wire.Errorf(wire.CodeInvalid, "bad seq in g:1"), false},
	}
	for _, c := range cases {
		if got := s.aboutLeft(c.err); got != c.want {
			t.Errorf("aboutLeft(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	s.left["g:2"] = time.Now()
	if !s.aboutLeft(wire.Errorf(wire.CodeNotMember, "not a member")) {
		t.Error("a not_member naming no conversation right after /leave is shown")
	}
}
