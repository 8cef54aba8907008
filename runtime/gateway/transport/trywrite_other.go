//go:build !unix

package transport

import "time"

// TryWriteFrame writes nothing without a Unix socket to write to without
// waiting: the caller's writer writes the whole frame (trywrite.go).
func (c *Conn) TryWriteFrame(frame []byte, timeout time.Duration) (int, error) { return 0, nil }
