package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// The read path reads RFC 6455 frames itself; gorilla only does the
// handshake. Decision (issue 16, idle memory): gorilla's Conn and its
// bufio.Reader were about 0.7 KB of the 2.6 KB each idle connection kept
// live (heap profile of 3,000 idle connections, docs/benchmarks.md), held
// only to read frames between long silences. What reading frames takes is
// short and fully specified (RFC 6455 §5: the header, masking, fragments,
// control frames; §7: the closing handshake), the write side was already
// built the same way (frame.go), and a second WebSocket library would hold
// per-connection state of its own. So a connection keeps a 512-byte
// read-ahead buffer only while bytes are being read (pooled), no reader
// state between messages, and no gorilla Conn at all.
//
// An idle connection holds no goroutine either (poller_linux.go): between
// messages nothing is buffered anywhere but in frameConn, which knows it
// (idle), so the reader may park the socket and end.
//
// What the reader enforces, each refusal failing the connection with a
// close frame naming the rule (RFC 6455 §7.1.7) and an error wrapping
// ErrProtocol: no RSV bit (no extension is negotiated), a known opcode,
// the mask bit on every client frame (§5.1), control frames final and at
// most 125 bytes (§5.5), continuations only inside a fragmented message and
// no new message inside one (§5.4), a close payload of 0 or at least 2
// bytes with a code a peer may send and a UTF-8 reason (§5.5.1, §7.4). A
// data message over the read limit is refused from the header of the frame
// that takes it past the limit, before its payload is read (ErrTooLarge).
// Text messages are not checked for UTF-8 here: the wire codec decides what
// it accepts (as with gorilla, which did not check either).

// readAhead is the read-ahead buffer of a frameConn, pooled: an idle
// connection holds none.
const readAhead = 512

var readAheadPool = sync.Pool{New: func() any { b := make([]byte, readAhead); return &b }}

// ErrProtocol is wrapped by the error Handler.ReadEnded gets when the peer
// broke the WebSocket protocol; the connection was answered with a close
// frame (1002, or 1007 for a close reason that is not UTF-8) naming the
// broken rule.
var ErrProtocol = errors.New("transport: WebSocket protocol error")

// protocolError is a frame the protocol does not allow where it stands.
type protocolError struct {
	code   int    // the close code to answer with (RFC 6455 §7.4.1)
	reason string // names the broken rule; sent as the close reason
}

func (e *protocolError) Error() string { return "transport: WebSocket protocol error: " + e.reason }
func (e *protocolError) Unwrap() error { return ErrProtocol }

func protoErr(format string, args ...any) *protocolError {
	return &protocolError{code: websocket.CloseProtocolError, reason: fmt.Sprintf(format, args...)}
}

// frameConn is a connection's socket with the reader's read-ahead. Only
// the reader goroutine (Serve) reads it; writes go to the embedded
// connection, or straight to its descriptor (TryWriteFrames). Only
// Conn.Close closes it (closeFD).
type frameConn struct {
	net.Conn
	raw syscall.RawConn // for waitReadable; nil when the connection has none

	// fd is the socket's descriptor plus one, which TryWriteFrames writes
	// to without the runtime's poller (0: none, as for TLS). fdmu is read
	// locked around such a write and locked by closeFD, which sets
	// fdClosed before the socket is closed: a descriptor number closed
	// may be reused by the next accepted connection at once, so none of
	// these writes may run from then on.
	fd       int32
	fdClosed bool
	fdmu     sync.RWMutex

	// wmu keeps frames whole on the socket: WriteFrames, TryWriteFrames and
	// the close frames (writeClose) hold it while they write. A
	// TryWriteFrames that wrote part of a frame returns holding it, for the
	// WriteFrames that writes the rest to release (Conn.partial), so
	// nothing lands inside the frame in between.
	wmu sync.Mutex
	// writeBy is the write deadline keepWriteDeadline last set (unix ns;
	// 0: none, or a close frame's write moved it since).
	writeBy atomic.Int64
	// broken is set, under wmu, when a write failed: it may have stopped
	// inside a frame, so nothing else is written (errBroken).
	broken bool

	ahead *[]byte // pooled buffer holding buf, nil when empty
	buf   []byte  // read-ahead bytes not yet consumed
}

