package transport

import (
	"encoding/binary"
	"net"
	"time"
)

// Data frames are written here rather than through
// websocket.Conn.WriteMessage: a server-to-client frame is unmasked and
// uncompressed (the gateway's upgrader does not negotiate
// permessage-deflate), so its bytes (header and payload) are the same for
// every recipient. A fan-out then builds them once and shares them
// read-only, with no lock (gorilla's PreparedMessage serialises its users on
// a mutex), and a writer hands all the frames it has queued to one writev,
// so a busy connection costs one syscall per batch instead of one per frame.
// Pongs are built here too (PongFrame) and written by the same writer as
// the data; close frames are written under the same lock (writeClose).
// Decision: these few lines of RFC 6455 framing instead of a second
// WebSocket library.

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

// Message types of HandleFrame: the RFC 6455 opcodes of text and binary
// data frames (the same values as gorilla's websocket.TextMessage and
// websocket.BinaryMessage).
const (
	TextMessage   = opText
	BinaryMessage = opBinary
)

// HeaderSize is the length in bytes (2, 4 or 10) of the header of a
// server-to-client (unmasked) frame of n payload bytes (RFC 6455 §5.2).
func HeaderSize(n int) int {
	switch {
	case n <= maxLen7:
		return 2
	case n <= maxLen16:
		return 4
	}
	return maxHdrSize
}

// PutHeader writes the header of a final, unmasked text frame (binaryFrame
// false) or binary frame (binaryFrame true) of n payload bytes into
// b[:HeaderSize(n)]; it panics if b is shorter. The payload follows the
// header in the same slice: HeaderSize(n)+n bytes make one frame for
// WriteFrames.
func PutHeader(b []byte, binaryFrame bool, n int) {
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

// opPong is the opcode of a pong frame (RFC 6455 §5.5.3).
const opPong = 0xa

// PongFrame returns the final, unmasked pong frame answering a ping with
// payload (at most 125 bytes, which Serve guarantees; a longer one is cut),
// for WriteFrames.
func PongFrame(payload []byte) []byte {
	n := min(len(payload), maxLen7)
	b := make([]byte, 2+n)
	b[0], b[1] = finBit|opPong, byte(n)
	copy(b[2:], payload)
	return b
}

// WriteFrames writes frames, each a complete frame (PutHeader and its
// payload), in order, one frame with a plain write, more with one writev.
// (A connection's first writev leaves an iovec array cached on its file
// descriptor for good, ~100 B per idle connection, so a lone frame does not
// use one.) The write has between timeout/2 and timeout to finish: the
// socket's write deadline is moved only once less than half of timeout is
// left on it, because moving it is a timer update in the runtime, 4 % of a
// fan-out's server CPU when done for every write (docs/benchmarks.md,
// issue 16). The frames' bytes are only read, so one frame may be shared by
// many connections; the elements of frames may be changed (a writev
// consumes them). After a TryWriteFrames that wrote part of a frame, the
// first of frames must be that frame's rest. One writer at a time:
// WriteFrames is not safe for concurrent use with itself, but is with the
// close frames (WriteClose, and the reader's answers to the peer), which
// never land inside one of its frames. Once a close frame is sent, frames
// are dropped and reported written (RFC 6455 §5.5.1: no data after the
// close frame), except the rest of a frame begun, which is finished first.
// An error (a timeout once the deadline passes: a net.Error whose Timeout
// is true) leaves the connection to be closed; a frame may have been
// written in part, so nothing is written after it, not even a close frame
// (errBroken).
func (c *Conn) WriteFrames(frames [][]byte, timeout time.Duration) error {
	begun := c.partial
	if begun {
		c.partial = false // the lock is still held since then
	} else {
		c.fc.wmu.Lock()
	}
	defer c.fc.wmu.Unlock()
	if c.fc.broken {
		return errBroken
	}
	if c.closeSent.Load() {
		if !begun {
			return nil
		}
		frames = frames[:1] // the close frame waits for this rest
	}
	nc := c.fc.Conn
	c.fc.keepWriteDeadline(timeout)
	var err error
	if len(frames) == 1 {
		_, err = nc.Write(frames[0])
	} else {
		v := net.Buffers(frames)
		_, err = v.WriteTo(nc)
	}
	if err != nil {
		c.fc.broken = true // no close frame after a frame cut short
	}
	return err
}

// insideFrame reports whether the first n bytes of frames end inside one
// of them rather than at a frame's end.
func insideFrame(frames [][]byte, n int) bool {
	for _, f := range frames {
		if n < len(f) {
			return n > 0
		}
		n -= len(f)
	}
	return false
}

// MaxTryFrames is the most frames one TryWriteFrames writes (one writev;
// Linux IOV_MAX is 1024): of more, the rest are for the caller's next call.
const MaxTryFrames = 64
