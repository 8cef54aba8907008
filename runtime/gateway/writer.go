package gateway

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/runtime/metrics"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// outFrame is one queued frame: the complete WebSocket frame (header and
// payload, see frame.go), either this session's own (a reply) or shared by
// every recipient of a fan-out; shared bytes are only read.
type outFrame struct {
	wire []byte
	// size is the payload length, what the frame counts against
	// Config.SendQueueBytes.
	size int
	// droppable marks typing and presence frames, which give way to
	// messages when the queue is full (docs/benchmarks.md).
	droppable bool
}

// keepQueueCap is the largest queue backing array an idle session keeps;
// a larger one (after a burst) is released so idle sessions stay small.
const keepQueueCap = 8

// send encodes f for this session and queues it (not droppable).
func (s *session) send(f *parleyv1.ServerFrame) bool {
	frame, n, err := encodeFrame(s.binary, f)
	if err != nil {
		s.g.log.Error("encode frame", "err", err)
		return false
	}
	return s.enqueue(outFrame{wire: frame, size: n})
}

// sendError answers request id with err as an error frame; errors that are
// not *wire.Error become internal (and are logged).
func (s *session) sendError(id uint64, err error) {
	we := wire.AsError(err)
	if we.Code == wire.CodeInternal {
		s.g.log.Error("request failed", "user", s.user, "session", s.id, "err", err)
	}
	s.g.countError(we.Code)
	s.send(wire.ErrorFrame(id, we.Code, we.Message, we.RetryAfterMs))
}

// enqueue queues f without ever blocking (it is called by the delivering
// goroutine for every recipient) and starts a writer if none runs. The queue
// is full when it holds Config.SendQueue frames or f would take its bytes
// past Config.SendQueueBytes. When it is full, a droppable f is dropped;
// otherwise queued droppable frames are evicted to make room, and if that is
// not enough the session is closed as a slow consumer: it reconnects and
// catches up by sync. It reports whether f was queued.
func (s *session) enqueue(f outFrame) bool {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return false
	}
	if s.full(f) && (f.droppable || !s.evictDroppable() || s.full(f)) {
		frames, bytes := len(s.queue)+s.inflight, s.queueBytes
		s.mu.Unlock()
		if !f.droppable && s.close(wire.CloseSlowConsumer, "send queue overflow; reconnect and sync", false) {
			s.g.m.SlowConsumers.Inc()
			s.g.log.Info("slow consumer disconnected", "user", s.user, "session", s.id,
				"frames", frames, "bytes", bytes, "frame_bytes", f.size)
		}
		return false
	}
	s.queue = append(s.queue, f)
	s.queueBytes += f.size
	if h := enqueueHook.Load(); h != nil {
		(*h)(s.queueBytes, f.size)
	}
	start := !s.writing
	s.writing = true
	s.mu.Unlock()
	if start {
		go s.writeLoop()
	}
	return true
}

// full reports whether the queue has no room for f: SendQueue frames
// (queued or being written), or f's bytes would take the queue past
// SendQueueBytes (an empty queue takes any one frame). s.mu is held.
func (s *session) full(f outFrame) bool {
	return len(s.queue)+s.inflight >= s.g.cfg.SendQueue ||
		s.queueBytes > 0 && s.queueBytes+f.size > s.g.cfg.SendQueueBytes
}

// enqueueHook, when set (by tests), sees the queued bytes of a session and
// the size of the frame just queued, under the session's lock.
var enqueueHook atomic.Pointer[func(queuedBytes, frameBytes int)]

// queuedBytes sums the sizes of fs.
func queuedBytes(fs []outFrame) int {
	n := 0
	for i := range fs {
		n += fs[i].size
	}
	return n
}

// evictDroppable removes the queued droppable frames, reporting whether
// there were any. s.mu is held.
func (s *session) evictDroppable() bool {
	kept := s.queue[:0]
	for _, f := range s.queue {
		if !f.droppable {
			kept = append(kept, f)
		} else {
			s.queueBytes -= f.size
		}
	}
	evicted := len(kept) < len(s.queue)
	clear(s.queue[len(kept):])
	s.queue = kept
	return evicted
}