// init sets c up to read nc.
func (c *frameConn) init(nc net.Conn) {
	c.Conn = nc
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.raw = rc
			_ = rc.Control(func(fd uintptr) { c.fd = int32(fd) + 1 })
		}
	}
}

// closeFD stops TryWriteFrames' writes to the descriptor, waiting for one
// under way, and closes the socket.
func (c *frameConn) closeFD() error {
	c.fdmu.Lock()
	c.fdClosed = true
	c.fdmu.Unlock()
	return c.Conn.Close()
}

// keepWriteDeadline moves the socket's write deadline to timeout from now
// if less than half of timeout is left on it (WriteFrames, TryWriteFrames).
func (c *frameConn) keepWriteDeadline(timeout time.Duration) {
	now := time.Now().UnixNano()
	if by := c.writeBy.Load(); by-now < int64(timeout/2) {
		by = now + int64(timeout)
		c.writeBy.Store(by)
		_ = c.Conn.SetWriteDeadline(time.Unix(0, by))
	}
}

// RFC 6455 §5.2 header bits and the opcodes besides text and binary.
const (
	rsvBits           = 0x70
	maskBit           = 0x80
	opContinuation    = 0x0
	opClose           = 0x8
	opPing            = 0x9
	maxControlPayload = 125
)

// header is one frame's header as read from a client (RFC 6455 §5.2).
type header struct {
	fin    bool
	op     byte
	length uint64 // payload bytes; at most 2^63-1
	key    [4]byte
}

// readHeader consumes the next frame's header. It checks what a header
// alone can break (RSV bits, opcode, mask bit, a control frame's FIN and
// length) from its first two bytes, before it waits for the rest, so a
// broken frame is refused even if the peer sends nothing more.
func (c *frameConn) readHeader() (header, error) {
	if err := c.need(2); err != nil {
		return header{}, err
	}
	b0, b1 := c.buf[0], c.buf[1]
	h := header{fin: b0&finBit != 0, op: b0 & 0x0f}
	size, n7 := 2, b1&0x7f
	switch {
	case b0&rsvBits != 0:
		return h, protoErr("RSV bits %#x set, no extension was negotiated", b0&rsvBits>>4)
	case h.op >= 3 && h.op <= 7 || h.op > 0xa:
		return h, protoErr("reserved opcode %d", h.op)
	case b1&maskBit == 0:
		return h, protoErr("client frame not masked")
	case h.op >= opClose && !h.fin:
		return h, protoErr("control frame fragmented")
	case h.op >= opClose && n7 > maxControlPayload:
		return h, protoErr("control frame payload over 125 bytes")
	case n7 == len16:
		size += 2
	case n7 == len64:
		size += 8
	}
	size += 4 // the masking key
	if err := c.need(size); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // inside a header
		}
		return h, err
	}
	switch n7 {
	case len16:
		h.length = uint64(binary.BigEndian.Uint16(c.buf[2:]))
	case len64:
		h.length = binary.BigEndian.Uint64(c.buf[2:])
		if h.length > 1<<63-1 {
			return h, protoErr("payload length with its most significant bit set")
		}
	default:
		h.length = uint64(n7)
	}
	copy(h.key[:], c.buf[size-4:size])
	c.buf = c.buf[size:]
	return h, nil
}

