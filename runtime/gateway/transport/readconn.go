package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// An idle connection's reader goroutine used to park deep in gorilla's read
// path (NextReader → bufio → netFD), using more than 1 KiB of stack, so the
// runtime kept it at 4 KiB: 40% of an idle connection's memory. Serve now
// waits for the next frame on a shallow readiness wait (waitReadable, a few
// hundred bytes of stack) on a goroutine that has not grown its stack
// (docs/benchmarks.md, idle memory).
//
// Waiting outside gorilla is only right when gorilla's read buffer holds no
// byte of a next frame, and gorilla keeps that buffer private. So gorilla
// reads through frameConn, which never hands it a byte past the end of the
// frame being read (it parses the RFC 6455 §5.2 header lengths, nothing
// else): once gorilla has consumed a frame its buffer is empty, and
// frameConn knows whether it holds read-ahead bytes itself. Everything
// else (masking, fragments, control frames, limits, UTF-8) stays gorilla's.

// readAhead is the read-ahead buffer of a frameConn, pooled: an idle
// connection holds none.
const readAhead = 512

var readAheadPool = sync.Pool{New: func() any { b := make([]byte, readAhead); return &b }}

// frameConn is the net.Conn gorilla reads a Conn from (see above). Only
// the reader goroutine (Serve) reads it; writes go to the embedded
// connection.
type frameConn struct {
	net.Conn
	raw syscall.RawConn // for waitReadable; nil when the connection has none

	// wmu keeps frames whole on the socket: WriteFrames and TryWriteFrame
	// hold it while they write, and so does every write gorilla makes
	// through Write (its close frames, from any goroutine). A
	// TryWriteFrame that wrote part of a frame returns holding it, for
	// the WriteFrames that writes the rest to release (Conn.partial), so
	// nothing lands inside the frame in between.
	wmu sync.Mutex
	// writeBy is the write deadline keepWriteDeadline last set (unix ns;
	// 0: none, or gorilla moved it since: SetWriteDeadline).
	writeBy atomic.Int64

	ahead *[]byte // pooled buffer holding buf, nil when empty
	buf   []byte  // read-ahead bytes not yet handed on
	left  uint64  // bytes of the current frame not yet handed on; 0 at a frame boundary

	// limit is the largest message payload handed on (0: none); msg is the
	// payload of the current data message's frames so far. A frame that
	// takes a message past limit is refused before gorilla sees its header
	// (errOverLimit), so that gorilla does not answer with its own close
	// 1009 and the handler can say why first (issue 14).
	limit, msg uint64
	// inMsg is set between the first and the final frame of a fragmented
	// data message.
	inMsg bool
}

// errOverLimit is what Read returns for a frame that takes its message
// past frameConn.limit.
var errOverLimit = errors.New("message over the read limit")

// init sets c up to read nc.
func (c *frameConn) init(nc net.Conn) {
	c.Conn = nc
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.raw = rc
		}
	}
}

// Write is gorilla's way to the socket (close frames): under wmu, so a
// frame of its own never lands inside one of ours.
func (c *frameConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.Conn.Write(p)
}

// SetWriteDeadline is gorilla's way to the write deadline (before each of
// its control and close frames): it forgets writeBy, so the next
// WriteFrames sets a deadline of its own again.
func (c *frameConn) SetWriteDeadline(t time.Time) error {
	c.writeBy.Store(0)
	return c.Conn.SetWriteDeadline(t)
}

// keepWriteDeadline moves the socket's write deadline to timeout from now
// if less than half of timeout is left on it (WriteFrames, TryWriteFrame).
// It sets the embedded connection's deadline itself, so writeBy holds.
func (c *frameConn) keepWriteDeadline(timeout time.Duration) {
	now := time.Now().UnixNano()
	if by := c.writeBy.Load(); by-now < int64(timeout/2) {
		by = now + int64(timeout)
		c.writeBy.Store(by)
		_ = c.Conn.SetWriteDeadline(time.Unix(0, by))
	}
}

// Read hands on at most the rest of the current frame.
func (c *frameConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.left == 0 {
		size, err := c.nextFrameSize()
		if err != nil {
			return 0, err
		}
		c.left = size
	}
	if len(c.buf) > 0 {
		n := copy(p[:min(uint64(len(p)), c.left)], c.buf)
		c.buf = c.buf[n:]
		c.left -= uint64(n)
		c.release()
		return n, nil
	}
	n, err := c.Conn.Read(p[:min(uint64(len(p)), c.left)])
	c.left -= uint64(n)
	return n, err
}

