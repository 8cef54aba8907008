//go:build unix

package transport

import (
	"sync"
	"syscall"
	"time"
)

// TryWriteFrame writes as much of frame (a complete frame, or the rest of
// one a previous call wrote in part) as the socket's send buffer takes now,
// without waiting, in one write system call, and returns how many bytes it
// wrote: all of them, some, or none when the buffer is full, another
// frame (a close frame) is being written, or the connection has no socket
// of its own to write to without waiting (TLS). After a part, nothing else
// may be written before the rest: the caller's next write must be
// WriteFrames with the frame's rest first (the socket stays locked until
// then). It keeps the write deadline as WriteFrames does (timeout). An
// error leaves the connection to be closed. Not safe for concurrent use
// with WriteFrames or itself. After a close frame it drops frame and
// reports it written, as WriteFrames does.
//
// Decision (issue 16): a fan-out writes each recipient's frame from a few
// goroutines serving many recipients each (the gateway's writer), instead
// of starting a writer goroutine per recipient per message; the socket
// almost always takes the frame at once, and a recipient whose buffer is
// full gets a goroutine of its own for the rest, so it holds up no one.
func (c *Conn) TryWriteFrame(frame []byte, timeout time.Duration) (int, error) {
	if c.fc.raw == nil || len(frame) == 0 || !c.fc.wmu.TryLock() {
		return 0, nil
	}
	if c.fc.broken {
		c.fc.wmu.Unlock()
		return 0, errBroken
	}
	if c.closeSent.Load() {
		c.fc.wmu.Unlock()
		return len(frame), nil // dropped after the close frame, as WriteFrames does
	}
	c.fc.keepWriteDeadline(timeout)
	w := rawWrites.Get().(*rawWrite)
	w.frame = frame
	err := c.fc.raw.Write(w.fn)
	n, werr := w.n, w.err
	w.frame, w.n, w.err = nil, 0, nil
	rawWrites.Put(w)
	if err == nil {
		err = werr
	}
	if err == nil && n > 0 && n < len(frame) {
		c.partial = true // WriteFrames writes the rest and unlocks
		return n, nil
	}
	if err != nil {
		c.fc.broken = true
	}
	c.fc.wmu.Unlock()
	if err != nil {
		return 0, err
	}
	return n, nil
}

// rawWrite is one non-blocking write through syscall.RawConn.Write, pooled
// with its bound method so that a write allocates nothing.
type rawWrite struct {
	frame []byte
	n     int
	err   error
	fn    func(fd uintptr) bool
}

var rawWrites = sync.Pool{New: func() any {
	w := &rawWrite{}
	w.fn = w.write
	return w
}}

// write makes one write system call on the (non-blocking) socket and never
// asks RawConn to wait: a full buffer (EAGAIN) or an interrupted call is
// nothing written, for the caller's blocking writer to finish.
func (w *rawWrite) write(fd uintptr) bool {
	n, err := syscall.Write(int(fd), w.frame)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		n, err = 0, nil
	case err != nil:
		n = 0
	}
	w.n, w.err = n, err
	return true
}
