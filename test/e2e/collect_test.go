package e2e

import (
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// device is one connected SDK client whose events are collected.
type device struct {
	*client.Client
	mu        sync.Mutex
	messages  []*parleyv1.Message
	receipts  []*parleyv1.Receipt
	presence  []*parleyv1.Presence
	typing    []*parleyv1.Typing
	closed    *client.ClosedEvent
	reconnect int
}

// connect dials the server as user/dev (dev token) and collects events
// until the test ends.
func connect(t *testing.T, p *proc, user, dev string, opts ...func(*client.Options)) *device {
	t.Helper()
	o := client.Options{URL: p.WS(), Token: p.token(user, dev, time.Hour)}
	for _, f := range opts {
		f(&o)
	}
	d := &device{}
	o.OnEvent = d.on
	c, err := client.Dial(ctxT(t, 30*time.Second), o)
	if err != nil {
		t.Fatalf("dial %s/%s: %v", user, dev, err)
	}
	d.Client = c
	t.Cleanup(func() { _ = c.Close() })
	return d
}

func (d *device) on(ev client.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch e := ev.(type) {
	case client.MessageEvent:
		d.messages = append(d.messages, e.Message)
	case client.ReceiptEvent:
		d.receipts = append(d.receipts, e.Receipt)
	case client.PresenceEvent:
		d.presence = append(d.presence, e.Presence)
	case client.TypingEvent:
		d.typing = append(d.typing, e.Typing)
	case client.ReconnectedEvent:
		d.reconnect++
	case client.ClosedEvent:
		d.closed = &e
	}
}

// Messages returns the collected messages of conv of the given kind (0: any).
func (d *device) Messages(conv string, kind parleyv1.MessageKind) []*parleyv1.Message {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*parleyv1.Message
	for _, m := range d.messages {
		if m.ConversationId == conv && (kind == 0 || m.Kind == kind) {
			out = append(out, m)
		}
	}
	return out
}

func (d *device) Receipts() []*parleyv1.Receipt {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*parleyv1.Receipt(nil), d.receipts...)
}

func (d *device) Presence() []*parleyv1.Presence {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*parleyv1.Presence(nil), d.presence...)
}

func (d *device) Reconnects() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reconnect
}

// hasReceipt reports whether a receipt of kind for user at >= seq arrived.
func (d *device) hasReceipt(conv, user string, kind parleyv1.ReceiptKind, seq uint64) bool {
	for _, r := range d.Receipts() {
		if r.ConversationId == conv && r.UserId == user && r.Kind == kind && r.Seq >= seq {
			return true
		}
	}
	return false
}

// lastPresence returns the newest presence of user seen, or nil.
func (d *device) lastPresence(user string) *parleyv1.Presence {
	ps := d.Presence()
	for i := len(ps) - 1; i >= 0; i-- {
		if ps[i].UserId == user {
			return ps[i]
		}
	}
	return nil
}

const text = parleyv1.MessageKind_MESSAGE_KIND_TEXT

// assertDense checks that msgs carry seqs first, first+1, … in order, each once.
func assertDense(t *testing.T, msgs []*parleyv1.Message, first uint64) {
	t.Helper()
	for i, m := range msgs {
		if want := first + uint64(i); m.Seq != want {
			t.Fatalf("message %d has seq %d, want %d (seqs must be dense and in order)", i, m.Seq, want)
		}
	}
}
