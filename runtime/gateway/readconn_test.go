package gateway

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// clientFrame builds a final, masked client frame (RFC 6455 §5.2) of
// payload with the given opcode.
func clientFrame(op byte, payload []byte) []byte {
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	key := []byte{1, 2, 3, 4}
	b = append(b, key...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

// TestFrameConnStopsAtFrameEnds: whatever sizes its reader asks for,
// frameConn hands on every byte in order and never a byte past the end of
// the frame being read, and reports idle exactly at a frame boundary with
// nothing read ahead; across all header length forms.
func TestFrameConnStopsAtFrameEnds(t *testing.T) {
	var stream []byte
	var ends []int // offset of each frame's end
	for _, n := range []int{0, 1, 125, 126, 200, 65535, 65536, 70000, 3} {
		stream = append(stream, clientFrame(2, bytes.Repeat([]byte{'x'}, n))...)
		ends = append(ends, len(stream))
	}
	for _, chunk := range []int{1, 7, 512, 4096, 1 << 20} {
		client, server := net.Pipe()
		go func() {
			// Everything at once, as a client sending frames back to back.
			_, _ = client.Write(stream)
			client.Close()
		}()
		fc := newFrameConn(server)
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
		return clientFrame(2, b)
	}
	var burst []byte
	burst = append(burst, ping(1)...)
	burst = append(burst, clientFrame(0x9, []byte("ws-ping"))...)
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
	if _, err := conn.Write(append([]byte(req), clientFrame(2, ping)...)); err != nil {
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