// nextFrameSize reads ahead until the next frame's header is buffered and
// returns the frame's whole length, header included (RFC 6455 §5.2: 2
// bytes, then 2 or 8 bytes of extended payload length when the 7-bit length
// is 126 or 127, then the 4-byte masking key when the mask bit is set).
func (c *frameConn) nextFrameSize() (uint64, error) {
	for {
		if len(c.buf) >= 2 {
			hdr := uint64(2)
			payload := uint64(c.buf[1] & 0x7f)
			switch payload {
			case len16:
				hdr += 2
			case len64:
				hdr += 8
			}
			if c.buf[1]&0x80 != 0 {
				hdr += 4
			}
			if uint64(len(c.buf)) >= hdr {
				switch payload {
				case len16:
					payload = uint64(binary.BigEndian.Uint16(c.buf[2:]))
				case len64:
					// gorilla refuses lengths past its read limit; keep the
					// sum from wrapping until it does.
					payload = min(binary.BigEndian.Uint64(c.buf[2:]), 1<<62)
				}
				if err := c.count(c.buf[0], payload); err != nil {
					return 0, err
				}
				return hdr + payload, nil
			}
		}
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
}

// count adds a frame (first header byte b0, payload bytes) to the current
// message (RFC 6455 §5.4: a text or binary frame starts one, continuation
// frames add to it, control frames are not part of it) and refuses it when
// the message goes past the limit. A frame that is not valid there (a
// reserved opcode, a continuation with no message started, a new message
// inside one) is not counted: gorilla refuses it with 1002 (protocol
// error), whatever length it declares.
func (c *frameConn) count(b0 byte, payload uint64) error {
	opcode, fin := b0&0x0f, b0&finBit != 0
	switch {
	case (opcode == opText || opcode == opBinary) && !c.inMsg:
		c.msg = payload
	case opcode == 0 && c.inMsg: // continuation
		c.msg += payload
	default:
		return nil
	}
	c.inMsg = !fin
	if c.limit > 0 && c.msg > c.limit {
		return errOverLimit
	}
	return nil
}

// Control frames read outside gorilla (control; RFC 6455 §5.5).
const (
	opPing            = 0x9
	maskBit           = 0x80
	maxControlPayload = 125
)

// control consumes the ping or pong frame the stream continues with, if it
// does, copying its unmasked payload into p, and returns its opcode and
// payload length. Call it between messages only. Pings and pongs there are
// handled outside gorilla because gorilla's NextReader, having handled one,
// waits inside its read path for the next data frame: a reader that a
// client's WebSocket pings woke would stay there, on a 4 KiB stack, for as
// long as the client sends nothing else. It returns opcode 0, having
// consumed nothing, when the next frame is anything else or is not a valid
// client control frame (gorilla then refuses it as the protocol asks), and
// when the read fails (gorilla's next read meets the error again). It reads
// from the socket while less than the frame is buffered, so call it when
// bytes are due (after a readiness wait).
func (c *frameConn) control(p *[maxControlPayload]byte) (op byte, n int) {
	if c.left != 0 {
		return 0, 0
	}
	for {
		if len(c.buf) >= 2 {
			b0, b1 := c.buf[0], c.buf[1]
			op, n = b0&0x0f, int(b1&0x7f)
			// FIN set, no RSV bits, masked (client frames are), a 7-bit
			// length of at most 125.
			if op != opPing && op != opPong || b0&0xf0 != finBit || b1&maskBit == 0 || n > maxControlPayload {
				return 0, 0
			}
			if len(c.buf) >= 6+n {
				key := c.buf[2:6]
				for i := range n {
					p[i] = c.buf[6+i] ^ key[i&3]
				}
				c.buf = c.buf[6+n:]
				c.release()
				return op, n
			}
		}
		if c.fill() != nil {
			return 0, 0
		}
	}
}

// fill reads once from the connection into the read-ahead buffer. It is
// only called with less than a frame header or a control frame (131 bytes)
// buffered.
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

// idle reports whether no byte of a next frame is held here, so that the
// reader may wait on the socket itself. Gorilla's own buffer is empty then
// too, once it has consumed the last frame it was handed.
func (c *frameConn) idle() bool { return c.left == 0 && len(c.buf) == 0 }

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

// hijacker wraps the ResponseWriter given to the upgrader so that the
// connection gorilla gets is the frameConn of a new Conn (c). Bytes a client
// sent before the handshake finished (which the server's reader buffered)
// move into the frameConn, so that gorilla reads them through it.
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
