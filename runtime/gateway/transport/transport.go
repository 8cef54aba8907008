// Package transport owns the gateway's sockets: the WebSocket connection of
// one session, as gorilla/websocket upgrades it, read so that an idle
// connection holds no goroutine and as little memory as it can, and written
// with frames built once per fan-out. The gateway's session sees messages in
// (Handler), frames out (WriteFrames), the time of the last read (for its
// idle timeout) and the two ways to end (WriteClose, Close); it never sees
// the socket, gorilla's Conn or a goroutine change (docs/benchmarks.md, idle
// memory).
//
// gorilla/websocket does the handshake (Upgrade); after it the connection
// keeps no gorilla state: frames are read and written here, because a
// gateway holds tens of thousands of mostly idle sockets.
//
// The read path (readconn.go) reads whole frames and whole messages
// through a pooled read-ahead buffer, so between messages nothing is
// buffered and nothing needs a goroutine: Serve parks the socket in the
// process's epoll set (poller_linux.go) and returns, and the next bytes
// start a fresh reader. Where it cannot park (not Linux, a connection
// without a file descriptor, a closing one), Serve waits with a
// non-blocking peek on the socket (readable_linux.go), a few hundred bytes
// of stack.
//
// The write path (frame.go): data frames are built by the caller
// (HeaderSize, PutHeader) and written as they are, one writev per batch;
// close frames are written here too (writeClose).
package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Close timing. closeWait bounds the write of a close frame;
// defaultCloseGrace is how long the peer has to answer a close frame
// before reads fail (closeGrace, in ns, which tests may change while
// connections of earlier tests still close: hence atomic).
const (
	closeWait         = time.Second
	defaultCloseGrace = 2 * time.Second
)

var closeGrace atomic.Int64

func init() { closeGrace.Store(int64(defaultCloseGrace)) }

// MaxCloseReason is the longest close reason, in bytes, a close frame
// carries (125 bytes of control payload minus the 2-byte code); WriteClose
// cuts a longer one.
const MaxCloseReason = 123

// Errors Handler.ReadEnded reports (test with errors.Is), besides
// ErrProtocol (readconn.go), a *websocket.CloseError for any other close
// frame of the peer, and the socket's own errors.
var (
	// ErrTooLarge: the peer sent a message over the read limit. Nothing
	// was answered (the frame is refused from its header, before it is
	// read): the handler says why, closes with 1009 (message too big,
	// WriteClose) and lets the peer's unread bytes drain (Linger).
	ErrTooLarge = errors.New("transport: message over the read limit")
	// ErrPeerClosed: the peer closed the connection with 1000 (normal
	// closure) or 1001 (going away).
	ErrPeerClosed = errors.New("transport: closed by the peer")
)

// Handler receives what a Conn reads (Serve). Its methods are called one
// at a time, from the reader goroutine of the moment.
type Handler interface {
	// HandleFrame handles one data message: messageType is TextMessage or
	// BinaryMessage, data its whole payload (fragments joined, at most the
	// read limit), valid only until HandleFrame returns.
	HandleFrame(messageType int, data []byte)
	// HandlePing answers a WebSocket ping: payload (at most 125 bytes,
	// valid only until HandlePing returns) goes back in the frame
	// PongFrame builds, written as the handler writes its data frames
	// (WriteFrames). Pongs and data then share one writer and one write
	// deadline: a pong written beside the data writer could time out
	// half-written and have data frames follow it, corrupting the stream
	// (RFC 6455 §5.5.3 lets a pong wait behind data already queued).
	HandlePing(payload []byte)
	// ReadEnded is called once, last, when reading stops: err says why
	// (ErrTooLarge, ErrPeerClosed, a timeout after WriteClose's grace, or
	// the socket's error, such as a Close from another goroutine).
	ReadEnded(err error)
}

// Conn is one server-side WebSocket connection. Create it with Upgrade,
// read it with Serve (one reader), write it with WriteFrames (one writer at
// a time) and WriteClose, end it with Close; those may run concurrently
// with each other.
type Conn struct {
	fc frameConn // the socket and the reader's read-ahead
	// proto is the subprotocol the handshake agreed on ("" for none).
	proto string
	// closeSent is set once a close frame is to be written (writeClose):
	// the closing handshake sends one per side and no data after it (RFC
	// 6455 §5.5.1); closeWritten once it has been. lingering is set by
	// Linger: whichever of the two comes second shuts the sending side.
	closeSent, closeWritten, lingering atomic.Bool
	// lastRead is the unix ns of the last message, ping or pong read.
	lastRead atomic.Int64
	// readLimit is the largest message read, in bytes.
	readLimit int64

	// Parking (poller_linux.go): token is the connection's key in the
	// process's poller (0: it never parks); parked is set while no
	// goroutine reads it, h is the handler its next reader serves; noPark
	// is set by Close and WriteClose, after which readers wait themselves.
	// h is set once, by Serve.
	token  uint32
	parked atomic.Bool
	noPark atomic.Bool
	h      Handler
	// closeBy is the read deadline WriteClose set (unix ns; 0: none), for
	// a warm wait that cleared it to put it back (waitWarm).
	closeBy atomic.Int64
	// partial is set by a TryWriteFrames that wrote part of a frame and
	// returned holding fc.wmu; the WriteFrames that writes the rest clears
	// it and releases the lock. Only the connection's one writer uses it.
	partial bool
}

