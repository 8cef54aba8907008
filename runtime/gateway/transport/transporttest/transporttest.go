// Package transporttest holds what tests of a WebSocket server need to play
// the client's side byte by byte: frames as a client sends them, which
// gorilla's client would not let a test split, merge or send early.
package transporttest

import "encoding/binary"

// ClientFrame builds a final, masked client frame (RFC 6455 §5.2) of
// payload with opcode op (1 text, 2 binary, 9 ping, …), with the 7-bit,
// 16-bit or 64-bit length form its size needs and the masking key 1 2 3 4.
func ClientFrame(op byte, payload []byte) []byte {
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	key := []byte{1, 2, 3, 4}
	b = append(b, key...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}
