package transport

import (
	"errors"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// Parking (issue 16: idle memory). A goroutine waiting for a socket costs
// its stack (2 KiB at least, 4 KiB once it has run a session's handler) and
// its descriptor for as long as it waits, and a gateway's sockets are idle
// almost all the time. So an idle connection has no goroutine: Serve arms
// the socket in one epoll set shared by the process and returns; when bytes
// (or end of stream, or an error) arrive, the poller's goroutine starts a
// fresh one that reads the burst and parks the connection again. This is
// what netpoll-based servers (gobwas/ws with easygo, nbio) do, kept to the
// one wait Parley needs: reads. Writes never wait here (WriteFrames writes
// from the sender's goroutine with a deadline).
//
// The socket stays in the runtime's own netpoller too (a file may sit in
// several epoll sets); everything that reads, writes or times out still goes
// through it. Registration is EPOLLONESHOT: an event disarms the socket
// until the next park re-arms it, so one wake-up starts one reader.
//
// Who starts the reader is settled by one flag (Conn.parked): the poller on
// an event, Close, WriteClose (whose read deadline only a waiting goroutine
// observes) or a failed arm, whoever clears it first; the others do nothing.
//
// The poller is the process's, as the runtime's netpoller is: started by the
// first connection, one goroutine blocked in epoll_wait, never stopped
// (sessions outlive every lifecycle hook of a gateway, and a process may run
// several gateways, each test one). It holds nothing per idle connection but
// its registration (a map entry).

// poller is the process's epoll set of parked connections.
type poller struct {
	epfd int

	mu    sync.RWMutex
	conns map[uint32]*Conn // by token; a connection is in it from Upgrade to the end of its reading
	next  uint32           // the last token given out
	// failed is set when epoll_wait fails for good (it does not on Linux
	// with a valid set and buffer); park refuses from then on.
	failed bool
}

var (
	pollerOnce   sync.Once
	sharedPoller *poller // nil when epoll is unavailable
)

// processPoller returns the process's poller, starting it on first use, or
// nil when no epoll set can be created (then connections wait on
// goroutines, as on other systems).
func processPoller() *poller {
	pollerOnce.Do(func() {
		epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			slog.Warn("transport: no epoll set; idle connections wait on goroutines", "err", err)
			return
		}
		sharedPoller = &poller{epfd: epfd, conns: make(map[uint32]*Conn)}
		go sharedPoller.run()
	})
	return sharedPoller
}

// pollEvents is what a parked connection waits for: bytes, the peer's
// shutdown (EPOLLRDHUP) and, always reported, errors and hang-ups.
const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

// run waits for events and resumes their connections, until epoll_wait
// fails for good.
func (p *poller) run() {
	events := make([]syscall.EpollEvent, 256)
	ready := make([]*Conn, 0, len(events))
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			p.fail(err)
			return
		}
		ready = ready[:0]
		p.mu.RLock()
		for _, ev := range events[:n] {
			// An event of a token no longer here belongs to a connection
			// whose reading ended: nothing waits for it.
			if c := p.conns[uint32(ev.Fd)]; c != nil {
				ready = append(ready, c)
			}
		}
		p.mu.RUnlock()
		for i, c := range ready {
			c.unpark()
			ready[i] = nil
		}
	}
}

// fail stops parking and resumes every parked connection on a goroutine.
func (p *poller) fail(err error) {
	slog.Error("transport: epoll_wait failed; idle connections wait on goroutines from now on", "err", err)
	p.mu.Lock()
	p.failed = true
	conns := p.conns
	p.conns = make(map[uint32]*Conn)
	p.mu.Unlock()
	for _, c := range conns {
		c.unpark()
	}
}