// Upgrade upgrades the HTTP request to a WebSocket connection with u
// (which, on failure, has answered the request with an HTTP error already,
// and Upgrade returns its error). u must not negotiate compression (the
// reader refuses RSV bits). The connection reads messages of at most
// readLimit bytes (ErrTooLarge past it; readLimit <= 0: 1 GiB), hands
// pings to its handler, and counts messages, pings and pongs as activity
// (LastRead). gorilla's Conn is dropped once the handshake is done.
func Upgrade(u *websocket.Upgrader, w http.ResponseWriter, r *http.Request, readLimit int64) (*Conn, error) {
	h := &hijacker{ResponseWriter: w}
	ws, err := u.Upgrade(h, r, nil)
	if err != nil {
		return nil, err
	}
	c := h.c
	if c == nil || ws.NetConn() != net.Conn(&c.fc) {
		// gorilla took the connection some other way than through
		// hijacker: bytes it buffered would be lost to this reader.
		_ = ws.Close()
		return nil, errors.New("transport: the connection was not hijacked through the transport's ResponseWriter")
	}
	c.proto, c.readLimit = ws.Subprotocol(), readLimit
	c.lastRead.Store(time.Now().UnixNano())
	c.register()
	return c, nil
}

// Subprotocol returns the subprotocol the handshake agreed on ("" for
// none).
func (c *Conn) Subprotocol() string { return c.proto }

// LastRead returns when the last message, or ping or pong between
// messages, was read (or the connection upgraded), in unix nanoseconds.
// Safe from any goroutine.
func (c *Conn) LastRead() int64 { return c.lastRead.Load() }

func (c *Conn) touch() { c.lastRead.Store(time.Now().UnixNano()) }

// Serve reads messages until the connection ends, calling h.HandleFrame
// for each data message and then h.ReadEnded once. Control frames are
// handled inside (pings handed to h.HandlePing, pongs and pings counted by
// LastRead, a close answered).
//
// Serve returns before the connection ends: between messages no goroutine
// waits for an idle connection. Serve parks it in the process's poller
// (poller_linux.go), which starts a fresh goroutine when the next bytes
// arrive, so an idle connection holds no stack at all. A reader that has
// handled messages goes on in a fresh goroutine (2 KiB: the handler has
// grown its own to 4 KiB, and the runtime never shrinks a stack whose use
// plus its 800-byte guard reaches a quarter of it), which waits up to a
// second for the next burst before it parks the connection (waitWarm).
// Where it cannot park (not Linux, a connection without a file descriptor,
// a closing one), it waits on a shallow readiness wait (readconn.go). Either way: one goroutine start per burst
// of messages. So call Serve on a goroutine of its own, started where the
// stack is still small, and take h.ReadEnded, not Serve's return, as the
// end.
func (c *Conn) Serve(h Handler) {
	c.h = h
	c.serve(h, serveNew)
}

// How a reader goroutine starts (serve).
const (
	serveNew     = iota // Serve: nothing read yet; parks at once when idle
	serveResumed        // started by the poller (or Close) for a parked connection: reads first, its bytes are in the socket, not yet in frameConn
	serveWarm           // started by a reader that handled a burst: waits warm before it parks
)

// serve is Serve, started as from says.
func (c *Conn) serve(h Handler, from int) {
	handled := false
	for {
		if c.fc.idle() && from != serveResumed {
			if handled {
				go c.serve(h, serveWarm)
				return
			}
			// A connection's first wait parks at once: after a mass
			// reconnect every connection is in it together.
			if from != serveWarm || !c.waitWarm() {
				if c.park() {
					return
				}
				_ = c.fc.waitReadable() // the read reports what ended the wait
			}
		}
		from = serveNew
		mt, msg, err := c.next()
		if err != nil {
			c.unregister()
			h.ReadEnded(c.readError(err))
			return
		}
		if msg == nil {
			// A ping or pong between messages, handled: this reader
			// parks again if nothing follows.
			continue
		}
		handled = true
		c.touch()
		h.HandleFrame(mt, *msg)
		if cap(*msg) <= maxPooledMessage {
			msgBufs.Put(msg)
		}
	}
}

// maxPooledMessage is the largest message buffer, in bytes, kept for the
// next message; a larger one (a connection with a larger read limit) is
// left to the collector.
const maxPooledMessage = 128 << 10

// readError maps the reader's errors to the package's (see ErrTooLarge).
func (c *Conn) readError(err error) error {
	switch {
	case errors.Is(err, errOverLimit):
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	case websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway):
		return fmt.Errorf("%w: %w", ErrPeerClosed, err)
	}
	return err
}

