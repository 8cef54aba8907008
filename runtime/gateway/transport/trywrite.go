//go:build linux || darwin || dragonfly || freebsd || netbsd

package transport

import (
	"net"
	"sync"
	"syscall"
	"unsafe"
)

// TryWriteFrames writes as much of frames (complete frames, in order; the
// first may be the rest of one a previous call wrote in part) as the
// socket's send buffer takes now, without waiting, in one write (one
// frame) or writev (more, at most MaxTryFrames of them) system call, and
// returns how many bytes it wrote: all of them, some, or none when the
// buffer is full, another frame (a close frame) is being written, or the
// connection has no socket of its own to write to without waiting (TLS).
// After a part that ends inside a frame, nothing else may be written
// before that frame's rest: the caller's next write must be WriteFrames
// with the rest first (the socket stays locked until then). It never
// waits, so it has no deadline. An error leaves the connection to be
// closed. Not safe for concurrent use with WriteFrames
// or itself. After a close frame it drops frames and reports them
// written, as WriteFrames does. frames' bytes are only read.
//
// Decision (issue 16): a fan-out writes each recipient's frames from a few
// goroutines serving many recipients each (the gateway's writer), instead
// of starting a writer goroutine per recipient per message; the socket
// almost always takes the frames at once, and a recipient whose buffer is
// full gets a goroutine of its own for the rest, so it holds up no one. A
// recipient with several frames queued (its writer lagged behind the
// next fan-out, which on a busy machine is half of them) gets them in one
// writev here too, not a goroutine of its own for it (docs/benchmarks.md).
func (c *Conn) TryWriteFrames(frames [][]byte) (int, error) {
	if c.fc.fd == 0 || len(frames) == 0 || !c.fc.wmu.TryLock() {
		return 0, nil
	}
	frames = frames[:min(len(frames), MaxTryFrames)]
	if c.fc.broken {
		c.fc.wmu.Unlock()
		return 0, errBroken
	}
	total := 0
	for _, f := range frames {
		total += len(f)
	}
	if c.closeSent.Load() {
		c.fc.wmu.Unlock()
		return total, nil // dropped after the close frame, as WriteFrames does
	}
	n, err := c.fc.writeFD(frames)
	if err == nil && n > 0 && n < total && insideFrame(frames, n) {
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

// iovecs are the arrays writeFD hands to writev, cleared after each call
// so that they keep no frame alive.
var iovecs = sync.Pool{New: func() any { return new([MaxTryFrames]syscall.Iovec) }}

// writeFD makes one write (one frame) or writev system call with frames
// (at most MaxTryFrames; empty ones skipped) on c's non-blocking socket
// and never waits: a full buffer (EAGAIN) or an interrupted call is
// nothing written, for the caller's blocking writer to finish. After
// closeFD it writes nothing and returns net.ErrClosed.
//
// Decision (issue 16): the call goes to the descriptor directly, not
// through the runtime's poller (syscall.RawConn.Write), and as a raw
// system call, which keeps the goroutine's P instead of announcing a
// system call to the scheduler. A fan-out makes one per recipient: the
// poller's bookkeeping (its lock, a deadline check and a readiness reset
// per call) is for waiting, which this write never does, and the
// announcement (and the runtime's monitor retaking Ps seen in system
// calls at its 20 us poll) cost more than a call that returns in
// microseconds saves. fdmu keeps the descriptor open meanwhile
// (docs/benchmarks.md).
func (c *frameConn) writeFD(frames [][]byte) (int, error) {
	c.fdmu.RLock()
	defer c.fdmu.RUnlock()
	if c.fdClosed {
		return 0, net.ErrClosed
	}
	fd := uintptr(c.fd - 1)
	var r uintptr
	var e syscall.Errno
	if len(frames) == 1 {
		if len(frames[0]) == 0 {
			return 0, nil
		}
		r, _, e = syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&frames[0][0])), uintptr(len(frames[0])))
	} else {
		iov := iovecs.Get().(*[MaxTryFrames]syscall.Iovec)
		v := iov[:0]
		for _, f := range frames {
			if len(f) > 0 {
				x := syscall.Iovec{Base: &f[0]}
				x.SetLen(len(f))
				v = append(v, x)
			}
		}
		if len(v) > 0 {
			r, _, e = syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&v[0])), uintptr(len(v)))
		}
		clear(v)
		iovecs.Put(iov)
	}
	switch {
	case e == syscall.EAGAIN || e == syscall.EINTR:
		return 0, nil
	case e != 0:
		return 0, e
	}
	return int(r), nil
}