// register adds c's socket to the epoll set, disarmed (EPOLLONESHOT with
// no event asked for, until the first park), and gives c its token. Called
// once, by Upgrade, before anything reads c; without a poller or a file
// descriptor c keeps token 0 and never parks.
func (c *Conn) register() {
	p := processPoller()
	if p == nil || c.fc.raw == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed {
		return
	}
	for {
		p.next++
		if _, taken := p.conns[p.next]; p.next != 0 && !taken {
			break
		}
	}
	token := p.next
	var cerr error
	err := c.fc.raw.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLONESHOT, Fd: int32(token)}
		cerr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err != nil || cerr != nil {
		return // the socket is closed already, or cannot be polled: wait on goroutines
	}
	p.conns[token] = c
	c.token = token
}

// unregister removes c from the poller: called when its reading ends, so
// that nothing resumes it any more.
func (c *Conn) unregister() {
	if c.token == 0 {
		return
	}
	p := sharedPoller
	p.mu.Lock()
	delete(p.conns, c.token)
	p.mu.Unlock()
	// The socket leaves the set when it is closed; a connection whose
	// reading ended is closed by its owner soon, so this only saves the
	// set a stale entry until then.
	_ = c.fc.raw.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
	c.token = 0
}

// warmWait is how long a reader that has handled a burst of frames keeps
// waiting for the next one on its goroutine (a fresh one, 2 KiB) before it
// parks the connection. A chatting client's next frame usually comes
// sooner, and such a wait (the runtime's netpoller, two deadline updates)
// costs less than a park and a wake-up (two system calls, an epoll_wait
// return and a goroutine start per frame: about 10 % more server CPU per
// DM send at 2,000 sends/s when every frame parked; docs/benchmarks.md).
// An idle connection is parked warmWait after its last frame.
const warmWait = time.Second

// waitWarm waits up to warmWait for c's next bytes on the calling
// goroutine and reports whether the read should go on here (bytes came, or
// an error the read will report); false means c was silent: park it. It
// does not wait, and returns false, for a connection that cannot park.
func (c *Conn) waitWarm() bool {
	if c.token == 0 || c.noPark.Load() {
		return false
	}
	nc := c.fc.Conn
	if nc.SetReadDeadline(time.Now().Add(warmWait)) != nil {
		return true // closed: the read reports it
	}
	err := c.fc.waitReadable()
	_ = nc.SetReadDeadline(time.Time{})
	if c.noPark.Load() {
		// WriteClose set noPark before its deadline: its deadline may be
		// the one just cleared, so put it back.
		if by := c.closeBy.Load(); by != 0 {
			_ = nc.SetReadDeadline(time.Unix(0, by))
		}
		return true
	}
	return !errors.Is(err, os.ErrDeadlineExceeded)
}

// park hands the wait for c's next frame to the poller and reports whether
// the calling reader must stop (true: another goroutine reads c from now
// on); false means the caller waits itself (no poller, a closing
// connection, or arming failed).
func (c *Conn) park() bool {
	if c.token == 0 || c.noPark.Load() {
		return false
	}
	p := sharedPoller
	c.parked.Store(true)
	// Close and WriteClose set noPark before they look at parked: one of
	// the two sides sees the other.
	if c.noPark.Load() {
		return !c.parked.CompareAndSwap(true, false)
	}
	var cerr error
	p.mu.RLock()
	failed := p.failed
	err := c.fc.raw.Control(func(fd uintptr) {
		if failed {
			cerr = syscall.EINVAL
			return
		}
		ev := syscall.EpollEvent{Events: pollEvents, Fd: int32(c.token)}
		cerr = syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
	})
	p.mu.RUnlock()
	if err == nil && cerr == nil {
		return true // armed: the poller (or Close) resumes c
	}
	// Not armed (closed meanwhile, or the poller failed): read on here,
	// unless someone resumed c already.
	return !c.parked.CompareAndSwap(true, false)
}

// unpark resumes a parked connection's reading on a fresh goroutine; it
// does nothing when c is not parked (being read, or resumed already).
func (c *Conn) unpark() {
	if c.parked.CompareAndSwap(true, false) {
		go c.serve(c.h, serveResumed)
	}
}
