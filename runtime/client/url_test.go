package client

import "testing"

func TestWSURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"ws://localhost:8080", "ws://localhost:8080/v1/ws"},
		{"ws://localhost:8080/", "ws://localhost:8080/v1/ws"},
		{"localhost:8080", "ws://localhost:8080/v1/ws"},
		{"http://h:1", "ws://h:1/v1/ws"},
		{"https://h", "wss://h/v1/ws"},
		{"wss://h/custom/ws", "wss://h/custom/ws"},
	}
	for _, c := range cases {
		got, err := wsURL(c.in)
		if err != nil || got != c.want {
			t.Errorf("wsURL(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "ftp://h", "ws://"} {
		if _, err := wsURL(bad); err == nil {
			t.Errorf("wsURL(%q) accepted", bad)
		}
	}
}