// WriteClose starts the closing handshake: it writes a close frame with
// code (RFC 6455 §7.4; the gateway's are wire.Close*) and reason, cut to
// MaxCloseReason bytes, within 1 s, then gives the peer 2 s to answer,
// after which reads fail (Serve ends with a timeout). If the close frame
// cannot be written, the connection is closed at once and the write's
// error returned. If a close frame was sent already (the reader answered
// the peer's close, or a protocol error), it does nothing and returns
// errCloseSent: that frame's writer ends the connection.
func (c *Conn) WriteClose(code int, reason string) error {
	if len(reason) > MaxCloseReason {
		reason = reason[:MaxCloseReason]
	}
	err := c.writeClose(code, reason)
	if errors.Is(err, errCloseSent) {
		return err
	}
	if err != nil {
		_ = c.Close()
		return err
	}
	// Only a waiting goroutine observes the read deadline: a parked
	// connection resumes on one, and does not park again.
	by := time.Now().Add(time.Duration(closeGrace.Load()))
	c.closeBy.Store(by.UnixNano())
	c.noPark.Store(true)
	if !c.lingering.Load() { // a lingering reader keeps its own deadline
		err = c.fc.Conn.SetReadDeadline(by)
	}
	c.unpark()
	return err
}

// errCloseSent is what writeClose returns once a close frame was sent, or
// is being sent, by another caller.
var errCloseSent = errors.New("transport: a close frame was sent already")

// writeClose writes a close frame (RFC 6455 §5.5.1) with code and reason
// (cut to MaxCloseReason bytes; code 1005, no status, sends an empty
// payload), within closeWait, between whole data frames (under wmu). Only
// the first close frame is written; later calls return errCloseSent.
func (c *Conn) writeClose(code int, reason string) error {
	if !c.closeSent.CompareAndSwap(false, true) {
		return errCloseSent
	}
	var b [4 + MaxCloseReason]byte
	b[0] = finBit | opClose
	n := 2
	if code != websocket.CloseNoStatusReceived {
		reason = reason[:min(len(reason), MaxCloseReason)]
		binary.BigEndian.PutUint16(b[2:], uint16(code))
		n = 4 + copy(b[4:], reason)
	}
	b[1] = byte(n - 2)
	c.fc.wmu.Lock()
	defer c.fc.wmu.Unlock()
	if c.fc.broken {
		return errBroken
	}
	c.fc.writeBy.Store(0) // WriteFrames sets a deadline of its own again
	if err := c.fc.Conn.SetWriteDeadline(time.Now().Add(closeWait)); err != nil {
		return err
	}
	if _, err := c.fc.Conn.Write(b[:n]); err != nil {
		c.fc.broken = true
		return err
	}
	c.closeWritten.Store(true)
	if c.lingering.Load() {
		c.shutWrite()
	}
	return nil
}

// errBroken is what a write returns after an earlier write failed: that one
// may have left a frame unfinished, which nothing may follow.
var errBroken = errors.New("transport: an earlier write failed, perhaps inside a frame")

// shutWrite shuts the socket's sending side (a TCP FIN after the close
// frame); a second call does nothing.
func (c *Conn) shutWrite() {
	if cw, ok := c.fc.Conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// Linger reads and discards what the peer still sends until it closes its
// side, a read fails or d has passed. It is for a connection whose reading
// stopped with bytes still coming (ErrTooLarge, ErrProtocol): closing a
// socket with unread bytes makes the kernel reset the connection, and a
// reset can destroy what the peer had not read yet, the answer and the
// close frame among them (RFC 6455 §7.1.1 asks the server to close the TCP
// connection first, after the closing handshake). Once the close frame is
// written (now, or later by WriteClose on another goroutine), the socket's
// sending side is shut, so the peer reads the end of the stream after it
// and closes its side (a client answering the close frame waits for the
// server's TCP close, §7.1.1). Call it on the reader's goroutine, after the
// answer and the close are queued (WriteClose) or written, before Close.
func (c *Conn) Linger(d time.Duration) {
	end := time.Now().Add(d)
	c.lingering.Store(true)
	if c.closeWritten.Load() {
		c.shutWrite() // else writeClose does, once the close frame is out
	}
	b := readAheadPool.Get().(*[]byte)
	defer readAheadPool.Put(b)
	for time.Now().Before(end) {
		if c.fc.Conn.SetReadDeadline(end) != nil {
			return
		}
		if _, err := c.fc.Conn.Read(*b); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return // the peer closed its side, or the socket failed
		}
	}
}

// Close closes the socket without a closing handshake. A read in Serve and
// a write in WriteFrames then fail (a parked connection resumes to report
// it to its handler); closing twice returns the socket's error.
func (c *Conn) Close() error {
	c.noPark.Store(true)
	err := c.fc.closeFD()
	c.unpark()
	return err
}
