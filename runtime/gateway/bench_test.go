package gateway

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

func benchMessage() *parleyv1.Message {
	return &parleyv1.Message{
		ConversationId: "g:1799512345678901248",
		Seq:            123456,
		MessageId:      1799512345678901249,
		SenderId:       "alice@example.com",
		ClientMsgId:    "3f0c6a1e-8d5b-4a57-9a1e-2b7f0c9d4e11",
		Kind:           parleyv1.MessageKind_MESSAGE_KIND_TEXT,
		Text:           strings.Repeat("hello, world ", 10),
		CreatedAt:      time.Now().UnixMilli(),
	}
}

// BenchmarkFanout measures the gateway's write path for one delivery to N
// local sessions of N users (half on each subprotocol): encode once per
// subprotocol, queue on every session, write the same prepared frame. An op
// is one delivery written to every recipient; allocations are the whole
// process's (the clients' readers discard frames without decoding).
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			h := newHarness(b, func(o *harnessOpts) { o.cfg.Heartbeat = time.Minute })
			var received atomic.Int64
			users := make([]string, n)
			for i := range n {
				users[i] = fmt.Sprintf("u%d", i)
				sub := wire.SubprotocolProto
				if i%2 == 1 {
					sub = wire.SubprotocolJSON
				}
				conn := h.dialRaw(users[i], sub)
				go func() {
					for {
						_, r, err := conn.NextReader()
						if err != nil {
							return
						}
						_, _ = io.Copy(io.Discard, r)
						received.Add(1)
					}
				}()
			}
			// Every session has its Welcome before measuring.
			for received.Load() < int64(n) {
				runtime.Gosched()
			}
			received.Store(0)
			d := &parleyv1.Delivery{UserIds: users, Body: &parleyv1.Delivery_Message{Message: benchMessage()}}
			// At most window deliveries in flight, so queues stay below
			// SendQueue (a slow-consumer close would end the benchmark).
			const window = 64
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				for received.Load() < int64(i-window)*int64(n) {
					runtime.Gosched()
				}
				if got := h.g.deliver(d); got != n {
					b.Fatalf("delivered to %d sessions, want %d", got, n)
				}
			}
			for received.Load() < int64(b.N)*int64(n) {
				runtime.Gosched()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/recipient")
		})
	}
}

// dialRaw connects user without reading the Welcome.
func (h *harness) dialRaw(user, sub string) *websocket.Conn {
	h.t.Helper()
	d := websocket.Dialer{Subprotocols: []string{sub}}
	conn, _, err := d.Dial(h.url, http.Header{"Authorization": {"Bearer " + h.token(user, "d")}})
	if err != nil {
		h.t.Fatalf("dial: %v", err)
	}
	h.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// BenchmarkEncode measures encoding one message push in each subprotocol,
// including the prepared WebSocket frame fan-out writes.
func BenchmarkEncode(b *testing.B) {
	frame := &parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Message{Message: benchMessage()}}
	for _, sub := range []string{wire.SubprotocolProto, wire.SubprotocolJSON} {
		b.Run(sub, func(b *testing.B) {
			codec, _ := wire.CodecFor(sub)
			mt := websocket.TextMessage
			if codec.Binary {
				mt = websocket.BinaryMessage
			}
			b.ReportAllocs()
			for b.Loop() {
				data, err := codec.EncodeServer(frame)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := websocket.NewPreparedMessage(mt, data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
