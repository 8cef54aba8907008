package gateway

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// TestFanoutPastAStalledRecipient: a fan-out's writers serve many
// recipients each (startWriters), so a recipient that stops reading must not
// hold up the others. One client reads nothing while 120 messages of 96 KiB
// (far more than the sockets' buffers) go to it and to a reading client in
// the same delivery, the stalled one first: the reading client gets all of
// them while the other still reads nothing; then the stalled client reads,
// and gets every message, whole and in order (its writer went on from where
// the socket stopped taking bytes).
func TestFanoutPastAStalledRecipient(t *testing.T) {
	h := newHarness(t, func(o *harnessOpts) {
		o.cfg.Heartbeat = time.Minute
		o.cfg.SendQueueBytes = 64 << 20
	})
	stalled := h.dialRaw("stalled", wire.SubprotocolProto) // nothing read yet, not even the Welcome
	reading := h.dialRaw("reading", wire.SubprotocolProto)
	var got atomic.Int64
	readerDone := make(chan error, 1)
	go func() {
		for {
			_, data, err := reading.ReadMessage()
			if err != nil {
				readerDone <- err
				return
			}
			f, err := (wire.Codec{Binary: true}).DecodeServer(data)
			if err != nil {
				readerDone <- err
				return
			}
			if f.GetMessage() != nil {
				got.Add(1)
			}
		}
	}()
	h.waitConnections(2)

	const messages = 120
	text := strings.Repeat("x", 96<<10)
	for i := range messages {
		d := &parleyv1.Delivery{UserIds: []string{"stalled", "reading"}, Body: &parleyv1.Delivery_Message{Message: &parleyv1.Message{
			ConversationId: "g:1", Seq: uint64(i + 1), Text: fmt.Sprint(i, text),
		}}}
		if n := h.g.deliver(d); n != 2 {
			t.Fatalf("message %d queued on %d sessions, want 2", i, n)
		}
	}
	eventually(t, "the reading client has every message", func() bool { return got.Load() == messages })

	_ = stalled.SetReadDeadline(time.Now().Add(waitFor))
	seq := uint64(0)
	for seq < messages {
		mt, data, err := stalled.ReadMessage()
		if err != nil {
			t.Fatalf("stalled client, after message %d: %v", seq, err)
		}
		if mt != websocket.BinaryMessage {
			t.Fatalf("stalled client: message type %d", mt)
		}
		f, err := (wire.Codec{Binary: true}).DecodeServer(data)
		if err != nil {
			t.Fatalf("stalled client, after message %d: %v", seq, err)
		}
		m := f.GetMessage()
		if m == nil {
			continue // the Welcome
		}
		if m.GetSeq() != seq+1 || m.GetText() != fmt.Sprint(seq, text) {
			t.Fatalf("stalled client: got seq %d (%d bytes of text), want seq %d whole", m.GetSeq(), len(m.GetText()), seq+1)
		}
		seq++
	}
	select {
	case err := <-readerDone:
		t.Fatalf("reading client: %v", err)
	default:
	}
}

// fullConn is a connection whose socket takes nothing without waiting
// (TryWriteFrames writes 0 bytes) and whose blocking writes wait until
// release is closed, then record what they wrote.
type fullConn struct {
	transportConn
	release chan struct{}
	wrote   chan []byte
}

func (c *fullConn) TryWriteFrames([][]byte) (int, error) { return 0, nil }

func (c *fullConn) WriteFrames(frames [][]byte, _ time.Duration) error {
	<-c.release
	for _, f := range frames {
		c.wrote <- append([]byte(nil), f...)
	}
	return nil
}

// readyConn is a connection whose socket takes every frame at once.
type readyConn struct {
	transportConn
	wrote chan []byte
}

func (c *readyConn) TryWriteFrames(frames [][]byte) (int, error) {
	n := 0
	for _, f := range frames {
		c.wrote <- append([]byte(nil), f...)
		n += len(f)
	}
	return n, nil
}

func (c *readyConn) WriteFrames(frames [][]byte, _ time.Duration) error {
	for _, f := range frames {
		c.wrote <- append([]byte(nil), f...)
	}
	return nil
}

// TestStartWritersPastAFullSocket: the sessions startWriters is given
// (few, each on a writer goroutine of its own, or many, written without
// waiting by goroutines serving writerChunk each): a session whose socket
// takes nothing does not hold up the others, and gets its frame once its
// socket takes it, from a writer of its own.
func TestStartWritersPastAFullSocket(t *testing.T) {
	for _, n := range []int{2, writerChunk + 3} {
		t.Run(fmt.Sprint(n, " sessions"), func(t *testing.T) {
			g := &Gateway{cfg: Config{WriteTimeout: 5 * time.Second, SendQueue: 8, SendQueueBytes: 1 << 20}}
			full := &fullConn{release: make(chan struct{}), wrote: make(chan []byte, 1)}
			ready := &readyConn{wrote: make(chan []byte, n)}
			starts := []*session{{g: g, conn: full}}
			for len(starts) < n {
				starts = append(starts, &session{g: g, conn: ready})
			}
			for _, s := range starts {
				queued, start := s.put(outFrame{wire: []byte("frame"), size: 5})
				if !queued || !start {
					t.Fatalf("put: queued %v, start %v; want both", queued, start)
				}
			}
			startWriters(starts)
			for i := 1; i < n; i++ {
				select {
				case f := <-ready.wrote:
					if string(f) != "frame" {
						t.Fatalf("a ready session got %q", f)
					}
				case <-time.After(waitFor):
					t.Fatalf("%d of %d ready sessions written: the others waited for the full socket", i-1, n-1)
				}
			}
			close(full.release)
			select {
			case f := <-full.wrote:
				if string(f) != "frame" {
					t.Fatalf("the full socket's session got %q", f)
				}
			case <-time.After(waitFor):
				t.Fatal("the full socket's frame was never written")
			}
		})
	}
}

