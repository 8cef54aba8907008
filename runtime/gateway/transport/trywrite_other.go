//go:build !(linux || darwin || dragonfly || freebsd || netbsd || openbsd)

package transport

import "time"

// TryWriteFrames writes nothing without a Unix socket to write to without
// waiting (writev): the caller's writer writes the whole frames
// (trywrite.go).
func (c *Conn) TryWriteFrames(frames [][]byte, timeout time.Duration) (int, error) { return 0, nil }
