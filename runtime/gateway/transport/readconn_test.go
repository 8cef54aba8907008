package transport

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleychat/parley/runtime/gateway/transport/transporttest"
)

// TestFrameConnStopsAtFrameEnds: whatever sizes its reader asks for,
// frameConn hands on every byte in order and never a byte past the end of
// the frame being read, and reports idle exactly at a frame boundary with
// nothing read ahead; across all header length forms.
func TestFrameConnStopsAtFrameEnds(t *testing.T) {
	var stream []byte
	var ends []int // offset of each frame's end
	for _, n := range []int{0, 1, 125, 126, 200, 65535, 65536, 70000, 3} {
		stream = append(stream, transporttest.ClientFrame(2, bytes.Repeat([]byte{'x'}, n))...)
		ends = append(ends, len(stream))
	}
	for _, chunk := range []int{1, 7, 512, 4096, 1 << 20} {
		client, server := net.Pipe()
		go func() {
			// Everything at once, as a client sending frames back to back.
			_, _ = client.Write(stream)
			client.Close()
		}()
		var fc frameConn
		fc.init(server)
		var got []byte
		buf := make([]byte, chunk)
		for {
			n, err := fc.Read(buf)
			got = append(got, buf[:n]...)
			for _, end := range ends {
				if len(got)-n < end && len(got) > end {
					t.Fatalf("chunk %d: one read crossed the frame end at %d (read %d..%d)", chunk, end, len(got)-n, len(got))
				}
			}
			// idle: at a frame boundary with nothing read ahead.
			if atEnd := len(got) > 0 && contains(ends, len(got)); fc.idle() != (atEnd && len(fc.buf) == 0) {
				t.Fatalf("chunk %d: idle()=%v after %d bytes (frame boundary %v, %d bytes read ahead)", chunk, fc.idle(), len(got), atEnd, len(fc.buf))
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("chunk %d: %v", chunk, err)
			}
		}
		if !bytes.Equal(got, stream) {
			t.Fatalf("chunk %d: read %d bytes, want the %d sent, in order", chunk, len(got), len(stream))
		}
		server.Close()
	}
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// echoServer serves Conns that echo every message back as one frame (of
// the same type) through WriteFrames, and reports each Conn's end on ended.
func echoServer(t *testing.T, readLimit int64) (url string, ended <-chan error) {
	t.Helper()
	ch := make(chan error, 16)
	up := websocket.Upgrader{ReadBufferSize: 512}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Upgrade(&up, w, r, readLimit)
		if err != nil {
			return
		}
		if c.ws.NetConn() != net.Conn(&c.fc) || c.fc.raw == nil {
			// Serve would still work, waiting inside gorilla: the
			// idle-memory path would be lost without a failure.
			t.Error("gorilla does not read through the Conn's frameConn, or it has no raw connection to wait on")
		}
		go c.Serve(&echo{c: c, ended: ch})
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http"), ch
}

type echo struct {
	c     *Conn
	ended chan<- error
}

func (e *echo) HandleFrame(mt int, data []byte) {
	frame := make([]byte, HeaderSize(len(data)), HeaderSize(len(data))+len(data))
	PutHeader(frame, mt == BinaryMessage, len(data))
	frame = append(frame, data...)
	_ = e.c.WriteFrames([][]byte{frame}, 10*time.Second)
}

// HandlePing answers a ping as the gateway does: through WriteFrames.
func (e *echo) HandlePing(payload []byte) {
	_ = e.c.WriteFrames([][]byte{PongFrame(payload)}, 10*time.Second)
}

// ReadEnded answers a message over the limit as ErrTooLarge asks: a last
// frame naming the problem, close 1009, the rest drained; then it closes.
func (e *echo) ReadEnded(err error) {
	if errors.Is(err, ErrTooLarge) {
		last := []byte("too large")
		frame := make([]byte, HeaderSize(len(last)), HeaderSize(len(last))+len(last))
		PutHeader(frame, false, len(last))
		_ = e.c.WriteFrames([][]byte{append(frame, last...)}, 10*time.Second)
		_ = e.c.WriteClose(websocket.CloseMessageTooBig, "")
		e.c.Linger(2 * time.Second)
	}
	_ = e.c.Close()
	e.ended <- err
}

// TestServeBackToBack: messages a client sends in one TCP write (a
// WebSocket ping among them) are all handled, in order, none left waiting
// in a buffer while the reader waits on the socket; the ping is answered,
// and LastRead moves on.
func TestServeBackToBack(t *testing.T) {
	url, _ := echoServer(t, 1<<16)
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var burst []byte
	burst = append(burst, transporttest.ClientFrame(opBinary, []byte("one"))...)
	burst = append(burst, transporttest.ClientFrame(0x9, []byte("ws-ping"))...)
	burst = append(burst, transporttest.ClientFrame(opText, []byte("two"))...)
	burst = append(burst, transporttest.ClientFrame(opBinary, bytes.Repeat([]byte{'3'}, 300))...)
	pongs := make(chan string, 1)
	c.SetPongHandler(func(d string) error { pongs <- d; return nil })
	if _, err := c.UnderlyingConn().Write(burst); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second)) // a hang guard
	for i, want := range []struct {
		mt   int
		data string
	}{{BinaryMessage, "one"}, {TextMessage, "two"}, {BinaryMessage, strings.Repeat("3", 300)}} {
		mt, data, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if mt != want.mt || string(data) != want.data {
			t.Fatalf("echo %d: type %d, %.20q; want type %d, %.20q", i, mt, data, want.mt, want.data)
		}
	}
	select {
	case d := <-pongs:
		if d != "ws-ping" {
			t.Fatalf("pong %q, want ws-ping", d)
		}
	default:
		t.Fatal("no pong for the ping in the burst")
	}
}

