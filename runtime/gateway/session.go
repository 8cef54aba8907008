package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/gateway/transport"
	"github.com/parleychat/parley/runtime/presence"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// disconnectTimeout bounds the presence update when a session ends; it runs
// even after Run's context ended, so that a drain unregisters.
const disconnectTimeout = 5 * time.Second

// transportConn is a session's connection as the session uses it (a
// *transport.Conn): messages in (Serve), frames out (WriteFrames), the time
// of the last read (the ticker's idle timeout), and the two ways to end.
type transportConn interface {
	Serve(h transport.Handler)
	WriteFrames(frames [][]byte, timeout time.Duration) error
	TryWriteFrames(frames [][]byte) (int, error)
	WriteClose(code int, reason string) error
	Linger(d time.Duration)
	Close() error
	LastRead() int64
}

// session is one WebSocket connection. Its goroutine is the reader (serve);
// a writer goroutine exists only while frames are queued (writer.go). Fields
// are grouped by owner to keep the struct small and the locking obvious.
type session struct {
	g      *Gateway
	conn   transportConn
	id     string
	user   string
	device string
	home   string // home region ("" without regions)
	binary bool   // parley.v1.proto (binary frames) or parley.v1.json (text)
	expiry int64  // unix ns after which the token is expired; 0 = never

	// movedOn is set by whichever of Drain and serve first tells the client
	// to reconnect, so a session upgraded while a drain starts gets one
	// reconnect frame, not two.
	movedOn atomic.Bool
	// nextBeat is the unix ns of the next presence heartbeat (ticker-owned).
	nextBeat int64

	// Reader-owned.
	invalidRun int      // invalid frames in a row
	lastTyping int64    // unix ns of the last typing fan-out
	subs       []string // presence subscriptions (mirrored in the hub)

	// presMu orders presence heartbeats against Disconnected, so a heartbeat
	// racing the end of the session cannot register it again.
	presMu sync.Mutex

	// mu guards the send queue and the close state.
	mu          sync.Mutex
	queue       []outFrame
	inflight    int  // frames taken by the writer and not yet written
	queueBytes  int  // encoded bytes of queue and of the inflight frames
	writing     bool // a writer goroutine runs (or the session is dead)
	closeCode   int
	closeReason string
	// closing is set (under mu) once the session is closing: nothing more is
	// queued. abort is set when the close must not wait for queued frames.
	closing atomic.Bool
	abort   atomic.Bool
	// room, while the reader waits for the queue to drain (awaitRoom), is
	// closed by the writer once it has (roomMade).
	room chan struct{}
}

func newSession(g *Gateway, conn transportConn, c auth.Claims, binary bool) *session {
	now := time.Now()
	s := &session{g: g, conn: conn, id: newSessionID(), user: c.UserID, device: c.DeviceID, home: c.HomeRegion, binary: binary}
	if !c.ExpiresAt.IsZero() {
		// The verifier accepts a token until Leeway after its exp; so does
		// the open connection, or a client with a slightly fast clock would
		// be cut off right after connecting.
		s.expiry = c.ExpiresAt.Add(auth.Leeway).UnixNano()
	}
	// The first presence heartbeat comes after half to one interval, so
	// sessions that connected together (after a drain) do not beat together.
	hb := int64(g.cfg.Heartbeat)
	s.nextBeat = now.UnixNano() + hb/2 + mrand.Int64N(hb/2+1)
	return s
}

// newSessionID returns 16 URL-safe characters (96 random bits).
func newSessionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (s *session) presenceSession() presence.Session {
	return presence.Session{UserID: s.user, DeviceID: s.device, SessionID: s.id, GatewayID: s.g.cfg.ID}
}