// readPayload reads the current frame's payload, len(p) bytes, into p and
// unmasks it with key: what is read ahead first, the rest straight from the
// socket (never a byte past the frame).
func (c *frameConn) readPayload(p []byte, key [4]byte) error {
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	c.release()
	if n < len(p) {
		if _, err := io.ReadFull(c.Conn, p[n:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	unmask(p, key)
	return nil
}

// unmask XORs p with the masking key repeated (RFC 6455 §5.3), p starting
// at the payload's first byte; eight bytes at a time, as the key's period
// (4) divides 8.
func unmask(p []byte, key [4]byte) {
	if len(p) >= 8 {
		k := uint64(binary.LittleEndian.Uint32(key[:]))
		k |= k << 32
		for len(p) >= 8 {
			binary.LittleEndian.PutUint64(p, binary.LittleEndian.Uint64(p)^k)
			p = p[8:]
		}
	}
	for i := range p {
		p[i] ^= key[i&3]
	}
}

// need reads until at least n (at most readAhead) bytes are read ahead.
func (c *frameConn) need(n int) error {
	for len(c.buf) < n {
		if err := c.fill(); err != nil {
			return err
		}
	}
	return nil
}

// fill reads once from the connection into the read-ahead buffer. It is
// only called with less than a frame header (14 bytes) read ahead.
func (c *frameConn) fill() error {
	if c.ahead == nil {
		c.ahead = readAheadPool.Get().(*[]byte)
	}
	b := *c.ahead
	if len(c.buf) > 0 && &c.buf[0] != &b[0] {
		c.buf = b[:copy(b, c.buf)] // compact to the front
	} else if len(c.buf) == 0 {
		c.buf = b[:0]
	}
	n, err := c.Conn.Read(b[len(c.buf):])
	c.buf = b[:len(c.buf)+n]
	if n > 0 {
		return nil
	}
	c.release()
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// release returns an emptied read-ahead buffer to the pool.
func (c *frameConn) release() {
	if len(c.buf) > 0 {
		return
	}
	if c.ahead != nil {
		readAheadPool.Put(c.ahead)
	}
	c.ahead, c.buf = nil, nil
}

// idle reports whether no byte of a next frame is read ahead, so that the
// reader may wait on the socket itself. The reader consumes frames whole
// and messages whole, so between messages this is the only buffer.
func (c *frameConn) idle() bool { return len(c.buf) == 0 }

// waitReadable returns once the connection has bytes to read, or an error
// or end of stream to report (the next Read reports it), parking the
// calling goroutine on a shallow stack. It returns the wait's own error: a
// passed read deadline (os.ErrDeadlineExceeded) or a closed socket. Without
// a raw connection it returns nil at once.
func (c *frameConn) waitReadable() error {
	if c.raw == nil {
		return nil
	}
	return c.raw.Read(readable)
}

// msgBufs holds message buffers only while a message is read and handled,
// so that an idle connection holds none.
var msgBufs = sync.Pool{New: func() any { return new([]byte) }}

// next reads the next frame and, when it starts a data message, the rest
// of the message: it returns the message's type and payload (fragments
// joined; from msgBufs, to be put back), or type 0 and nil for a control
// frame between messages, which it has handled (a ping handed to the
// handler, a ping or pong counted as activity). Control frames inside a
// fragmented message are handled the same way as they come. A close frame
// is answered and ends reading with a *websocket.CloseError; a broken rule
// is answered with a close frame and ends it with a *protocolError.
func (c *Conn) next() (int, *[]byte, error) {
	var (
		msg  *[]byte // nil until a data frame starts a message
		mt   int
		size uint64
	)
	fail := func(err error) (int, *[]byte, error) {
		if msg != nil {
			msgBufs.Put(msg)
		}
		var pe *protocolError
		if errors.As(err, &pe) {
			_ = c.writeClose(pe.code, pe.reason)
		}
		return 0, nil, err
	}
	for {
		h, err := c.fc.readHeader()
		if err != nil {
			return fail(err)
		}
		if h.op >= opClose {
			var p [maxControlPayload]byte
			if err := c.fc.readPayload(p[:h.length], h.key); err != nil {
				return fail(err)
			}
			if h.op == opClose {
				return fail(c.peerClosed(p[:h.length]))
			}
			// Pings and pongs count as activity between messages only: a
			// message left unfinished does not stay open on pings.
			if msg == nil {
				c.touch()
			}
			if h.op == opPing {
				c.h.HandlePing(p[:h.length])
			}
			if msg == nil {
				return 0, nil, nil
			}
			continue
		}
		switch {
		case h.op == opContinuation && msg == nil:
			return fail(protoErr("continuation frame with no message started"))
		case h.op != opContinuation && msg != nil:
			return fail(protoErr("new data frame inside a fragmented message"))
		case msg == nil:
			msg, mt, size = msgBufs.Get().(*[]byte), int(h.op), 0
			*msg = (*msg)[:0]
		}
		size += min(h.length, 1<<62) // cannot wrap: each term is at most 2^62
		if size > c.limit() {
			return fail(fmt.Errorf("message of at least %d bytes: %w", size, errOverLimit))
		}
		start := len(*msg)
		*msg = growLen(*msg, int(h.length))
		if err := c.fc.readPayload((*msg)[start:], h.key); err != nil {
			return fail(err)
		}
		if h.fin {
			return mt, msg, nil
		}
	}
}

// noLimit is the read limit of a Conn upgraded with none (readLimit <= 0):
// a message must fit in memory, so there is a bound all the same.
const noLimit = 1 << 30

// limit returns the largest message payload c reads, in bytes.
func (c *Conn) limit() uint64 {
	if c.readLimit <= 0 {
		return noLimit
	}
	return uint64(c.readLimit)
}

// growLen returns b extended by n bytes (their values undefined).
func growLen(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), max(2*cap(b), len(b)+n, 512))
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

// errOverLimit is wrapped by what next returns for a frame that takes its
// message past the read limit (Serve reports ErrTooLarge).
var errOverLimit = errors.New("message over the read limit")

// peerClosed answers the peer's close frame with payload p (RFC 6455
// §5.5.1: echo its status code, unless a close frame was sent already) and
// returns the error reading ends with: a *websocket.CloseError with the
// peer's code (1005, no status, for an empty payload) and reason, or a
// *protocolError for a payload the protocol does not allow.
func (c *Conn) peerClosed(p []byte) error {
	if len(p) == 0 {
		_ = c.writeClose(websocket.CloseNoStatusReceived, "")
		return &websocket.CloseError{Code: websocket.CloseNoStatusReceived}
	}
	if len(p) == 1 {
		return protoErr("close frame payload of 1 byte")
	}
	code := int(binary.BigEndian.Uint16(p))
	if !validCloseCode(code) {
		return protoErr("close code %d is not one a peer may send", code)
	}
	if !utf8.Valid(p[2:]) {
		return &protocolError{code: websocket.CloseInvalidFramePayloadData, reason: "close reason is not UTF-8"}
	}
	_ = c.writeClose(code, "")
	return &websocket.CloseError{Code: code, Text: string(p[2:])}
}

// validCloseCode reports whether a peer may send code in a close frame
// (RFC 6455 §7.4.1 and the IANA registry: 1000–1003 and 1007–1014 are
// defined and sendable, 1004–1006 and 1015 never sent; 3000–4999 belong to
// libraries and applications).
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	}
	return code >= 3000 && code <= 4999
}

// hijacker wraps the ResponseWriter given to the upgrader so that the
// connection gorilla hands over is the frameConn of a new Conn (c). Bytes a
// client sent before the handshake finished (which the server's reader
// buffered) move into the frameConn's read-ahead, so the reader reads them
// first.
type hijacker struct {
	http.ResponseWriter
	c *Conn // set by Hijack
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.c = &Conn{}
	h.c.fc.init(nc)
	if n := brw.Reader.Buffered(); n > 0 {
		early := make([]byte, n)
		_, _ = brw.Reader.Read(early)
		h.c.fc.buf = early
	}
	return &h.c.fc, brw, nil
}

// Unwrap lets http.ResponseController reach the server's ResponseWriter.
func (h *hijacker) Unwrap() http.ResponseWriter { return h.ResponseWriter }
