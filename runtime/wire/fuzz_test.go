package wire

import (
	"testing"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// FuzzDecodeClient feeds arbitrary bytes to both codecs: decoding must
// return a frame or an error wrapping ErrDecode, never panic, and a decoded
// frame must re-encode and, in protobuf, equal what proto.Unmarshal makes
// of the same bytes (the envelope fast path is only an optimisation).
func FuzzDecodeClient(f *testing.F) {
	f.Add([]byte(`{"id":"1","send":{"conversation_id":"dm:a:b","client_msg_id":"x","text":"hi"}}`), false)
	f.Add([]byte(`{"id":2,"sync":{"cursors":[{"conversation_id":"g:1","seq":"5"}]}}`), false)
	f.Add([]byte{0x08, 0x01, 0x4a, 0x00}, true)
	f.Add([]byte{0x12, 0x05, 0x0a, 0x03, 'd', 'm', ':'}, true)
	f.Fuzz(func(t *testing.T, b []byte, binary bool) {
		c := Codec{Binary: binary}
		fr, err := c.DecodeClient(b)
		if binary {
			sameAsUnmarshal(t, b, fr, err, &parleyv1.ClientFrame{}, true)
		}
		if err != nil {
			return
		}
		if _, err := c.EncodeClient(fr); err != nil {
			t.Fatalf("decoded frame does not re-encode: %v", err)
		}
	})
}