// writeLoop writes queued frames until the queue is empty, then exits: no
// goroutine waits on an idle connection. On a closing session it writes the
// close frame last. A write error ends the connection.
func (s *session) writeLoop() {
	var batch []outFrame
	batchBytes := 0
	for {
		s.mu.Lock()
		s.inflight = 0
		s.queueBytes -= batchBytes
		if len(s.queue) == 0 {
			if s.closing.Load() {
				// writing stays true: no writer starts after the close.
				s.mu.Unlock()
				s.writeClose()
				return
			}
			s.writing = false
			// Keep one small backing array for the next burst; let a
			// large one go.
			if cap(s.queue) < cap(batch) {
				s.queue = batch[:0]
			}
			if cap(s.queue) > keepQueueCap {
				s.queue = nil
			}
			s.mu.Unlock()
			return
		}
		// Swap buffers so enqueuers append to the other one while this
		// batch is written without the lock.
		batch, s.queue = s.queue, batch[:0]
		s.inflight = len(batch)
		batchBytes = queuedBytes(batch)
		s.mu.Unlock()

		if err := s.writeBatch(batch); err != nil {
			clear(batch)
			s.writeFailed(err)
			return
		}
		clear(batch)
	}
}

// maxWritev bounds the frames handed to one writev (Linux IOV_MAX is 1024);
// each call gets its own write deadline.
const maxWritev = 64

// writevBufs holds the frame lists handed to WriteFrames (cleared after
// each write, so they keep no frame alive).
var writevBufs = sync.Pool{New: func() any { return new([maxWritev][]byte) }}

// writeBatch writes frames in order, up to maxWritev per writev
// (transport.Conn.WriteFrames). Every write has a deadline (between half of
// Config.WriteTimeout and all of it): a peer that stops reading cannot hold
// a writer (and its frames) forever. It stops
// early, without error, once the session aborts.
func (s *session) writeBatch(frames []outFrame) error {
	// The frame list escapes (the conn is an interface), so a local array
	// would be 1.5 KiB of garbage per write: most of a fan-out's
	// allocation, one write per recipient per message.
	bp := writevBufs.Get().(*[maxWritev][]byte)
	defer writevBufs.Put(bp)
	bufs := bp[:]
	for len(frames) > 0 && !s.abort.Load() {
		n := min(len(frames), maxWritev)
		for i := range frames[:n] {
			bufs[i] = frames[i].wire
		}
		began := time.Now()
		err := s.conn.WriteFrames(bufs[:n], s.g.cfg.WriteTimeout)
		clear(bufs[:n])
		s.g.m.ObserveStage(metrics.StageSocketWrite, time.Since(began))
		if err != nil {
			return err
		}
		frames = frames[n:]
	}
	return nil
}

// writeFailed ends a connection whose write failed (peer gone or write
// deadline passed); the reader then sees the closed socket and cleans up.
func (s *session) writeFailed(err error) {
	s.mu.Lock()
	s.closing.Store(true)
	s.abort.Store(true)
	clear(s.queue)
	s.queue = nil
	s.queueBytes = 0
	s.mu.Unlock()
	// A write that timed out is a client that stopped reading: the same
	// slow consumer as a queue overflow, only caught by the deadline first.
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && s.g.m != nil {
		s.g.m.SlowConsumers.Inc()
	}
	s.g.log.Debug("write failed", "user", s.user, "session", s.id, "err", err)
	_ = s.conn.Close()
}

// writeClose writes the close frame of a closing session and gives the
// client a grace period to answer before the reader gives up
// (transport.Conn.WriteClose).
func (s *session) writeClose() {
	s.mu.Lock()
	code, reason := s.closeCode, s.closeReason
	s.mu.Unlock()
	if code == 0 {
		return // the connection ended from the other side
	}
	_ = s.conn.WriteClose(code, reason)
}

// pushFrame is one fan-out frame, encoded at most once per subprotocol,
// lazily, as a complete WebSocket frame that every recipient of that
// subprotocol shares. It is used by one goroutine.
type pushFrame struct {
	frame     *parleyv1.ServerFrame
	droppable bool
	wire      [2][]byte // [json, proto] framed
	size      [2]int    // payload bytes
	failed    [2]bool
}

// push queues p on s, reporting whether it was queued.
func (p *pushFrame) push(g *Gateway, s *session) bool {
	i := 0
	if s.binary {
		i = 1
	}
	if p.wire[i] == nil {
		if p.failed[i] {
			return false
		}
		frame, n, err := encodeFrame(s.binary, p.frame)
		if err != nil {
			p.failed[i] = true
			g.log.Error("encode push", "err", err)
			return false
		}
		p.wire[i], p.size[i] = frame, n
	}
	return s.enqueue(outFrame{wire: p.wire[i], size: p.size[i], droppable: p.droppable})
}
