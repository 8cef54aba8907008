//go:build !linux

package transport

// readable reports true: where no non-blocking peek is wired up, a session
// waits for frames inside gorilla's read, as before (a deeper stack).
func readable(uintptr) bool { return true }
