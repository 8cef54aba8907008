package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestWriteFrames: frames built with PutHeader and written by WriteFrames
// are read by an independent WebSocket implementation (gorilla's client) as
// one message each, of the right type and payload, at every RFC 6455 length
// form's boundary (125/126 bytes, 65535/65536 bytes), when several go out in
// one writev and when one goes alone, and interleaved with a pong.
func TestWriteFrames(t *testing.T) {
	sizes := []int{0, 125, 126, 65535, 65536, 70000}
	for _, binary := range []bool{true, false} {
		t.Run(map[bool]string{true: "binary", false: "text"}[binary], func(t *testing.T) {
			payloads := make([][]byte, len(sizes))
			frames := make([][]byte, len(sizes))
			for i, n := range sizes {
				payloads[i] = bytes.Repeat([]byte{byte('a' + i)}, n)
				h := HeaderSize(n)
				frames[i] = make([]byte, h, h+n)
				PutHeader(frames[i], binary, n)
				frames[i] = append(frames[i], payloads[i]...)
				want := 10 // RFC 6455 §5.2: 7-bit, 16-bit and 64-bit lengths
				switch {
				case n <= 125:
					want = 2
				case n <= 65535:
					want = 4
				}
				if h != want {
					t.Fatalf("HeaderSize(%d) = %d, want %d", n, h, want)
				}
			}
			addr := connServer(t, 1<<20, func(c *Conn) {
				defer c.Close()
				deadline := 5 * time.Second
				if err := c.WriteFrames(frames[:3], deadline); err != nil { // one writev of three
					t.Error(err)
				}
				if err := c.WriteFrames([][]byte{PongFrame([]byte("between"))}, deadline); err != nil {
					t.Error(err)
				}
				if err := c.WriteFrames(frames[3:4], deadline); err != nil { // one frame alone
					t.Error(err)
				}
				if err := c.WriteFrames(frames[4:], deadline); err != nil {
					t.Error(err)
				}
				_ = c.fc.waitReadable() // until the client closes
			})
			c, _, err := websocket.DefaultDialer.Dial("ws://"+addr, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			pongs := 0
			c.SetPongHandler(func(d string) error {
				if d == "between" {
					pongs++
				}
				return nil
			})
			wantType := TextMessage
			if binary {
				wantType = BinaryMessage
			}
			for i, want := range payloads {
				mt, data, err := c.ReadMessage()
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if mt != wantType || !bytes.Equal(data, want) {
					t.Fatalf("frame %d: type %d, %d bytes; want type %d, %d bytes", i, mt, len(data), wantType, len(want))
				}
			}
			if pongs != 1 {
				t.Fatalf("read %d pongs \"between\" among the frames, want 1", pongs)
			}
		})
	}
}

// TestWriteFramesDeadline: WriteFrames moves the socket's write deadline only
// now and then, yet a write after the previous deadline has passed still
// succeeds (the deadline was moved before it), and a write the peer does not
// read fails with a timeout instead of blocking its writer for good.
func TestWriteFramesDeadline(t *testing.T) {
	const timeout = 200 * time.Millisecond
	frame := make([]byte, 2, 2+5)
	PutHeader(frame, false, 5)
	frame = append(frame, "hello"...)

	server, client := net.Pipe() // a write blocks until the peer reads it
	defer client.Close()
	c := &Conn{}
	c.fc.Conn = server
	go func() { _, _ = io.Copy(io.Discard, client) }()
	for i := range 3 {
		if err := c.WriteFrames([][]byte{frame}, timeout); err != nil {
			t.Fatalf("write %d to a reading peer: %v", i, err)
		}
		if err := c.WriteFrames([][]byte{frame, frame}, timeout); err != nil {
			t.Fatalf("writev %d to a reading peer: %v", i, err)
		}
		time.Sleep(timeout * 3 / 2) // past the deadline the last write set
	}
	// A close frame's write moves the deadline to its own (1 s) right
	// after WriteFrames set one: the next WriteFrames must not trust the
	// deadline it set itself, however long (here an hour) it still has.
	if err := c.WriteFrames([][]byte{frame}, time.Hour); err != nil {
		t.Fatalf("write to a reading peer: %v", err)
	}
	if err := c.writeClose(websocket.CloseGoingAway, "bye"); err != nil {
		t.Fatalf("close frame: %v", err)
	}
	time.Sleep(closeWait * 3 / 2) // past the close frame's deadline
	if err := c.WriteFrames([][]byte{frame}, time.Hour); err != nil {
		t.Fatalf("write after a close frame moved the deadline: %v", err)
	}
	_ = server.Close()

	stalled, peer := net.Pipe() // nobody reads peer
	defer peer.Close()
	defer stalled.Close()
	c = &Conn{}
	c.fc.Conn = stalled
	done := make(chan error, 1)
	go func() { done <- c.WriteFrames([][]byte{frame}, timeout) }()
	select {
	case err := <-done:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("write to a peer that does not read: %v, want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("write to a peer that does not read still blocked after 10s: no deadline")
	}
}

// BenchmarkWriteFrames writes one 200-byte frame per op to a loopback TCP
// peer that discards what it reads: "moved" moves the write deadline only
// when less than half of the timeout is left (WriteFrames as it is),
// "every" moves it before every write as well (what WriteFrames did before,
// measured in the same run as its peer).
func BenchmarkWriteFrames(b *testing.B) {
	frame := make([]byte, HeaderSize(200), HeaderSize(200)+200)
	PutHeader(frame, true, 200)
	frame = append(frame, bytes.Repeat([]byte{'x'}, 200)...)
	for _, every := range []bool{false, true} {
		b.Run(map[bool]string{false: "moved", true: "every"}[every], func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				peer, err := ln.Accept()
				if err != nil {
					return
				}
				defer peer.Close()
				_, _ = io.Copy(io.Discard, peer)
			}()
			nc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			c := &Conn{}
			c.fc.Conn = nc
			frames := make([][]byte, 1)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if every {
					_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
				}
				frames[0] = frame
				if err := c.WriteFrames(frames, 10*time.Second); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestPartialWriteKeepsFramesWhole: a TryWriteFrames that the socket takes
// only in part leaves the socket to the rest of that frame; a close frame
// written meanwhile (as the reader answers a peer's close) waits, and the
// client reads the whole data frame, then the close.
func TestPartialWriteKeepsFramesWhole(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	frame := binaryFrame(payload)

	ready := make(chan struct{})
	srvErr := make(chan error, 3)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Upgrade(&up, w, r, 1<<20)
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		if tc, ok := c.fc.Conn.(*net.TCPConn); ok {
			_ = tc.SetWriteBuffer(4096)
		}
		n, err := c.TryWriteFrames([][]byte{frame})
		if err != nil || n <= 0 || n >= len(frame) {
			srvErr <- fmt.Errorf("TryWriteFrames of %d bytes to a client not reading: %d, %v; want a part", len(frame), n, err)
			close(ready)
			return
		}
		closed := make(chan error, 1)
		go func() {
			closed <- c.writeClose(websocket.CloseNormalClosure, "bye")
		}()
		time.Sleep(100 * time.Millisecond) // the close writer is at the socket now
		close(ready)
		if err := c.WriteFrames([][]byte{frame[n:]}, 10*time.Second); err != nil {
			srvErr <- fmt.Errorf("rest of the frame: %w", err)
		}
		if err := <-closed; err != nil {
			srvErr <- fmt.Errorf("close frame: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}))
	defer srv.Close()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-ready
	wantMessagesThenClose(t, c, srvErr, payload)
}

// wantMessagesThenClose reads payloads from c, each as one whole binary
// message, then the server's close frame (1000); an error the server
// reported on srvErr fails the test first.
func wantMessagesThenClose(t *testing.T, c *websocket.Conn, srvErr <-chan error, payloads ...[]byte) {
	t.Helper()
	failed := func(format string, args ...any) {
		t.Helper()
		select {
		case err := <-srvErr:
			t.Fatal(err)
		default:
		}
		t.Fatalf(format, args...)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i, p := range payloads {
		mt, data, err := c.ReadMessage()
		if err != nil || mt != websocket.BinaryMessage || !bytes.Equal(data, p) {
			failed("message %d: type %d, %d bytes (equal %v), %v; want the whole %d-byte frame", i, mt, len(data), bytes.Equal(data, p), err, len(p))
		}
	}
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		failed("after the frames: %v, want the close frame (1000)", err)
	}
	select {
	case err := <-srvErr:
		t.Fatal(err)
	default:
	}
}

// binaryFrame returns p as one complete binary frame.
func binaryFrame(p []byte) []byte {
	f := make([]byte, HeaderSize(len(p)), HeaderSize(len(p))+len(p))
	PutHeader(f, true, len(p))
	return append(f, p...)
}

// TestTryWriteFramesWritesSeveral: TryWriteFrames hands several frames to
// one writev; a socket that takes them all gets them whole, and one that
// takes part (a client not reading, a small send buffer) leaves the socket
// locked inside the frame it stopped in only: the rest, written with
// WriteFrames from the first byte not taken, arrives whole and in order.
func TestTryWriteFramesWritesSeveral(t *testing.T) {
	for _, size := range []int{100, 300 << 10} {
		t.Run(fmt.Sprint(size, " bytes a frame"), func(t *testing.T) {
			var payloads, frames [][]byte
			for i := range 5 {
				p := bytes.Repeat([]byte{byte('a' + i)}, size)
				payloads, frames = append(payloads, p), append(frames, binaryFrame(p))
			}
			srvErr := make(chan error, 2)
			addr := connServer(t, 1<<20, func(c *Conn) {
				defer c.Close()
				if tc, ok := c.fc.Conn.(*net.TCPConn); ok {
					_ = tc.SetWriteBuffer(4096)
				}
				n, err := c.TryWriteFrames(append([][]byte(nil), frames...))
				if err != nil || n <= 0 {
					srvErr <- fmt.Errorf("TryWriteFrames: %d, %v; want some bytes written", n, err)
					return
				}
				rest := append([][]byte(nil), frames...)
				for len(rest) > 0 && n >= len(rest[0]) {
					n -= len(rest[0])
					rest = rest[1:]
				}
				if len(rest) > 0 {
					if size == 100 {
						srvErr <- fmt.Errorf("TryWriteFrames left %d of 5 small frames to a reading client", len(rest))
						return
					}
					rest[0] = rest[0][n:]
					if err := c.WriteFrames(rest, 10*time.Second); err != nil {
						srvErr <- fmt.Errorf("the rest: %w", err)
						return
					}
				} else if size != 100 {
					srvErr <- fmt.Errorf("TryWriteFrames took 5 frames of %d bytes whole; want a part (send buffer 4 KiB)", size)
					return
				}
				if err := c.writeClose(websocket.CloseNormalClosure, "bye"); err != nil {
					srvErr <- fmt.Errorf("close frame: %w", err)
				}
				time.Sleep(100 * time.Millisecond)
			})
			c, _, err := websocket.DefaultDialer.Dial("ws://"+addr, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if size > 100 {
				time.Sleep(100 * time.Millisecond) // the server's first write finds the socket full
			}
			wantMessagesThenClose(t, c, srvErr, payloads...)
		})
	}
}

// TestInsideFrame: where a partial write stops, inside a frame or at one's
// end.
func TestInsideFrame(t *testing.T) {
	frames := [][]byte{[]byte("abc"), []byte("de"), []byte("f")}
	for n, want := range map[int]bool{0: false, 1: true, 2: true, 3: false, 4: true, 5: false, 6: false, 7: false} {
		if got := insideFrame(frames, n); got != want {
			t.Errorf("insideFrame(%d) = %v, want %v", n, got, want)
		}
	}
}
