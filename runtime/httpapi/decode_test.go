package httpapi

import (
	"errors"
	"strings"
	"testing"

	"github.com/parleychat/parley/runtime/wire"
)

func TestDecodeBodyIsStrict(t *testing.T) {
	type body struct {
		Text string `json:"text"`
		Seq  uint64 `json:"seq"`
	}
	for _, tc := range []struct {
		in, want string // want: the decoded text, or "!" + a substring of the error
	}{
		{`{"text":"hi"}`, "hi"},
		{` {"text":"hi"} ` + "\n", "hi"},
		{`{"text":"\ud83d\ude00"}`, "😀"},
		{`{"text":"\\ud800 is six characters"}`, `\ud800 is six characters`},
		{`{"text":"\ufffd"}`, "\ufffd"}, // an encoded U+FFFD is text
		{`{"text":"a\ud800"}`, "!lone UTF-16 surrogate"},
		{`{"text":"\udc00b"}`, "!lone UTF-16 surrogate"},
		{`{"text":"\ud83d\u0041"}`, "!lone UTF-16 surrogate"},
		{`{"text":"\ud83d"}`, "!lone UTF-16 surrogate"},
		{"{\"text\":\"bad \xff byte\"}", "!not valid UTF-8"},
		{`{"seq":3}{"seq":1}`, "!more than one JSON value"},
		{`{"seq":3} x`, "!more than one JSON value"},
		{`{"sequence":3}`, "!not valid JSON"},
		{``, "!empty"},
		{"  \n", "!empty"},
	} {
		var b body
		err := decodeBody([]byte(tc.in), &b)
		if want, isErr := strings.CutPrefix(tc.want, "!"); isErr {
			var we *wire.Error
			if !errors.As(err, &we) || we.Code != wire.CodeInvalid || !strings.Contains(we.Message, want) {
				t.Errorf("decode %q: %v, want invalid mentioning %q", tc.in, err, want)
			}
			continue
		}
		if err != nil || b.Text != tc.want {
			t.Errorf("decode %q: %q, %v; want %q", tc.in, b.Text, err, tc.want)
		}
	}
}
