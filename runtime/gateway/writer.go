package gateway

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/runtime/gateway/transport"
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

// queueBuf is the backing array a session's send queue starts on, from a
// pool: an idle session holds none (its queue is nil), and the writer gives
// its two buffers back when the queue runs empty, so neither an idle
// connection nor a burst of one frame per recipient costs an allocation. A
// queue that outgrows it moves to an array of its own, left to the
// collector once the queue is empty.
type queueBuf [4]outFrame

var queueBufs = sync.Pool{New: func() any { return new(queueBuf) }}

// releaseQueue gives q's backing array back to queueBufs if it is one's
// size, cleared so that it keeps no frame alive.
func releaseQueue(q []outFrame) {
	if cap(q) != len(queueBuf{}) {
		return
	}
	b := (*queueBuf)(q[:cap(q)])
	clear(b[:])
	queueBufs.Put(b)
}

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
// goroutine for every recipient) and starts a writer goroutine if none
// runs. The queue
// is full when it holds Config.SendQueue frames or f would take its bytes
// past Config.SendQueueBytes. When it is full, a droppable f is dropped;
// otherwise queued droppable frames are evicted to make room, and if that is
// not enough the session is closed as a slow consumer: it reconnects and
// catches up by sync. It reports whether f was queued.
func (s *session) enqueue(f outFrame) bool {
	queued, start := s.put(f)
	if start {
		go s.writeLoop()
	}
	return queued
}

// put is enqueue without starting the writer: start reports that the
// caller must (writeLoop, or writeNow through startWriters), since no
// writer runs.
func (s *session) put(f outFrame) (queued, start bool) {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return false, false
	}
	if s.full(f) && (f.droppable || !s.evictDroppable() || s.full(f)) {
		frames, bytes := len(s.queue)+s.inflight, s.queueBytes
		s.mu.Unlock()
		if !f.droppable && s.close(wire.CloseSlowConsumer, "send queue overflow; reconnect and sync", false) {
			s.g.m.SlowConsumers.Inc()
			s.g.log.Info("slow consumer disconnected", "user", s.user, "session", s.id,
				"frames", frames, "bytes", bytes, "frame_bytes", f.size)
		}
		return false, false
	}
	if s.queue == nil {
		s.queue = queueBufs.Get().(*queueBuf)[:0]
	}
	s.queue = append(s.queue, f)
	s.queueBytes += f.size
	if h := enqueueHook.Load(); h != nil {
		(*h)(s.queueBytes, f.size)
	}
	start = !s.writing
	s.writing = true
	s.mu.Unlock()
	return true, start
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
func (s *session) writeLoop() { s.write(batchWriter{}, false) }

// writeNow is writeLoop for a fan-out's writer goroutines (startWriters),
// which must not wait for this session's socket: it writes what the socket
// takes at once and leaves the rest, if any, to a writeLoop goroutine of
// the session's own.
func (s *session) writeNow() { s.write(batchWriter{}, true) }

// batchWriter is a writer's batch: frames taken from the queue (swapped
// with it, so enqueuers append to the other buffer meanwhile), of which
// batch[next:] are still to be written, the first of them from byte off.
type batchWriter struct {
	batch []outFrame
	next  int
	off   int
	// bytes is the payload of the batch, which queueBytes counts until the
	// batch is done.
	bytes int
}

// write is the writer: it writes w's rest, then takes the queued frames
// and writes them, until the queue is empty. With nonBlocking it never
// waits for the socket: what the socket does not take at once goes on in a
// writeLoop goroutine, the rest of w first.
func (s *session) write(w batchWriter, nonBlocking bool) {
	for {
		if w.next < len(w.batch) {
			var err error
			if nonBlocking {
				err = s.tryWriteBatch(&w)
				if err == nil && w.next < len(w.batch) {
					go s.write(w, false)
					return
				}
			} else {
				err = s.writeBatch(&w)
			}
			if err != nil {
				clear(w.batch)
				s.writeFailed(err)
				return
			}
		}
		clear(w.batch)
		s.mu.Lock()
		s.inflight = 0
		s.queueBytes -= w.bytes
		s.roomMade()
		if len(s.queue) == 0 {
			if s.closing.Load() {
				// writing stays true: no writer starts after the close.
				s.mu.Unlock()
				if nonBlocking {
					go s.writeClose() // waits for the socket
				} else {
					s.writeClose()
				}
				return
			}
			s.writing = false
			releaseQueue(s.queue)
			s.queue = nil
			s.mu.Unlock()
			releaseQueue(w.batch)
			return
		}
		w.batch, s.queue = s.queue, w.batch[:0]
		w.next, w.off = 0, 0
		s.inflight = len(w.batch)
		w.bytes = queuedBytes(w.batch)
		s.mu.Unlock()
	}
}

// maxWritev bounds the frames handed to one writev, blocking or not; each
// call gets its own write deadline. It is the non-blocking write's own
// bound, so that tryWriteBatch's frames are all offered.
const maxWritev = transport.MaxTryFrames

// writevBufs holds the frame lists handed to WriteFrames (cleared after
// each write, so they keep no frame alive).
var writevBufs = sync.Pool{New: func() any { return new([maxWritev][]byte) }}

