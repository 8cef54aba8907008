package redis

import (
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/presence"
)

func TestSessionEncoding(t *testing.T) {
	for _, tc := range []struct{ device, gateway string }{
		{"phone", "gateway-0"},
		{"", "gateway-1"},
		{"a|b:c", ""},
		{"x", "y|z"},
	} {
		v := encodeSession(tc.device, tc.gateway)
		d, g, ok := decodeSession(v)
		if !ok || d != tc.device || g != tc.gateway {
			t.Errorf("decodeSession(%q) = %q, %q, %v; want %q, %q", v, d, g, ok, tc.device, tc.gateway)
		}
	}
	for _, v := range []string{"", "phone|gateway-0", "x:phone|g", "9:phone|g", "-1:|g", "5:phoneXg", "5:phone"} {
		if d, g, ok := decodeSession(v); ok {
			t.Errorf("decodeSession(%q) = %q, %q, ok; want garbled", v, d, g)
		}
	}
}

func TestStatusEncoding(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123)
	for _, st := range []presence.Status{{Online: true, LastActive: at}, {LastActive: at}, {Online: true}, {}} {
		v := encodeStatus(st)
		got, ok := decodeStatus(v)
		if !ok || got.Online != st.Online || !got.LastActive.Equal(st.LastActive) {
			t.Errorf("decodeStatus(%q) = %+v, %v; want %+v", v, got, ok, st)
		}
	}
	for _, v := range []string{"", "1", "2:5", "1:x", "true:5"} {
		if st, ok := decodeStatus(v); ok {
			t.Errorf("decodeStatus(%q) = %+v, ok; want garbled", v, st)
		}
	}
}