// TestServeEnds: Serve ends with ErrTooLarge for a message over the read
// limit, in one frame or in fragments, having answered nothing itself, so
// the handler's last frame and its close 1009 reach the client, in that
// order, and are not lost to a reset although the client's bytes were not
// all read; and with ErrPeerClosed for a normal close.
func TestServeEnds(t *testing.T) {
	url, ended := echoServer(t, 100)
	wait := func() error {
		select {
		case err := <-ended:
			return err
		case <-time.After(30 * time.Second): // a hang guard
			t.Fatal("Serve did not end")
			return nil
		}
	}

	for _, tc := range []struct {
		name string
		send func(*websocket.Conn) error
	}{
		{"one frame", func(c *websocket.Conn) error {
			// 100 KiB: far more than the socket buffers take while
			// nobody reads, which a close without draining would reset.
			return c.WriteMessage(websocket.BinaryMessage, make([]byte, 100<<10))
		}},
		{"fragments", func(c *websocket.Conn) error {
			// 120 bytes through a 64-byte write buffer: frames of at most
			// 64 bytes, each under the limit of 100, the message over it.
			return c.WriteMessage(websocket.TextMessage, []byte(strings.Repeat("a", 120)))
		}},
	} {
		dialer := websocket.Dialer{WriteBufferSize: 64}
		big, _, err := dialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer big.Close()
		sent := make(chan error, 1)
		go func() { sent <- tc.send(big) }()
		if err := wait(); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%s over the limit: Serve ended with %v, want ErrTooLarge", tc.name, err)
		}
		_ = big.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, data, err := big.ReadMessage(); err != nil || string(data) != "too large" {
			t.Fatalf("%s over the limit: client read %q, %v; want the handler's last frame", tc.name, data, err)
		}
		if _, _, err := big.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			t.Fatalf("%s over the limit: client read %v, want close 1009", tc.name, err)
		}
		<-sent
	}

	bye, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bye.Close()
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if err := bye.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := wait(); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("normal close: Serve ended with %v, want ErrPeerClosed", err)
	}
}

// TestEarlyBytesReachGorilla: a frame sent in the same write as the
// upgrade request, before the handshake response (which the HTTP server's
// reader buffers), is read and handled, not lost.
func TestEarlyBytesReachGorilla(t *testing.T) {
	url, _ := echoServer(t, 1<<16)
	addr := strings.TrimPrefix(url, "ws://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "GET / HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := conn.Write(append([]byte(req), transporttest.ClientFrame(opBinary, []byte("early"))...)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // a hang guard
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v, %v", resp, err)
	}
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(br, hdr); err != nil {
		t.Fatalf("no echo of the early frame: %v", err)
	}
	payload := make([]byte, hdr[1]&0x7f)
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatal(err)
	}
	if hdr[0] != finBit|opBinary || string(payload) != "early" {
		t.Fatalf("echo %x %q, want a final binary frame \"early\"", hdr[0], payload)
	}
}
