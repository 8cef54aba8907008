package chat

import "testing"

func TestDMPeer(t *testing.T) {
	if dmPeer("dm:alice:bob", "alice") != "bob" || dmPeer("dm:alice:bob", "bob") != "alice" || dmPeer("dm:alice:bob", "carol") != "" {
		t.Fatal("dmPeer")
	}
}