// start registers the session (hub, registry: ps.Connected) and queues its
// Welcome. It runs on the upgrading handler's goroutine, before serve: the
// registry call (a Redis round trip and the presence relay in the
// distributed mode) grows the stack of the goroutine that makes it, and a
// goroutine's stack does not shrink below four times what it uses when
// parked, so made on the reader goroutine it left every idle connection of
// a distributed gateway with an 8 KiB stack instead of 4 KiB
// (docs/benchmarks.md). The session is in the registry before the first
// frame is read, so no message falls between a sync and the push
// (docs/design.md §2). serve must follow, even if start fails to
// register: it owns the cleanup.
func (s *session) start() {
	g := s.g
	g.hub.add(s)
	g.m.Connections.Inc()

	ctx, cancel := g.requestCtx()
	if err := g.ps.Connected(ctx, s.presenceSession()); err != nil {
		// Messages still flow without the registry (routing falls back);
		// presence is eventually consistent.
		g.log.Warn("register session", "user", s.user, "session", s.id, "err", err)
	}
	cancel()
	s.send(&parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Welcome{Welcome: &parleyv1.Welcome{
		UserId:          s.user,
		DeviceId:        s.device,
		SessionId:       s.id,
		HeartbeatMs:     uint32(g.cfg.Heartbeat.Milliseconds()),
		MaxMessageBytes: uint32(g.cfg.MaxMessageBytes),
		GatewayId:       g.cfg.ID,
	}}})
	if g.draining.Load() && s.movedOn.CompareAndSwap(false, true) {
		// Upgraded while Drain started, and Drain's snapshot missed it:
		// move on at once.
		s.send(reconnectFrame(0))
		s.close(wire.CloseDrain, "drain", true)
	}
}

// serve reads the session's frames (started by ServeHTTP on a goroutine of
// its own after start, which then returns) until the connection ends, then
// cleans the session up (ReadEnded). The transport parks an idle session's
// socket and resumes its reading on a fresh goroutine, so that an idle
// connection holds no goroutine (transport.Conn.Serve): HandleFrame and
// ReadEnded may run on another goroutine than serve's, one at a time.
func (s *session) serve() { s.conn.Serve(s) }

// HandleFrame hands a frame read by the transport to the gateway's request
// handling (handle.go), on the reader goroutine.
func (s *session) HandleFrame(mt int, data []byte) {
	s.awaitRoom()
	s.g.handleFrame(s, mt, data)
}

// awaitRoom holds the reader while the send queue is at least half full
// (half of Config.SendQueue frames or of SendQueueBytes), until the writer
// has drained it below that, the session closes, or roomPoll passes (then
// it looks again). Decision: a client's requests are answered in the
// order they are read, and a client pipelining hundreds of them (a sync of
// every conversation at reconnect) would otherwise have its replies
// overflow the queue before the writer first runs, and be disconnected as
// a slow consumer although it reads eagerly; holding the reader pushes
// back on the client through TCP instead. A client that stops reading is
// still ended by the write deadline or by deliveries overflowing the queue.
func (s *session) awaitRoom() {
	for {
		s.mu.Lock()
		if s.closing.Load() || !s.halfFull() {
			s.mu.Unlock()
			return
		}
		if s.room == nil {
			s.room = make(chan struct{})
		}
		room := s.room
		s.mu.Unlock()
		t := time.NewTimer(roomPoll)
		select {
		case <-room:
		case <-t.C:
		}
		t.Stop()
	}
}

// roomPoll bounds one wait of awaitRoom: a session that closes meanwhile
// (a write failure) releases its reader within it.
const roomPoll = 100 * time.Millisecond

// halfFull reports whether the send queue holds at least half of its
// bounds. s.mu is held.
func (s *session) halfFull() bool {
	frames, bytes := s.g.cfg.SendQueue, s.g.cfg.SendQueueBytes
	return frames > 0 && 2*(len(s.queue)+s.inflight) >= frames || bytes > 0 && 2*s.queueBytes >= bytes
}

// roomMade wakes a reader waiting in awaitRoom once the queue is below
// half full. s.mu is held.
func (s *session) roomMade() {
	if s.room != nil && !s.halfFull() {
		close(s.room)
		s.room = nil
	}
}

// HandlePing answers a WebSocket ping with its pong, queued behind the
// session's frames and written by its writer (transport.Handler). It is
// droppable: a client whose queue is full is not reading, and gets its pong
// once there is room for the next ping's.
func (s *session) HandlePing(payload []byte) {
	f := transport.PongFrame(payload)
	s.enqueue(outFrame{wire: f, size: len(payload), droppable: true})
}

// ReadEnded records why the reader stopped and cleans the session up.
func (s *session) ReadEnded(err error) {
	s.readEnded(err)
	s.cleanup()
}

// tooLargeLinger bounds how long a connection closed for a message over the
// read limit, or for a protocol error, drains what the client still sends,
// so that the error frame and the close reach the client before the socket
// closes.
const tooLargeLinger = 2 * time.Second

