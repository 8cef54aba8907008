package transport

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleychat/parley/runtime/gateway/transport/transporttest"
)

// TestReaderStopsAtMessageEnds: the reader returns each message as soon as
// its last byte has arrived, never waiting for a byte past it (a client
// here sends the next message only once the previous one was returned, so
// a reader that read on would hang), in chunks of every size, across all
// header length forms, with pings between messages and inside a fragmented
// one handed on in order, and nothing read ahead once a message is
// returned: the connection may park.
func TestReaderStopsAtMessageEnds(t *testing.T) {
	frag := func(op byte, payload []byte, fin bool) []byte {
		f := transporttest.ClientFrame(op, payload)
		if !fin {
			f[0] &^= finBit
		}
		return f
	}
	type msg struct {
		stream []byte
		mt     int    // 0: a ping alone
		want   string // the message, or the ping's payload
		pings  []string
	}
	var msgs []msg
	for _, n := range []int{0, 1, 7, 8, 9, 125, 126, 200, 65535, 65536, 70000} {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i*7 + n)
		}
		msgs = append(msgs, msg{stream: transporttest.ClientFrame(opBinary, p), mt: BinaryMessage, want: string(p)})
	}
	msgs = append(msgs,
		msg{stream: transporttest.ClientFrame(opPing, []byte("alone")), pings: []string{"alone"}},
		msg{stream: slices.Concat(frag(opText, []byte("frag"), false), transporttest.ClientFrame(opPing, []byte("inside")),
			frag(0, []byte("mented "), false), transporttest.ClientFrame(opPong, nil), frag(0, []byte("text"), true)),
			mt: TextMessage, want: "fragmented text", pings: []string{"inside"}},
		msg{stream: transporttest.ClientFrame(opText, []byte("last")), mt: TextMessage, want: "last"},
	)
	for _, chunk := range []int{1, 3, 7, 512, 1 << 20} {
		client, server := net.Pipe()
		rec := &recorder{}
		c := &Conn{readLimit: 1 << 20, h: rec}
		c.fc.init(server)
		for i, m := range msgs {
			go func() {
				for b := m.stream; len(b) > 0; b = b[min(chunk, len(b)):] {
					if _, err := client.Write(b[:min(chunk, len(b))]); err != nil {
						return
					}
				}
			}()
			_ = server.SetReadDeadline(time.Now().Add(10 * time.Second)) // a hang guard
			rec.pings = nil
			mt, got, err := c.next()
			if err != nil {
				t.Fatalf("chunk %d, message %d: %v", chunk, i, err)
			}
			if m.mt == 0 {
				if got != nil {
					t.Fatalf("chunk %d, message %d: a message for a lone ping", chunk, i)
				}
			} else if got == nil || mt != m.mt || string(*got) != m.want {
				t.Fatalf("chunk %d, message %d: type %d, %v; want type %d, %d bytes", chunk, i, mt, got != nil, m.mt, len(m.want))
			}
			if !slices.Equal(rec.pings, m.pings) {
				t.Fatalf("chunk %d, message %d: pings %q, want %q", chunk, i, rec.pings, m.pings)
			}
			if !c.fc.idle() || c.fc.ahead != nil {
				t.Fatalf("chunk %d, message %d: %d bytes read ahead after the message (pooled buffer held: %v)", chunk, i, len(c.fc.buf), c.fc.ahead != nil)
			}
		}
		client.Close()
		server.Close()
	}
}

// recorder is a Handler that records pings.
type recorder struct{ pings []string }

func (r *recorder) HandleFrame(int, []byte)   {}
func (r *recorder) HandlePing(payload []byte) { r.pings = append(r.pings, string(payload)) }
func (r *recorder) ReadEnded(error)           {}

// echoServer serves Conns that echo every message back as one frame (of
// the same type) through WriteFrames, and reports each Conn's end on ended.
func echoServer(t *testing.T, readLimit int64) (url string, ended <-chan error) {
	t.Helper()
	return lingerServer(t, readLimit, 2*time.Second)
}

