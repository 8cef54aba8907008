//go:build !linux

package transport

// Without epoll (poller_linux.go) a connection never parks: its reader
// goroutine waits for the next frame itself.

func (c *Conn) register()      {}
func (c *Conn) unregister()    {}
func (c *Conn) park() bool     { return false }
func (c *Conn) waitWarm() bool { return false }
func (c *Conn) unpark()        {}
