//go:build !(linux || darwin || dragonfly || freebsd || netbsd)

package transport

// TryWriteFrames writes nothing where trywrite.go's raw system calls are
// not available (Windows; OpenBSD, whose syscall.RawSyscall always fails
// with ENOSYS): the caller's writer writes the whole frames.
func (c *Conn) TryWriteFrames(frames [][]byte) (int, error) { return 0, nil }
