package gateway

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/gateway/transport/transporttest"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// The read path is package transport's and is tested there; these tests
// run it under real sessions, goroutine hand-offs included.

// TestFramesBackToBack: frames a client sends in one TCP write (here three
// pings, a WebSocket ping among them) are all answered, none left waiting
// in a buffer while the reader sleeps on the socket; and bytes sent right
// behind the handshake are read too.
func TestFramesBackToBack(t *testing.T) {
	h := newHarness(t)
	c := h.dialNoRead("alice", "phone", wire.SubprotocolProto)
	ping := func(id uint64) []byte {
		b, err := proto.Marshal(&parleyv1.ClientFrame{Id: id, Body: &parleyv1.ClientFrame_Ping{Ping: &parleyv1.Ping{}}})
		if err != nil {
			t.Fatal(err)
		}
		return transporttest.ClientFrame(2, b)
	}
	var burst []byte
	burst = append(burst, ping(1)...)
	burst = append(burst, transporttest.ClientFrame(0x9, []byte("ws-ping"))...)
	burst = append(burst, ping(2)...)
	burst = append(burst, ping(3)...)
	pongs := make(chan string, 1)
	c.conn.SetPongHandler(func(d string) error { pongs <- d; return nil })
	if _, err := c.conn.UnderlyingConn().Write(burst); err != nil {
		t.Fatal(err)
	}
	// A hang guard, not a timing assertion: a stalled frame never comes.
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	seen := map[uint64]bool{}
	for len(seen) < 3 {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			t.Fatalf("after %d of 3 pongs: %v", len(seen), err)
		}
		f, err := wire.Codec{Binary: true}.DecodeServer(data)
		if err != nil {
			t.Fatal(err)
		}
		if f.GetPong() != nil {
			seen[f.GetId()] = true
		}
	}
	select {
	case d := <-pongs:
		if d != "ws-ping" {
			t.Fatalf("WebSocket pong %q, want ws-ping", d)
		}
	default:
		t.Fatal("no WebSocket pong for the ping in the burst")
	}
}

// TestEarlyBytesReachGorilla: a frame sent in the same write as the
// upgrade request, before the handshake response (which the HTTP server's
// reader buffers), is read and answered, not lost.
func TestEarlyBytesReachGorilla(t *testing.T) {
	h := newHarness(t)
	addr := strings.TrimSuffix(strings.TrimPrefix(h.url, "ws://"), Path)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ping, err := proto.Marshal(&parleyv1.ClientFrame{Id: 7, Body: &parleyv1.ClientFrame_Ping{Ping: &parleyv1.Ping{}}})
	if err != nil {
		t.Fatal(err)
	}
	req := "GET " + Path + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
		"Sec-WebSocket-Protocol: " + wire.SubprotocolProto + "\r\nAuthorization: Bearer " + h.token("bob", "laptop") + "\r\n\r\n"
	if _, err := conn.Write(append([]byte(req), transporttest.ClientFrame(2, ping)...)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // a hang guard
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v, %v", resp, err)
	}
	for {
		hdr := make([]byte, 2)
		if _, err := io.ReadFull(br, hdr); err != nil {
			t.Fatalf("no pong for the early ping: %v", err)
		}
		n := int(hdr[1] & 0x7f)
		switch n {
		case 126:
			ext := make([]byte, 2)
			_, _ = io.ReadFull(br, ext)
			n = int(binary.BigEndian.Uint16(ext))
		case 127:
			t.Fatal("unexpected huge frame")
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(br, payload); err != nil {
			t.Fatal(err)
		}
		f, err := wire.Codec{Binary: true}.DecodeServer(payload)
		if err != nil {
			t.Fatal(err)
		}
		if f.GetPong() != nil && f.GetId() == 7 {
			return
		}
	}
}

// TestPingsWhileNotReading: a client that sends WebSocket pings for a
// while without reading (so the socket's buffers fill and the server's
// writes wait) then reads finds a well-formed stream: every frame parses,
// pongs carry their pings' payloads, and a request sent afterwards is
// answered. Pongs are written by the session's writer, behind its data and
// under its write deadline: a pong written beside it once timed out
// half-written with data frames following it (found by trying to break the
// gateway from outside).
func TestPingsWhileNotReading(t *testing.T) {
	h := newHarness(t)
	c := h.dialNoRead("alice", "phone", wire.SubprotocolProto)
	payload := []byte(strings.Repeat("p", 120))
	var pongs int
	c.conn.SetPongHandler(func(d string) error {
		if d != string(payload) {
			t.Errorf("pong payload %q, want the ping's", d)
		}
		pongs++
		return nil
	})
	// About 8 MB of pongs asked for, far past what socket buffers hold.
	const pings = 64 << 10
	burst := transporttest.ClientFrame(0x9, payload)
	var buf []byte
	for i := range pings {
		buf = append(buf, burst...)
		if len(buf) > 64<<10 || i == pings-1 {
			if _, err := c.conn.UnderlyingConn().Write(buf); err != nil {
				t.Fatalf("after %d pings: %v", i, err)
			}
			buf = buf[:0]
		}
	}
	b, err := proto.Marshal(&parleyv1.ClientFrame{Id: 7, Body: &parleyv1.ClientFrame_Ping{Ping: &parleyv1.Ping{}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.conn.UnderlyingConn().Write(transporttest.ClientFrame(2, b)); err != nil {
		t.Fatal(err)
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // a hang guard
	for {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			t.Fatalf("after %d pongs: %v (a malformed frame is a corrupted stream)", pongs, err)
		}
		f, err := wire.Codec{Binary: true}.DecodeServer(data)
		if err != nil {
			t.Fatalf("after %d pongs: undecodable frame: %v", pongs, err)
		}
		if f.GetPong() != nil && f.GetId() == 7 {
			break
		}
	}
	if pongs == 0 {
		t.Fatal("no pong at all")
	}
	t.Logf("%d of %d pings answered (pongs give way when the send queue is full)", pongs, pings)
}

// TestPipelinedRequestsAnswered: a client that sends many more requests in
// one write than its send queue holds, and reads eagerly, gets every
// answer and stays connected: the reader waits for the queue to drain
// instead of overflowing it (the session would be closed as a slow
// consumer, 4001, without that).
func TestPipelinedRequestsAnswered(t *testing.T) {
	h := newHarness(t, func(o *harnessOpts) { o.cfg.SendQueue = 8 })
	c := h.dialNoRead("alice", "phone", wire.SubprotocolProto)
	const n = 500
	var burst []byte
	for id := uint64(1); id <= n; id++ {
		b, err := proto.Marshal(&parleyv1.ClientFrame{Id: id, Body: &parleyv1.ClientFrame_Ping{Ping: &parleyv1.Ping{}}})
		if err != nil {
			t.Fatal(err)
		}
		burst = append(burst, transporttest.ClientFrame(2, b)...)
	}
	if _, err := c.conn.UnderlyingConn().Write(burst); err != nil {
		t.Fatal(err)
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // a hang guard
	seen := map[uint64]bool{}
	for len(seen) < n {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			t.Fatalf("after %d of %d pongs: %v", len(seen), n, err)
		}
		f, err := wire.Codec{Binary: true}.DecodeServer(data)
		if err != nil {
			t.Fatal(err)
		}
		if f.GetPong() != nil {
			seen[f.GetId()] = true
		}
	}
	if got := counter(h.m.SlowConsumers); got != 0 {
		t.Fatalf("%v slow consumers counted", got)
	}
}
