package fleet

import (
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
)

// device is one connected SDK client whose events are collected.
type device struct {
	*client.Client
	name string

	mu        sync.Mutex
	messages  []*parleyv1.Message
	presence  []*parleyv1.Presence
	reconnect int
}

// connect dials url as user/dev and collects events until the test ends.
func (c *cluster) connect(url, user, dev string, opts ...func(*client.Options)) *device {
	c.t.Helper()
	o := client.Options{URL: url, Token: c.token(user, dev)}
	for _, f := range opts {
		f(&o)
	}
	d := &device{name: user + "/" + dev}
	o.OnEvent = d.on
	cl, err := client.Dial(ctxT(c.t, 30*time.Second), o)
	if err != nil {
		c.t.Fatalf("dial %s as %s: %v", url, d.name, err)
	}
	d.Client = cl
	c.t.Cleanup(func() { _ = cl.Close() })
	return d
}

func (d *device) on(ev client.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch e := ev.(type) {
	case client.MessageEvent:
		d.messages = append(d.messages, e.Message)
	case client.PresenceEvent:
		d.presence = append(d.presence, e.Presence)
	case client.ReconnectedEvent:
		d.reconnect++
	}
}

// Messages returns the messages of conv emitted so far, in emission order.
func (d *device) Messages(conv string) []*parleyv1.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*parleyv1.Message
	for _, m := range d.messages {
		if m.ConversationId == conv {
			out = append(out, m)
		}
	}
	return out
}

func (d *device) Reconnects() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reconnect
}

// lastPresence returns the newest presence event of user, or nil.
func (d *device) lastPresence(user string) *parleyv1.Presence {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := len(d.presence) - 1; i >= 0; i-- {
		if d.presence[i].UserId == user {
			return d.presence[i]
		}
	}
	return nil
}

// hasSeq reports whether the device emitted seq of conv.
func (d *device) hasSeq(conv string, seq uint64) bool {
	for _, m := range d.Messages(conv) {
		if m.Seq == seq {
			return true
		}
	}
	return false
}

// checkLog asserts that d emitted conv's messages exactly once each, in seq
// order with no gap, from its first one up to at least upTo, and that each
// matches the store's copy (same message id).
func checkLog(t *testing.T, d *device, conv string, upTo uint64, stored map[uint64]*parleyv1.Message) {
	t.Helper()
	msgs := d.Messages(conv)
	if len(msgs) == 0 {
		t.Fatalf("%s: no messages of %s", d.name, conv)
	}
	first := msgs[0].Seq
	for i, m := range msgs {
		if want := first + uint64(i); m.Seq != want {
			t.Fatalf("%s: message %d of %s has seq %d, want %d (each once, in order, no gap)", d.name, i, conv, m.Seq, want)
		}
		if s := stored[m.Seq]; s != nil && s.MessageId != m.MessageId {
			t.Fatalf("%s: %s seq %d has message id %d, the store has %d", d.name, conv, m.Seq, m.MessageId, s.MessageId)
		}
	}
	if last := msgs[len(msgs)-1].Seq; last < upTo {
		t.Fatalf("%s: %s ends at seq %d, want at least %d", d.name, conv, last, upTo)
	}
}

// storedLog reads conv's whole log from the store, by seq.
func (c *cluster) storedLog(conv string) map[uint64]*parleyv1.Message {
	c.t.Helper()
	ctx := ctxT(c.t, 30*time.Second)
	out := make(map[uint64]*parleyv1.Message)
	var after uint64
	for {
		msgs, more, err := c.store.Messages(ctx, conv, store.Page{After: after, Forward: true, Limit: store.MaxLimit})
		if err != nil {
			c.t.Fatalf("read %s from the store: %v", conv, err)
		}
		for _, m := range msgs {
			out[m.Seq] = m
			after = max(after, m.Seq)
		}
		if !more || len(msgs) == 0 {
			return out
		}
	}
}

// acked is a send_ok a client got.
type acked struct {
	conv      string
	seq       uint64
	messageID int64
	clientID  string
	text      string
}

// ackLog collects send_oks from concurrent senders.
type ackLog struct {
	mu   sync.Mutex
	acks []acked
}

func (a *ackLog) add(conv, text string, ok *parleyv1.SendOk) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.acks = append(a.acks, acked{conv: conv, seq: ok.GetSeq(), messageID: ok.GetMessageId(), clientID: ok.GetClientMsgId(), text: text})
}

func (a *ackLog) all() []acked {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.acks)
}

func (a *ackLog) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.acks)
}

// checkAcked asserts that every send_ok is in the store exactly as
// acknowledged and that conv's stored seqs are dense from 1; it returns the
// stored log's head.
func (c *cluster) checkAcked(conv string, acks []acked) uint64 {
	c.t.Helper()
	log := c.storedLog(conv)
	var head uint64
	for s := range log {
		head = max(head, s)
	}
	for s := uint64(1); s <= head; s++ {
		if log[s] == nil {
			c.t.Fatalf("%s: seq %d is missing from the store (head %d): a seq was skipped", conv, s, head)
		}
	}
	texts := make(map[string]uint64) // text -> seq: each acknowledged send stored once
	for _, m := range log {
		if m.Kind != parleyv1.MessageKind_MESSAGE_KIND_TEXT {
			continue
		}
		if prev, dup := texts[m.Text]; dup {
			c.t.Fatalf("%s: text %q stored twice (seqs %d and %d)", conv, m.Text, prev, m.Seq)
		}
		texts[m.Text] = m.Seq
	}
	n := 0
	for _, a := range acks {
		if a.conv != conv {
			continue
		}
		n++
		m := log[a.seq]
		switch {
		case m == nil:
			c.t.Fatalf("%s: send_ok seq %d (message %d, %q) is not in the store", conv, a.seq, a.messageID, a.text)
		case m.MessageId != a.messageID || m.Text != a.text || (a.clientID != "" && m.ClientMsgId != a.clientID):
			c.t.Fatalf("%s: send_ok seq %d said message %d %q (client_msg_id %s); the store has message %d %q (%s)",
				conv, a.seq, a.messageID, a.text, a.clientID, m.MessageId, m.Text, m.ClientMsgId)
		}
	}
	c.t.Logf("%s: %d send_oks all stored as acknowledged; stored seqs 1..%d dense", conv, n, head)
	return head
}

// lb is a TCP load balancer in front of gateways, as a Service would be:
// each new connection goes to the first backend that accepts it, so when a
// gateway dies its clients' reconnects land on the others.
type lb struct {
	ln       net.Listener
	backends []string
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	closed   bool
}

func newLB(t *testing.T, backends ...string) *lb {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &lb{ln: ln, backends: backends, conns: make(map[net.Conn]struct{})}
	l.wg.Add(1)
	go l.serve()
	t.Cleanup(l.close)
	return l
}

func (l *lb) URL() string { return "ws://" + l.ln.Addr().String() }

func (l *lb) serve() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.proxy(c)
		}()
	}
}

func (l *lb) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *lb) proxy(c net.Conn) {
	var up net.Conn
	for _, b := range l.backends {
		u, err := net.DialTimeout("tcp", b, time.Second)
		if err == nil {
			up = u
			break
		}
	}
	if up == nil || !l.track(c) || !l.track(up) {
		c.Close()
		if up != nil {
			up.Close()
		}
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	c.Close()
	up.Close()
	<-done
	l.mu.Lock()
	delete(l.conns, c)
	delete(l.conns, up)
	l.mu.Unlock()
}

func (l *lb) close() {
	l.ln.Close()
	l.mu.Lock()
	l.closed = true
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}