// writeBatch writes w's rest in order, up to maxWritev frames per writev
// (transport.Conn.WriteFrames). Every write has a deadline (between half of
// Config.WriteTimeout and all of it): a peer that stops reading cannot hold
// a writer (and its frames) forever. It stops early, without error, once
// the session aborts, at a frame boundary: a frame begun is finished.
func (s *session) writeBatch(w *batchWriter) error {
	// The frame list escapes (the conn is an interface), so a local array
	// would be 1.5 KiB of garbage per write: most of a fan-out's
	// allocation, one write per recipient per message.
	bp := writevBufs.Get().(*[maxWritev][]byte)
	defer writevBufs.Put(bp)
	bufs := bp[:]
	for w.next < len(w.batch) {
		n := min(len(w.batch)-w.next, maxWritev)
		if s.abort.Load() {
			if w.off == 0 {
				break
			}
			// A frame begun is finished first, or the close frame
			// would land inside it.
			n = 1
		}
		frames, _ := w.take(bufs, n)
		began := time.Now()
		err := s.conn.WriteFrames(frames, s.g.cfg.WriteTimeout)
		clear(frames)
		s.g.m.ObserveStage(metrics.StageSocketWrite, time.Since(began))
		if err != nil {
			return err
		}
		w.next, w.off = w.next+n, 0
	}
	return nil
}

// tryWriteBatch writes as much of w's rest as the socket takes without
// waiting (transport.Conn.TryWriteFrames: up to maxWritev frames per
// write or writev), advancing w; it stops at the first call the socket
// does not take whole. An aborted session's frames count as written, as
// in writeBatch.
func (s *session) tryWriteBatch(w *batchWriter) error {
	if s.abort.Load() && w.off == 0 {
		w.next = len(w.batch)
		return nil
	}
	bp := writevBufs.Get().(*[maxWritev][]byte)
	defer writevBufs.Put(bp)
	bufs := bp[:]
	for w.next < len(w.batch) {
		frames, want := w.take(bufs, min(len(w.batch)-w.next, maxWritev))
		began := time.Now()
		wrote, err := s.conn.TryWriteFrames(frames)
		clear(frames)
		if err != nil {
			return err
		}
		w.advance(wrote)
		if wrote < want {
			return nil
		}
		s.g.m.ObserveStage(metrics.StageSocketWrite, time.Since(began))
	}
	return nil
}

// take puts the next n (>= 1) of w's frames still to write in bufs, the
// first from byte w.off, and returns them and how many bytes they hold.
// The caller clears them once written, so that bufs keeps no frame alive.
func (w *batchWriter) take(bufs [][]byte, n int) ([][]byte, int) {
	bytes := -w.off
	for i, f := range w.batch[w.next : w.next+n] {
		bufs[i] = f.wire
		bytes += len(f.wire)
	}
	bufs[0] = bufs[0][w.off:]
	return bufs[:n], bytes
}

// advance moves w past n written bytes: whole frames, then into the next.
// An empty frame is passed over, so that a batch of them cannot keep
// tryWriteBatch's loop from ending.
func (w *batchWriter) advance(n int) {
	for w.next < len(w.batch) {
		rest := len(w.batch[w.next].wire) - w.off
		if n < rest {
			w.off += n
			return
		}
		n -= rest
		w.next, w.off = w.next+1, 0
	}
}

// writerChunk is the fewest sessions one of a fan-out's writer goroutines
// serves (startWriters): 500 recipients take at most 16 goroutines
// instead of 500, and a goroutine's 32 writes (a few µs each) delay its
// last recipient by well under a millisecond. On fewer cores than that
// the goroutines are as many as the cores (GOMAXPROCS), each serving more:
// more goroutines than cores write no sooner, and each costs a start, a
// stack grown to the write path's depth and a scheduling round (issue 16:
// 16 goroutines per 500-member message on 2 cores, docs/benchmarks.md).
const writerChunk = 32

// ownWriters is how many sessions startWriters gives a writer goroutine
// each (writeLoop), as enqueue does: a DM's users, a reply's sender. Such a
// writer starts a moment later and often finds several frames queued (a
// reply and a receipt, the deliveries of one fetched batch of records),
// which it writes with one writev. Decision (issue 11): writing them at
// once on the delivering goroutine cost the fleet's gateway about 30 %
// more CPU per DM send at 2,000/s (one write per frame instead of one per
// batch; docs/benchmarks.md); a fan-out has one frame per recipient to
// write, where starting a goroutine per recipient was the cost.
const ownWriters = 4

// startWriters starts the writers of ss, sessions whose put reported that
// no writer runs: a few get a writer goroutine each (writeLoop); more are
// written without waiting (writeNow) by goroutines serving at least
// writerChunk sessions each, at most GOMAXPROCS of them. The
// writers read ss: the caller must not change it afterwards.
func startWriters(ss []*session) {
	if len(ss) <= ownWriters {
		for _, s := range ss {
			go s.writeLoop()
		}
		return
	}
	procs := runtime.GOMAXPROCS(0)
	size := max(writerChunk, (len(ss)+procs-1)/procs)
	for len(ss) > 0 {
		chunk := ss[:min(size, len(ss))]
		ss = ss[len(chunk):]
		go func() {
			for _, s := range chunk {
				s.writeNow()
			}
		}()
	}
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
	// batched makes push leave starting writers to startWriters, for a
	// fan-out to many sessions; starts are the sessions to start.
	batched bool
	starts  []*session
}

// push queues p on s, reporting whether it was queued. With p.batched, a
// session whose writer must start is added to p.starts, and the caller
// starts them all (p.startWriters) once it has pushed to everyone;
// otherwise the session's writer starts at once.
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
	f := outFrame{wire: p.wire[i], size: p.size[i], droppable: p.droppable}
	if !p.batched {
		return s.enqueue(f)
	}
	queued, start := s.put(f)
	if start {
		p.starts = append(p.starts, s)
	}
	return queued
}

// startWriters starts the writers push left to the caller.
func (p *pushFrame) startWriters() {
	startWriters(p.starts)
	p.starts = nil
}