// lingerServer is echoServer whose Conns linger for d after a message over
// the limit or a protocol error.
func lingerServer(t *testing.T, readLimit int64, d time.Duration) (url string, ended <-chan error) {
	t.Helper()
	ch := make(chan error, 16)
	addr := connServer(t, readLimit, func(c *Conn) {
		if c.fc.raw == nil {
			// Serve would still work, waiting on a goroutine: the
			// idle-memory path would be lost without a failure.
			t.Error("the Conn has no raw connection to wait on")
		}
		go c.Serve(&echo{c: c, ended: ch, linger: d})
	})
	return "ws://" + addr, ch
}

// connServer hands each Conn it upgrades (read limit readLimit) to handle,
// on the request's goroutine, and returns its host:port.
func connServer(t *testing.T, readLimit int64, handle func(*Conn)) string {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := Upgrade(&up, w, r, readLimit); err == nil {
			handle(c)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

type echo struct {
	c      *Conn
	ended  chan<- error
	linger time.Duration
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

// ReadEnded answers a message over the limit as ErrTooLarge asks (a last
// frame naming the problem, close 1009, the rest drained) and drains after
// a protocol error, as the gateway's session does; then it closes.
func (e *echo) ReadEnded(err error) {
	switch {
	case errors.Is(err, ErrTooLarge):
		last := []byte("too large")
		frame := make([]byte, HeaderSize(len(last)), HeaderSize(len(last))+len(last))
		PutHeader(frame, false, len(last))
		_ = e.c.WriteFrames([][]byte{append(frame, last...)}, 10*time.Second)
		_ = e.c.WriteClose(websocket.CloseMessageTooBig, "")
		e.c.Linger(e.linger)
	case errors.Is(err, ErrProtocol):
		e.c.Linger(e.linger)
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

// TestEarlyBytesRead: a frame sent in the same write as the
// upgrade request, before the handshake response (which the HTTP server's
// reader buffers), is read and handled, not lost.
func TestEarlyBytesRead(t *testing.T) {
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

// TestProtocolErrors: every frame the protocol does not allow where it
// stands is refused whatever length it declares (the reader does not wait
// for a payload it will not read): the client gets a close frame with 1002
// (1007 for a close reason that is not UTF-8) and Serve ends with
// ErrProtocol. A valid close frame is echoed with its code (an empty one
// with an empty close) and ends Serve with the peer's code.
func TestProtocolErrors(t *testing.T) {
	huge := func(b0 byte) []byte { // a masked frame header declaring 256 MiB
		return []byte{b0, maskBit | len64, 0, 0, 0, 0, 0x10, 0, 0, 0, 1, 2, 3, 4}
	}
	closeFrame := func(code int, reason string) []byte {
		p := binary.BigEndian.AppendUint16(nil, uint16(code))
		return transporttest.ClientFrame(opClose, append(p, reason...))
	}
	started := transporttest.ClientFrame(opText, []byte("started"))
	started[0] &^= finBit
	url, ended := echoServer(t, 1<<16)
	addr := strings.TrimPrefix(url, "ws://")
	for _, tc := range []struct {
		name  string
		frame []byte
		code  int // the close code the server answers with; -1: an empty close
		end   error
	}{
		{"unmasked ping", []byte{finBit | opPing, 0}, 1002, ErrProtocol},
		{"unmasked text", []byte{finBit | opText, 2, 'h', 'i'}, 1002, ErrProtocol},
		{"ping of 126 bytes", append([]byte{finBit | opPing, maskBit | len16, 0, 126, 1, 2, 3, 4}, make([]byte, 126)...), 1002, ErrProtocol},
		{"fragmented ping", []byte{opPing, maskBit, 1, 2, 3, 4}, 1002, ErrProtocol},
		{"RSV1 (no compression negotiated)", huge(finBit | 0x40 | opBinary), 1002, ErrProtocol},
		{"RSV3", huge(finBit | 0x10 | opBinary), 1002, ErrProtocol},
		{"opcode 3 of 256 MiB", huge(finBit | 0x3), 1002, ErrProtocol},
		{"opcode 0xb", huge(finBit | 0xb), 1002, ErrProtocol},
		{"continuation of 256 MiB with no message started", huge(finBit), 1002, ErrProtocol},
		{"new message inside a fragmented one", slices.Concat(started, transporttest.ClientFrame(opText, []byte("x"))), 1002, ErrProtocol},
		{"length with the top bit set", []byte{finBit | opBinary, maskBit | len64, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, 1002, ErrProtocol},
		{"close of 1 byte", transporttest.ClientFrame(opClose, []byte{3}), 1002, ErrProtocol},
		{"close code 999", closeFrame(999, ""), 1002, ErrProtocol},
		{"close code 1005 (never sent)", closeFrame(1005, ""), 1002, ErrProtocol},
		{"close code 1015 (never sent)", closeFrame(1015, ""), 1002, ErrProtocol},
		{"close code 5000", closeFrame(5000, ""), 1002, ErrProtocol},
		{"close reason not UTF-8", closeFrame(1000, "bye\xff"), 1007, ErrProtocol},
		{"close 1000", closeFrame(1000, "bye"), 1000, ErrPeerClosed},
		{"close 1001", closeFrame(1001, ""), 1001, ErrPeerClosed},
		{"close 4000", closeFrame(4000, "app"), 4000, nil},
		{"empty close", transporttest.ClientFrame(opClose, nil), -1, nil},
	} {
		conn, br := handshake(t, addr)
		if _, err := conn.Write(tc.frame); err != nil {
			t.Fatal(err)
		}
		hdr := make([]byte, 2)
		if _, err := io.ReadFull(br, hdr); err != nil || hdr[0] != finBit|opClose {
			t.Fatalf("%s: client read %x, %v; want a close frame", tc.name, hdr, err)
		}
		payload := make([]byte, hdr[1])
		if _, err := io.ReadFull(br, payload); err != nil {
			t.Fatalf("%s: close payload: %v", tc.name, err)
		}
		switch {
		case tc.code == -1 && len(payload) != 0:
			t.Fatalf("%s: close payload %q, want none", tc.name, payload)
		case tc.code != -1 && (len(payload) < 2 || int(binary.BigEndian.Uint16(payload)) != tc.code):
			t.Fatalf("%s: close payload %q, want code %d", tc.name, payload, tc.code)
		case tc.code == 1002 && len(payload) < 3:
			t.Fatalf("%s: close 1002 names no rule", tc.name)
		}
		conn.Close() // ends the server's linger after a protocol error
		select {
		case err := <-ended:
			var ce *websocket.CloseError
			switch {
			case tc.end != nil && !errors.Is(err, tc.end):
				t.Fatalf("%s: Serve ended with %v, want %v", tc.name, err, tc.end)
			case tc.end == nil && (!errors.As(err, &ce) || ce.Code != max(tc.code, websocket.CloseNoStatusReceived)):
				t.Fatalf("%s: Serve ended with %v, want the peer's close", tc.name, err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: Serve did not end", tc.name)
		}
		conn.Close()
	}
}

// BenchmarkReadMessage reads 40-byte binary messages (a cumulative ack's
// size) from a loopback connection, eight to a TCP write: the reader's cost
// per message, system calls included.
func BenchmarkReadMessage(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	var burst []byte
	for range 8 {
		burst = append(burst, transporttest.ClientFrame(opBinary, make([]byte, 40))...)
	}
	go func() {
		peer, err := ln.Accept()
		if err != nil {
			return
		}
		defer peer.Close()
		for range b.N/8 + 1 {
			if _, err := peer.Write(burst); err != nil {
				return
			}
		}
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	c := &Conn{readLimit: 1 << 16, h: &recorder{}}
	c.fc.init(nc)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		_, msg, err := c.next()
		if err != nil || msg == nil || len(*msg) != 40 {
			b.Fatalf("read: %v", err)
		}
		msgBufs.Put(msg)
	}
}

// streamConn is a net.Conn that reads from a byte slice in reads of at
// most chunk bytes (EOF at its end) and discards writes.
type streamConn struct {
	net.Conn // nil: only Read, Write, Close and the deadlines are used
	data     []byte
	chunk    int
}

func (s *streamConn) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), s.chunk)], s.data)
	s.data = s.data[n:]
	return n, nil
}
func (s *streamConn) Write(p []byte) (int, error)      { return len(p), nil }
func (s *streamConn) Close() error                     { return nil }
func (s *streamConn) SetWriteDeadline(time.Time) error { return nil }
func (s *streamConn) SetReadDeadline(time.Time) error  { return nil }

// FuzzReader feeds arbitrary bytes to the reader, in reads of 1 to 256
// bytes: it must end (an error at the latest when the bytes run out), never
// panic, and never return a message over the read limit. (What it returns
// for well-formed streams is TestReaderStopsAtMessageEnds's.)
func FuzzReader(f *testing.F) {
	frag := func(op byte, p string, fin bool) []byte {
		b := transporttest.ClientFrame(op, []byte(p))
		if !fin {
			b[0] &^= finBit
		}
		return b
	}
	f.Add(transporttest.ClientFrame(opBinary, []byte("hello")), uint8(1))
	f.Add(slices.Concat(frag(opText, "a", false), transporttest.ClientFrame(opPing, []byte("p")), frag(0, "b", true)), uint8(3))
	f.Add(transporttest.ClientFrame(opBinary, bytes.Repeat([]byte{7}, 300)), uint8(200))
	f.Add(transporttest.ClientFrame(opClose, []byte{3, 232, 'b'}), uint8(9))
	f.Add([]byte{finBit | opBinary, maskBit | len64, 0, 0, 0, 0, 0, 0, 0x10, 0, 1, 2, 3, 4}, uint8(14))
	const limit = 1 << 12
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		c := &Conn{readLimit: limit, h: &recorder{}}
		c.fc.init(&streamConn{data: stream, chunk: int(chunk) + 1})
		for range len(stream) + 1 { // each call consumes at least one byte or ends
			_, msg, err := c.next()
			if err != nil {
				return
			}
			if msg != nil && len(*msg) > limit {
				t.Fatalf("a message of %d bytes, over the limit of %d", len(*msg), limit)
			}
		}
		t.Fatal("the reader did not end when the stream did")
	})
}

// handshake dials addr and upgrades by hand, returning the raw connection
// and a reader positioned after the 101 response.
func handshake(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	req := "GET / HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second)) // a hang guard
	br := bufio.NewReader(conn)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v, %v", resp, err)
	}
	return conn, br
}

// readFrame reads one server frame (unmasked, at most 64 KiB): its first
// header byte and its payload.
func readFrame(br *bufio.Reader) (byte, []byte, error) {
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return 0, nil, err
	}
	n := int(hdr[1] & 0x7f)
	if n == len16 {
		ext := make([]byte, 2)
		if _, err := io.ReadFull(br, ext); err != nil {
			return 0, nil, err
		}
		n = int(binary.BigEndian.Uint16(ext))
	}
	p := make([]byte, n)
	_, err := io.ReadFull(br, p)
	return hdr[0], p, err
}