// readEnded records why the reader stopped. A message over the read limit
// is answered, as every refused request is, with an error frame
// (too_large, id 0: the frame's id was never read), then the close 1009
// (message too big) the WebSocket protocol uses for it (issue 14).
func (s *session) readEnded(err error) {
	if errors.Is(err, transport.ErrTooLarge) {
		s.g.countError(wire.CodeTooLarge)
		s.g.log.Debug("frame over the read limit", "user", s.user, "session", s.id, "limit", wire.MaxFrameBytes)
		msg := fmt.Sprintf("message over the limit of %d bytes; the connection is closed (1009)", wire.MaxFrameBytes)
		if s.closeWith(wire.ErrorFrame(0, wire.CodeTooLarge, msg, 0), wire.CloseMessageTooBig, "message too big", true) {
			s.conn.Linger(tooLargeLinger)
		}
		return
	}
	if errors.Is(err, transport.ErrProtocol) {
		// The transport has written its close frame (1002 or 1007);
		// what the client sent after the broken frame is drained, so
		// that closing does not reset the connection under the close.
		s.g.log.Debug("WebSocket protocol error", "user", s.user, "session", s.id, "err", err)
		s.conn.Linger(tooLargeLinger)
		return
	}
	if s.closing.Load() || errors.Is(err, transport.ErrPeerClosed) {
		return
	}
	s.g.log.Debug("connection ended", "user", s.user, "session", s.id, "err", err)
}

// cleanup ends the session: nothing more is queued, the socket is closed
// (which stops a writer blocked on it), and the session leaves the hub and
// the registry.
func (s *session) cleanup() {
	g := s.g
	s.mu.Lock()
	s.closing.Store(true)
	s.abort.Store(true)
	s.queueBytes -= queuedBytes(s.queue) // a running writer subtracts its batch
	clear(s.queue)
	s.queue = nil
	s.writing = true // no writer starts any more
	s.mu.Unlock()
	_ = s.conn.Close()

	s.presMu.Lock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(g.ctx), disconnectTimeout)
	if err := g.ps.Disconnected(ctx, s.presenceSession()); err != nil {
		g.log.Warn("unregister session", "user", s.user, "session", s.id, "err", err)
	}
	cancel()
	s.presMu.Unlock()

	// Leaves the hub last: Drain (and so a shutdown, which closes the
	// presence backend next) waits until the session is unregistered.
	// Deliveries meanwhile are refused by the closing session.
	g.hub.remove(s)
	g.m.Connections.Dec()

	select {
	case g.gone <- struct{}{}:
	default:
	}
}

// close ends the session with a close frame (code, reason) written after
// the queued frames (flush) or in place of them. It reports whether this
// call started the close; later calls do nothing.
func (s *session) close(code int, reason string, flush bool) bool {
	return s.closeWith(nil, code, reason, flush)
}

// closeWith is close with a last frame queued before the close frame, past
// the queue bound.
func (s *session) closeWith(last *parleyv1.ServerFrame, code int, reason string, flush bool) bool {
	var lastFrame outFrame
	if last != nil {
		frame, n, err := encodeFrame(s.binary, last)
		if err != nil {
			s.g.log.Error("encode frame", "err", err)
		} else {
			lastFrame = outFrame{wire: frame, size: n}
		}
	}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return false
	}
	s.closing.Store(true)
	s.closeCode, s.closeReason = code, reason
	if !flush {
		s.abort.Store(true)
		s.queueBytes -= queuedBytes(s.queue)
		clear(s.queue)
		s.queue = s.queue[:0]
	}
	if lastFrame.wire != nil {
		s.queue = append(s.queue, lastFrame)
		s.queueBytes += lastFrame.size
	}
	start := !s.writing
	s.writing = true
	s.mu.Unlock()
	if start {
		go s.writeLoop()
	}
	return true
}

// kill drops the connection without a close handshake (forced drain).
func (s *session) kill() {
	s.mu.Lock()
	s.closing.Store(true)
	s.abort.Store(true)
	s.mu.Unlock()
	_ = s.conn.Close()
}

func (s *session) codec() wire.Codec { return wire.Codec{Binary: s.binary} }

func (s *session) messageType() int {
	if s.binary {
		return transport.BinaryMessage
	}
	return transport.TextMessage
}

func (s *session) subprotocol() string {
	if s.binary {
		return wire.SubprotocolProto
	}
	return wire.SubprotocolJSON
}
