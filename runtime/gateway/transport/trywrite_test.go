//go:build linux

package transport

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// fdOf returns c's descriptor number.
func fdOf(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := rc.Control(func(x uintptr) { fd = int(x) }); err != nil {
		t.Fatal(err)
	}
	return fd
}

// serverConn upgrades one connection and returns the server's side of it;
// the client stays connected until the test ends.
func serverConn(t *testing.T) *Conn {
	t.Helper()
	conns := make(chan *Conn, 1)
	addr := connServer(t, 1<<20, func(c *Conn) { conns <- c })
	client, _, err := websocket.DefaultDialer.Dial("ws://"+addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return <-conns
}

// TestTryWriteFramesAfterClose: TryWriteFrames writes to the socket's
// descriptor directly, so once Close has closed it the descriptor's number
// may already belong to the next connection accepted. A TryWriteFrames on
// the closed connection (a fan-out writer that took it before it closed)
// must report the connection closed and write nothing, even when the
// number has been reused: the new connection's peer reads nothing.
func TestTryWriteFramesAfterClose(t *testing.T) {
	c := serverConn(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	old := int(c.fc.fd - 1)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// Take descriptors until a connection gets the closed one's number.
	var victim, peer net.Conn
	for range 20 {
		d, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		a, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		defer a.Close()
		if fdOf(t, a) == old {
			victim, peer = a, d
		} else if fdOf(t, d) == old {
			victim, peer = d, a
		}
		if victim != nil {
			break
		}
	}
	if victim == nil {
		t.Fatalf("descriptor %d was not reused by 20 new connections", old)
	}
	frame := []byte{finBit | opBinary, 3, 'b', 'a', 'd'}
	if n, err := c.TryWriteFrames([][]byte{frame}); n != 0 || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("TryWriteFrames after Close: %d, %v; want 0 and net.ErrClosed", n, err)
	}
	if n, err := c.TryWriteFrames([][]byte{frame, frame}); n != 0 || err == nil {
		t.Fatalf("TryWriteFrames (writev) after Close: %d, %v; want 0 and an error", n, err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 16)
	if n, err := peer.Read(buf); n > 0 || !errors.Is(err, syscall.EAGAIN) && !isTimeout(err) {
		t.Fatalf("the connection that reused descriptor %d read %q (%v): a closed connection's write reached it", old, buf[:n], err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestTryWriteFramesRacingClose: fan-out writers writing while the
// connection closes (run with -race): every write either lands before the
// close or reports it, none after.
func TestTryWriteFramesRacingClose(t *testing.T) {
	c := serverConn(t)
	frame := []byte{finBit | opBinary, 1, 'x'}
	var wg sync.WaitGroup
	var mu sync.Mutex // TryWriteFrames is one writer's call
	closed := false
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 1000 {
			mu.Lock()
			n, err := c.TryWriteFrames([][]byte{frame})
			after := closed
			mu.Unlock()
			if err != nil {
				return
			}
			if after && n > 0 {
				t.Error("a write after Close returned reported bytes written")
				return
			}
		}
	}()
	time.Sleep(time.Millisecond)
	mu.Lock()
	_ = c.Close()
	closed = true
	mu.Unlock()
	wg.Wait()
}
