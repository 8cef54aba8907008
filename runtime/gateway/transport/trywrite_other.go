//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package transport

// TryWriteFrames writes nothing without a Unix socket to write to without
// waiting (writev): the caller's writer writes the whole frames
// (trywrite.go).
func (c *Conn) TryWriteFrames(frames [][]byte) (int, error) { return 0, nil }
