package transport

import (
	"syscall"
	"unsafe"
)

// readable reports whether socket fd has something for a read to report:
// bytes, end of stream or an error. It peeks without consuming or blocking
// (recv(2) with MSG_PEEK|MSG_DONTWAIT), so it is right whatever the
// poller's readiness state. A raw system call, as small on the stack as it
// can be: it runs on the idle reader goroutine's 2 KiB stack, which a
// deeper call (syscall.Recvfrom and its socket-address buffer) would grow
// to 4 KiB for good.
func readable(fd uintptr) bool {
	var b [1]byte
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno != syscall.EAGAIN && errno != syscall.EWOULDBLOCK
}