// TestNoFramesAfterClose: once the close frame is sent, data frames and
// pongs written through WriteFrames or TryWriteFrames are dropped (RFC 6455
// §5.5.1): the client reads the close frame, then the end of the stream.
func TestNoFramesAfterClose(t *testing.T) {
	extra := make([]byte, 2, 7)
	PutHeader(extra, false, 5)
	extra = append(extra, "extra"...)
	addr := connServer(t, 1<<16, func(c *Conn) {
		defer c.Close()
		if err := c.WriteClose(websocket.CloseGoingAway, "bye"); err != nil {
			t.Error(err)
		}
		if err := c.WriteFrames([][]byte{extra, PongFrame([]byte("p"))}, time.Second); err != nil {
			t.Error(err)
		}
		if n, err := c.TryWriteFrames([][]byte{extra}); n != len(extra) || err != nil {
			t.Errorf("TryWriteFrames after the close: %d, %v; want it dropped and reported written", n, err)
		}
		if err := c.WriteClose(websocket.CloseNormalClosure, ""); !errors.Is(err, errCloseSent) {
			t.Errorf("a second WriteClose: %v, want errCloseSent", err)
		}
	})
	_, br := handshake(t, addr)
	b0, p, err := readFrame(br)
	if err != nil || b0 != finBit|opClose || len(p) < 2 || binary.BigEndian.Uint16(p) != websocket.CloseGoingAway {
		t.Fatalf("read %#x %q, %v; want the close frame 1001", b0, p, err)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
		t.Fatalf("after the close frame: %q, %v; want the end of the stream", rest, err)
	}
}

