//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd

package transport

import (
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// maxTryFrames bounds the frames one TryWriteFrames hands to its writev
// (Linux IOV_MAX is 1024); the rest are the caller's next call.
const maxTryFrames = 64

// TryWriteFrames writes as much of frames (complete frames, in order; the
// first may be the rest of one a previous call wrote in part) as the
// socket's send buffer takes now, without waiting, in one write (one
// frame) or writev (more, at most maxTryFrames of them) system call, and
// returns how many bytes it wrote: all of them, some, or none when the
// buffer is full, another frame (a close frame) is being written, or the
// connection has no socket of its own to write to without waiting (TLS).
// After a part that ends inside a frame, nothing else may be written
// before that frame's rest: the caller's next write must be WriteFrames
// with the rest first (the socket stays locked until then). It keeps the
// write deadline as WriteFrames does (timeout). An error leaves the
// connection to be closed. Not safe for concurrent use with WriteFrames
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
func (c *Conn) TryWriteFrames(frames [][]byte, timeout time.Duration) (int, error) {
	if c.fc.raw == nil || len(frames) == 0 || !c.fc.wmu.TryLock() {
		return 0, nil
	}
	frames = frames[:min(len(frames), maxTryFrames)]
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
	c.fc.keepWriteDeadline(timeout)
	w := rawWrites.Get().(*rawWrite)
	w.frames = frames
	err := c.fc.raw.Write(w.fn)
	n, werr := w.n, w.err
	w.frames, w.n, w.err = nil, 0, nil
	rawWrites.Put(w)
	if err == nil {
		err = werr
	}
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

// insideFrame reports whether the first n bytes of frames end inside one
// of them rather than at a frame's end.
func insideFrame(frames [][]byte, n int) bool {
	for _, f := range frames {
		if n < len(f) {
			return n > 0
		}
		n -= len(f)
	}
	return false
}

// rawWrite is one non-blocking write through syscall.RawConn.Write, pooled
// with its bound method and its iovec array so that a write allocates
// nothing.
type rawWrite struct {
	frames [][]byte
	n      int
	err    error
	fn     func(fd uintptr) bool
	iov    [maxTryFrames]syscall.Iovec
}

var rawWrites = sync.Pool{New: func() any {
	w := &rawWrite{}
	w.fn = w.write
	return w
}}

// write makes one write (one frame) or writev system call on the
// (non-blocking) socket and never asks RawConn to wait: a full buffer
// (EAGAIN) or an interrupted call is nothing written, for the caller's
// blocking writer to finish.
func (w *rawWrite) write(fd uintptr) bool {
	n, err := w.syscall(fd)
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		n, err = 0, nil
	case err != nil:
		n = 0
	}
	w.n, w.err = n, err
	return true
}

// syscall writes w.frames (at most maxTryFrames; empty ones skipped)
// with one write (one frame) or writev system call, leaving w.iov cleared
// so that the pool keeps no frame alive.
//
// Decision (issue 16): the call is a raw one, which keeps the goroutine's
// P instead of announcing a system call to the scheduler: the socket is
// non-blocking, so the call returns in microseconds, and a fan-out makes
// one per recipient, where the announcement (entersyscall, exitsyscall)
// and the runtime's monitor retaking Ps seen in system calls (at its
// 20 us poll) cost more than the call saves (docs/benchmarks.md).
func (w *rawWrite) syscall(fd uintptr) (int, error) {
	iov := w.iov[:0]
	for _, f := range w.frames {
		if len(f) > 0 {
			v := syscall.Iovec{Base: &f[0]}
			v.SetLen(len(f))
			iov = append(iov, v)
		}
	}
	var r uintptr
	var e syscall.Errno
	switch len(iov) {
	case 0:
		return 0, nil
	case 1:
		r, _, e = syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(iov[0].Base)), uintptr(iov[0].Len))
	default:
		r, _, e = syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	}
	clear(iov)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