// TestAbortFinishesAFrameBegun: a session aborted (a slow consumer's close
// without flush) while its writer is inside a frame still writes that
// frame's rest, and nothing after it, so the close frame that follows
// cannot land inside a data frame.
func TestAbortFinishesAFrameBegun(t *testing.T) {
	ready := &readyConn{wrote: make(chan []byte, 4)}
	s := &session{g: &Gateway{cfg: Config{WriteTimeout: 5 * time.Second}}, conn: ready}
	s.abort.Store(true)
	w := batchWriter{batch: []outFrame{{wire: []byte("first frame")}, {wire: []byte("second frame")}}, off: 6}
	if err := s.writeBatch(&w); err != nil {
		t.Fatal(err)
	}
	if got := <-ready.wrote; string(got) != "frame" {
		t.Fatalf("wrote %q, want the first frame's rest %q", got, "frame")
	}
	select {
	case got := <-ready.wrote:
		t.Fatalf("wrote %q after the frame begun, on an aborted session", got)
	default:
	}
	w = batchWriter{batch: []outFrame{{wire: []byte("third frame")}}}
	if err := s.writeBatch(&w); err != nil || len(ready.wrote) != 0 {
		t.Fatalf("an aborted session at a frame boundary wrote %d frames (%v), want none", len(ready.wrote), err)
	}
}

// partConn is a connection whose socket takes the first take bytes of a
// TryWriteFrames and no more; its blocking writes take everything. It
// records the bytes in the order they were written, and counts the
// blocking writes.
type partConn struct {
	transportConn
	take     int
	mu       sync.Mutex
	got      []byte
	blocking int
}

func (c *partConn) TryWriteFrames(frames [][]byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, f := range frames {
		k := min(len(f), c.take-n)
		c.got = append(c.got, f[:k]...)
		n += k
	}
	return n, nil
}

func (c *partConn) WriteFrames(frames [][]byte, _ time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.blocking++
	for _, f := range frames {
		c.got = append(c.got, f...)
	}
	return nil
}

// TestFanOutWritesQueuedFramesWithoutWaiting: a fan-out's writer
// (writeNow) that finds several frames queued for a session writes them
// all without waiting when the socket takes them, with no blocking write
// (no writer goroutine of the session's own); when the socket takes only
// part, up to inside a frame or to a frame's end, the session's own writer
// goes on from the first byte not taken, and the bytes arrive whole and in
// order.
func TestFanOutWritesQueuedFramesWithoutWaiting(t *testing.T) {
	frames := []string{"first frame", "second frame", "third frame"}
	all := strings.Join(frames, "")
	for _, take := range []int{len(all), 0, 5, len(frames[0]), len(frames[0]) + 3, len(all) - 1} {
		t.Run(fmt.Sprint("socket takes ", take), func(t *testing.T) {
			g := &Gateway{cfg: Config{WriteTimeout: 5 * time.Second, SendQueue: 8, SendQueueBytes: 1 << 20}}
			c := &partConn{take: take}
			s := &session{g: g, conn: c}
			for i, f := range frames {
				queued, start := s.put(outFrame{wire: []byte(f), size: len(f)})
				if !queued || start != (i == 0) {
					t.Fatalf("put %d: queued %v, start %v", i, queued, start)
				}
			}
			s.writeNow()
			deadline := time.Now().Add(waitFor)
			for {
				s.mu.Lock()
				done := !s.writing
				s.mu.Unlock()
				if done || time.Now().After(deadline) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if string(c.got) != all {
				t.Fatalf("wrote %q, want %q", c.got, all)
			}
			wantBlocking := 0
			if take < len(all) {
				wantBlocking = 1
			}
			if c.blocking != wantBlocking {
				t.Fatalf("%d blocking writes, want %d", c.blocking, wantBlocking)
			}
		})
	}
}

// TestAdvance: a batch's position after n written bytes, through whole
// frames, into one, and past empty ones (which the non-blocking writer
// must not loop on).
func TestAdvance(t *testing.T) {
	batch := []outFrame{{wire: []byte("abc")}, {wire: nil}, {wire: []byte("de")}, {wire: nil}}
	for _, c := range []struct{ from, n, next, off int }{
		{0, 0, 0, 0}, {0, 2, 0, 2}, {0, 3, 2, 0}, {0, 4, 2, 1}, {0, 5, 4, 0}, {3, 0, 4, 0},
	} {
		w := batchWriter{batch: batch, next: c.from}
		w.advance(c.n)
		if w.next != c.next || w.off != c.off {
			t.Errorf("from frame %d, %d bytes: at frame %d byte %d, want frame %d byte %d", c.from, c.n, w.next, w.off, c.next, c.off)
		}
	}
	s := &session{g: &Gateway{cfg: Config{WriteTimeout: time.Second}}, conn: &partConn{take: 0}}
	w := batchWriter{batch: []outFrame{{wire: nil}, {wire: nil}}}
	if err := s.tryWriteBatch(&w); err != nil || w.next != 2 {
		t.Fatalf("a batch of empty frames: at frame %d (%v), want past both", w.next, err)
	}
}