// TestLingerAfterProtocolError: a client that sent more after a frame the
// protocol forbids gets the close frame 1002 and then the end of the
// stream, not a reset that would destroy them, although the server never
// read those bytes.
func TestLingerAfterProtocolError(t *testing.T) {
	url, ended := lingerServer(t, 1<<16, 30*time.Second)
	conn, br := handshake(t, strings.TrimPrefix(url, "ws://"))
	bad := transporttest.ClientFrame(opBinary, []byte("rsv"))
	bad[0] |= 0x40
	junk := bytes.Repeat(transporttest.ClientFrame(opBinary, make([]byte, 1000)), 64)
	if _, err := conn.Write(append(bad, junk...)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the server has answered and is draining
	b0, p, err := readFrame(br)
	if err != nil || b0 != finBit|opClose || len(p) < 2 || binary.BigEndian.Uint16(p) != websocket.CloseProtocolError {
		t.Fatalf("read %#x %q, %v; want the close frame 1002", b0, p, err)
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
		t.Fatalf("after the close frame: %d bytes, %v; want the end of the stream, not a reset", len(rest), err)
	}
	// The server half-closed after its close frame; the client closing
	// its side ends the linger long before its 30 s.
	conn.Close()
	lingerEnded(t, ended, ErrProtocol)
}

// lingerEnded waits for a lingering Serve (30 s) to end with want once the
// client has closed: long before its linger would have run out.
func lingerEnded(t *testing.T, ended <-chan error, want error) {
	t.Helper()
	select {
	case err := <-ended:
		if !errors.Is(err, want) {
			t.Fatalf("Serve ended with %v, want %v", err, want)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the server still lingered after the client closed")
	}
}

// TestLingerEndsWithTheHandshake: after a message over the limit, a client
// that answers the close frame 1009 and closes its side (as RFC 6455
// §7.1.1 has it, after the server's TCP close) finds the stream ended after
// the close frame and is not kept waiting for the server's linger.
func TestLingerEndsWithTheHandshake(t *testing.T) {
	url, ended := lingerServer(t, 1<<10, 30*time.Second)
	conn := tooLargeThenEnd(t, strings.TrimPrefix(url, "ws://"))
	if _, err := conn.Write(transporttest.ClientFrame(opClose, []byte{0x03, 0xf1})); err != nil {
		t.Fatal(err)
	}
	conn.Close()
	lingerEnded(t, ended, ErrTooLarge)
}

// TestPingsInsideAMessageAreNotActivity: pings inside a message left
// unfinished are answered but do not move LastRead, so the idle timeout
// still ends a connection that keeps a message open on pings.
func TestPingsInsideAMessageAreNotActivity(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	pinged := make(chan string, 4)
	c := &Conn{readLimit: 1 << 16, h: pingRecorder(pinged)}
	c.fc.init(server)
	c.lastRead.Store(1)
	done := make(chan error, 1)
	go func() { _, _, err := c.next(); done <- err }()
	open := transporttest.ClientFrame(opBinary, []byte("unfinished"))
	open[0] &^= finBit
	for _, f := range [][]byte{open, transporttest.ClientFrame(opPing, []byte("a")), transporttest.ClientFrame(opPing, []byte("b"))} {
		if _, err := client.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		<-pinged
	}
	if got := c.LastRead(); got != 1 {
		t.Fatalf("LastRead moved to %d on pings inside an unfinished message", got)
	}
	client.Close()
	if err := <-done; err == nil {
		t.Fatal("the reader returned no error at the end of the stream")
	}
}

// pingRecorder is a Handler that sends each ping's payload on its channel.
type pingRecorder chan<- string

func (r pingRecorder) HandleFrame(int, []byte)   {}
func (r pingRecorder) HandlePing(payload []byte) { r <- string(payload) }
func (r pingRecorder) ReadEnded(error)           {}

// closingWriter answers ErrTooLarge as the gateway's session does: its
// writer goroutine writes the last frame and WriteClose while the reader
// lingers (the two in either order).
type closingWriter struct {
	c     *Conn
	ended chan<- error
}

func (e *closingWriter) HandleFrame(int, []byte) {}
func (e *closingWriter) HandlePing([]byte)       {}
func (e *closingWriter) ReadEnded(err error) {
	if errors.Is(err, ErrTooLarge) {
		written := make(chan struct{})
		go func() {
			defer close(written)
			last := []byte("too large")
			frame := make([]byte, HeaderSize(len(last)), HeaderSize(len(last))+len(last))
			PutHeader(frame, false, len(last))
			_ = e.c.WriteFrames([][]byte{append(frame, last...)}, 10*time.Second)
			_ = e.c.WriteClose(websocket.CloseMessageTooBig, "")
		}()
		e.c.Linger(30 * time.Second)
		<-written
	}
	_ = e.c.Close()
	e.ended <- err
}

// TestLingerShutsAfterAConcurrentClose: when the close frame is written by
// another goroutine while the reader lingers (the gateway's way), the
// socket's sending side is shut right behind it, whatever read deadline
// WriteClose sets: a client that waits for the end of the stream before it
// answers gets it (here the close grace is 30 s, past the client's 20 s
// hang guard, so waiting for a deadline fails the test).
func TestLingerShutsAfterAConcurrentClose(t *testing.T) {
	closeGrace.Store(int64(30 * time.Second))
	t.Cleanup(func() { closeGrace.Store(int64(defaultCloseGrace)) })
	ended := make(chan error, 1)
	addr := connServer(t, 1<<10, func(c *Conn) { go c.Serve(&closingWriter{c: c, ended: ended}) })
	for range 3 {
		conn := tooLargeThenEnd(t, addr)
		conn.Close()
		lingerEnded(t, ended, ErrTooLarge)
	}
}

// cutConn is a net.Conn whose first Write writes half of its bytes and
// fails (a write deadline passing mid-frame); it records what was written.
type cutConn struct {
	net.Conn // nil: only Write and the deadlines are used
	written  []byte
	cut      bool
}

func (c *cutConn) Write(p []byte) (int, error) {
	if !c.cut {
		c.cut = true
		c.written = append(c.written, p[:len(p)/2]...)
		return len(p) / 2, os.ErrDeadlineExceeded
	}
	c.written = append(c.written, p...)
	return len(p), nil
}
func (c *cutConn) SetWriteDeadline(time.Time) error { return nil }

// TestNothingAfterAFrameCutShort: once a write stopped inside a frame,
// neither a close frame (the reader answering the peer) nor another frame
// follows it on the socket: the peer would read them as the frame's bytes.
func TestNothingAfterAFrameCutShort(t *testing.T) {
	nc := &cutConn{}
	c := &Conn{}
	c.fc.Conn = nc
	frame := make([]byte, 2, 2+100)
	PutHeader(frame, true, 100)
	frame = append(frame, make([]byte, 100)...)
	if err := c.WriteFrames([][]byte{frame}, time.Second); err == nil {
		t.Fatal("the cut write reported no error")
	}
	if err := c.writeClose(websocket.CloseNormalClosure, ""); !errors.Is(err, errBroken) {
		t.Fatalf("close frame after a cut frame: %v, want errBroken", err)
	}
	if err := c.WriteFrames([][]byte{frame}, time.Second); !errors.Is(err, errBroken) {
		t.Fatalf("frame after a cut frame: %v, want errBroken", err)
	}
	if len(nc.written) != len(frame)/2 {
		t.Fatalf("%d bytes on the socket, want only the %d of the cut frame", len(nc.written), len(frame)/2)
	}
}

// tooLargeThenEnd sends addr's server (read limit 1 KiB) a 4,000-byte
// message and checks that the client reads the handler's last frame, the
// close frame and then the end of the stream (the server shut its sending
// side); it returns the connection, still open on the client's side.
func tooLargeThenEnd(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, br := handshake(t, addr)
	if _, err := conn.Write(transporttest.ClientFrame(opBinary, make([]byte, 4000))); err != nil {
		t.Fatal(err)
	}
	for _, want := range []byte{finBit | opText, finBit | opClose} {
		if b0, p, err := readFrame(br); err != nil || b0 != want {
			t.Fatalf("read %#x %q, %v; want a frame %#x", b0, p, err, want)
		}
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
		t.Fatalf("after the close frame: %q, %v; want the end of the stream", rest, err)
	}
	return conn
}
