package gateway

import (
	"encoding/binary"
	"fmt"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// The gateway writes data frames itself rather than through
// websocket.Conn.WriteMessage: a server-to-client frame is unmasked and
// uncompressed (the upgrader does not negotiate permessage-deflate), so its
// bytes (header and payload) are the same for every recipient. A fan-out
// then builds them once and shares them read-only, with no lock (gorilla's
// PreparedMessage serialises its users on a mutex), and a session's writer
// hands all the frames it has queued to one writev, so a busy connection
// costs one syscall per batch instead of one per frame. Control frames
// (pong, close) still go through gorilla, whose Write of a whole frame the
// socket serialises against ours. Decision: these few lines of RFC 6455
// framing instead of a second WebSocket library.

// RFC 6455 §5.2 base framing: FIN bit and opcodes, and the payload length
// forms (7 bits; 126 + 16 bits; 127 + 64 bits, network byte order).
const (
	finBit     = 0x80
	opText     = 0x1
	opBinary   = 0x2
	len16      = 126
	len64      = 127
	maxLen7    = 125
	maxLen16   = 1<<16 - 1
	maxHdrSize = 10
)

// frameHeaderSize is the header length of an unmasked frame of n payload
// bytes (RFC 6455 §5.2).
func frameHeaderSize(n int) int {
	switch {
	case n <= maxLen7:
		return 2
	case n <= maxLen16:
		return 4
	}
	return maxHdrSize
}

// putFrameHeader writes the header of a final, unmasked text or binary
// frame of n payload bytes into b, which holds frameHeaderSize(n) bytes.
func putFrameHeader(b []byte, binaryFrame bool, n int) {
	b[0] = finBit | opText
	if binaryFrame {
		b[0] = finBit | opBinary
	}
	switch {
	case n <= maxLen7:
		b[1] = byte(n)
	case n <= maxLen16:
		b[1] = len16
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b[1] = len64
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
}

// encodeFrame encodes f for a subprotocol (binary: parley.v1.proto) as a
// complete WebSocket data frame, returning the frame and its payload
// length. Protobuf is marshalled straight after the header; JSON, whose
// length is known only once encoded, is copied behind it.
func encodeFrame(binaryFrame bool, f *parleyv1.ServerFrame) (frame []byte, payload int, err error) {
	if binaryFrame {
		n := proto.Size(f)
		h := frameHeaderSize(n)
		frame = make([]byte, h, h+n)
		putFrameHeader(frame, true, n)
		frame, err = proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(frame, f)
		if err != nil {
			return nil, 0, err
		}
		if len(frame) != h+n {
			return nil, 0, fmt.Errorf("encode frame: marshalled %d bytes, sized %d", len(frame)-h, n)
		}
		return frame, n, nil
	}
	data, err := wire.Codec{Binary: false}.EncodeServer(f)
	if err != nil {
		return nil, 0, err
	}
	h := frameHeaderSize(len(data))
	frame = make([]byte, h+len(data))
	putFrameHeader(frame, false, len(data))
	copy(frame[h:], data)
	return frame, len(data), nil
}
