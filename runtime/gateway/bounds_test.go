package gateway

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleychat/parley/runtime/chat"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// holdWriter keeps s's writer from starting, so frames stay queued; the
// returned func starts it.
func holdWriter(t *testing.T, s *session) (release func()) {
	t.Helper()
	eventually(t, "writer idle", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.writing {
			return false
		}
		s.writing = true
		return true
	})
	return func() {
		s.mu.Lock()
		s.writing = false
		s.mu.Unlock()
		go s.writeLoop()
	}
}

func onlySession(t *testing.T, h *harness, user string) *session {
	t.Helper()
	var s *session
	h.g.hub.sessions(user, func(x *session) { s = x })
	if s == nil {
		t.Fatalf("no session of %s", user)
	}
	return s
}

// TestSlowConsumerQueueBytes: the queue is bounded by bytes as well as
// frames, with the same policy: a frame past the byte bound evicts typing
// and presence first, and closes the session as a slow consumer when that
// is not enough; a droppable frame that does not fit is dropped.
func TestSlowConsumerQueueBytes(t *testing.T) {
	const bound = 3000
	h := newHarness(t, func(o *harnessOpts) { o.cfg.SendQueueBytes = bound })
	c := h.dial("alice", "d", wire.SubprotocolProto)
	s := onlySession(t, h, "alice")
	release := holdWriter(t, s)

	typing := &pushFrame{frame: &parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Typing{Typing: &parleyv1.Typing{ConversationId: "g:1", UserId: "bob"}}}, droppable: true}
	message := func(seq uint64, n int) *pushFrame {
		return &pushFrame{frame: &parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Message{Message: &parleyv1.Message{
			ConversationId: "g:1", Seq: seq, Text: strings.Repeat("x", n)}}}}
	}
	accounted := func() (queued, sum int) {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.queueBytes, queuedBytes(s.queue)
	}
	if !message(1, 1000).push(h.g, s) || !typing.push(h.g, s) || !message(2, 1000).push(h.g, s) {
		t.Fatal("not queued below the byte bound")
	}
	if q, sum := accounted(); q != sum || q < 2000 || q > bound {
		t.Fatalf("queued bytes %d, frames sum to %d", q, sum)
	}
	// A droppable frame that does not fit is dropped, without a close.
	big := &pushFrame{frame: message(0, 1000).frame, droppable: true}
	if big.push(h.g, s) {
		t.Fatal("droppable frame queued past the byte bound")
	}
	// A message that fits only once the typing frame is evicted: its
	// encoded size is exactly what is left without typing.
	_, before := accounted()
	size := func(p *pushFrame) int {
		_, n, err := encodeFrame(true, p.frame)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	typingSize := size(typing)
	target := bound - (before - typingSize)
	n := target
	for n > 0 {
		if size(message(3, n)) <= target {
			break
		}
		n--
	}
	m3 := message(3, n)
	if sz := size(m3); before+sz <= bound {
		t.Fatalf("test setup: a %d-byte frame fits beside %d bytes", sz, before)
	}
	if !m3.push(h.g, s) {
		t.Fatal("message not queued after evicting typing")
	}
	q, sum := accounted()
	if q != sum || q > bound {
		t.Fatalf("after eviction: queued bytes %d, frames sum to %d, bound %d", q, sum, bound)
	}
	if counter(h.m.SlowConsumers) != 0 {
		t.Fatal("closed while frames still fit")
	}
	if message(4, 1000).push(h.g, s) {
		t.Fatal("message queued past the byte bound")
	}
	if got := counter(h.m.SlowConsumers); got != 1 {
		t.Fatalf("slow consumers %v, want 1", got)
	}
	if q, sum := accounted(); q != 0 || sum != 0 {
		t.Fatalf("closed session still accounts %d bytes (%d queued)", q, sum)
	}
	release()
	if code, frames := c.closed(); code != wire.CloseSlowConsumer || len(frames) != 0 {
		t.Fatalf("close %d after %d frames, want %d without the queued frames", code, len(frames), wire.CloseSlowConsumer)
	}
}

// TestQueueBytesOneLargeFrame: an empty queue takes one frame over the byte
// bound (a reply is never refused for its size alone), and the accounting
// returns to zero once the writer has written everything.
func TestQueueBytesOneLargeFrame(t *testing.T) {
	h := newHarness(t, func(o *harnessOpts) { o.cfg.SendQueueBytes = 100 })
	c := h.dial("alice", "d", wire.SubprotocolJSON)
	s := onlySession(t, h, "alice")
	idle := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.queueBytes == 0 && !s.writing
	}
	eventually(t, "the welcome written", idle) // the queue is empty
	f := &pushFrame{frame: &parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Message{Message: &parleyv1.Message{
		ConversationId: "g:1", Seq: 1, Text: strings.Repeat("y", 1000)}}}}
	if !f.push(h.g, s) {
		t.Fatal("a frame over the byte bound was refused by an empty queue")
	}
	if got := c.next(); got.GetMessage().GetSeq() != 1 {
		t.Fatalf("got %v", got)
	}
	// Written: the accounting is back to zero (a frame counts until the
	// writer is done with its batch), and the connection goes on.
	eventually(t, "queue accounting back to zero", idle)
	c.roundTrip()
	if counter(h.m.SlowConsumers) != 0 {
		t.Fatal("closed as slow consumer")
	}
}

// TestHistoryFloodBounded: a JSON client that never reads and asks for the
// same page of large messages 300 times is closed as a slow consumer, and
// its queue never holds more than Config.SendQueueBytes (or one frame):
// what one connection can make the server hold is bounded. Each reply is
// bounded too (chat.MaxPageBytes).
func TestHistoryFloodBounded(t *testing.T) {
	h := newHarness(t, func(o *harnessOpts) { o.cfg.WriteTimeout = 300 * time.Millisecond })
	conv := h.createDM("big1", "big2")
	// 200 messages of 4096 bytes of \x01, each 6 bytes in JSON (\u0001):
	// stored directly, as a server before the text rules may have.
	text := strings.Repeat("\x01", 4096)
	msgs := make([]*parleyv1.Message, 200)
	for i := range msgs {
		msgs[i] = &parleyv1.Message{ConversationId: conv, Seq: uint64(i + 2), MessageId: int64(i + 2), SenderId: "big1",
			ClientMsgId: fmt.Sprint("m", i), Kind: parleyv1.MessageKind_MESSAGE_KIND_TEXT, Text: text, CreatedAt: time.Now().UnixMilli()}
	}
	if err := h.st.Append(context.Background(), conv, msgs); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var enqueued, maxQueued, maxFrame int
	var over []string
	hook := func(queued, frame int) {
		mu.Lock()
		defer mu.Unlock()
		enqueued++
		maxQueued, maxFrame = max(maxQueued, queued), max(maxFrame, frame)
		if queued > DefaultSendQueueBytes && queued != frame {
			over = append(over, fmt.Sprintf("%d bytes queued with a %d-byte frame", queued, frame))
		}
	}
	enqueueHook.Store(&hook)
	t.Cleanup(func() { enqueueHook.Store(nil) })

	c := h.dialNoRead("big2", "d", wire.SubprotocolJSON)
	h.waitConnections(1)
	const requests = 300
	for k := 1; k <= requests; k++ {
		frame := fmt.Sprintf(`{"id":%d,"history":{"conversation_id":%q,"limit":200}}`, k, conv)
		if err := c.conn.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
			break // the server closed the connection
		}
	}
	eventually(t, "the flooding client closed as a slow consumer", func() bool { return counter(h.m.SlowConsumers) == 1 })
	h.waitConnections(0)

	mu.Lock()
	defer mu.Unlock()
	if len(over) > 0 {
		t.Fatalf("queue passed %d bytes: %v", DefaultSendQueueBytes, over)
	}
	if enqueued >= requests {
		t.Fatalf("%d frames queued for %d requests: the queue did not stop the flood", enqueued, requests)
	}
	// One page is cut near chat.MaxPageBytes (measured as JSON would be);
	// JSON field names add a little per message.
	if maxFrame > chat.MaxPageBytes*5/4 {
		t.Fatalf("a history reply of %d bytes; pages are cut near %d", maxFrame, chat.MaxPageBytes)
	}
	t.Logf("%d frames queued, at most %d bytes at once, largest frame %d bytes", enqueued, maxQueued, maxFrame)
}

// TestHistoryAfterZero: history with after present and 0 pages forward from
// the very start of the log (seq 1, oldest first), in both subprotocols;
// with after absent, the newest page, newest first.
func TestHistoryAfterZero(t *testing.T) {
	h := newHarness(t)
	conv := h.createDM("alice", "bob")
	alice := h.dial("alice", "d", wire.SubprotocolProto)
	for i := range 5 {
		alice.reply(alice.sendFrame(sendFrame(conv, fmt.Sprint("m", i), fmt.Sprint("text ", i))))
	} // seqs 1 (creation) .. 6
	seqs := func(r *parleyv1.HistoryResult) (out []uint64) {
		for _, m := range r.GetMessages() {
			out = append(out, m.GetSeq())
		}
		return out
	}
	zero := uint64(0)
	id := alice.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_History{History: &parleyv1.History{ConversationId: conv, After: &zero, Limit: 3}}})
	if r := alice.reply(id).GetHistoryResult(); fmt.Sprint(seqs(r)) != "[1 2 3]" || !r.GetHasMore() {
		t.Fatalf("proto after=0: seqs %v has_more %v, want [1 2 3] true", seqs(r), r.GetHasMore())
	}

	bob := h.dial("bob", "d", wire.SubprotocolJSON)
	for _, tc := range []struct{ frame, want string }{
		{`{"id":1,"history":{"conversation_id":%q,"after":"0","limit":3}}`, "[1 2 3]"},
		{`{"id":2,"history":{"conversation_id":%q,"after":0,"limit":3}}`, "[1 2 3]"},
		{`{"id":3,"history":{"conversation_id":%q,"limit":3}}`, "[6 5 4]"},
		{`{"id":4,"history":{"conversation_id":%q,"before":"0","limit":3}}`, "[6 5 4]"},
	} {
		bob.writeRaw(websocket.TextMessage, []byte(fmt.Sprintf(tc.frame, conv)))
		f := bob.next()
		if got := fmt.Sprint(seqs(f.GetHistoryResult())); got != tc.want {
			t.Fatalf("%s: %v, want seqs %s", tc.frame, f, tc.want)
		}
	}
	bob.writeRaw(websocket.TextMessage, []byte(fmt.Sprintf(`{"id":5,"history":{"conversation_id":%q,"after":"0","before":"3"}}`, conv)))
	if f := bob.next(); f.GetId() != 5 || f.GetError().GetCode() != wire.CodeInvalid {
		t.Fatalf("after=0 with before: %v, want invalid", f)
	}
}

// TestUndecodableFrameKeepsID: a frame that fails to decode is answered
// with its id when the id can be read, so a client waiting on it does not
// hang; the message names the problem without the library's prefix.
func TestUndecodableFrameKeepsID(t *testing.T) {
	h := newHarness(t)
	j := h.dial("alice", "json", wire.SubprotocolJSON)
	for _, tc := range []struct {
		frame string
		id    uint64
		want  string
	}{
		{`{"id":1,"bogus":5,"ping":{}}`, 1, `unknown field "bogus"`},
		{`{"id":"7","ping":{"x":1}}`, 7, `unknown field "x"`},
		{`{"ping":{},"id":8,"send":{}}`, 8, "already set"},
		{`{"id":9,"send":{"conversation_id":"dm:alice:bob",`, 9, "undecodable"},
		{`{"id":10,"history":{"after":"x"}}`, 10, "after"},
		{`{"id":-1,"ping":{}}`, 0, "id"},
		{`{"id":18446744073709551616,"ping":{}}`, 0, "id"}, // 2^64: no id, not a clamped one (issue 14)
		{`{"id":11,"send":{"conversation_id":"dm:alice:bob","client_msg_id":"s","text":"x\ud800"}}`, 11, "lone UTF-16 surrogate escape at byte"},
		{`[1]`, 0, "undecodable"},
	} {
		j.writeRaw(websocket.TextMessage, []byte(tc.frame))
		f := j.next()
		e := f.GetError()
		if f.GetId() != tc.id || e.GetCode() != wire.CodeInvalid || !strings.Contains(e.GetMessage(), tc.want) ||
			strings.Contains(e.GetMessage(), "proto:") {
			t.Errorf("%s: id %d, error %v; want id %d, invalid naming %q without \"proto:\"", tc.frame, f.GetId(), e, tc.id, tc.want)
		}
	}
	j.roundTrip() // still connected: invalid frames are answered, not fatal

	p := h.dial("alice", "proto", wire.SubprotocolProto)
	for _, tc := range []struct {
		frame []byte
		id    uint64
	}{
		{[]byte{0x08, 0x07, 0xff, 0xff, 0xff}, 7},             // id 7, then garbage
		{[]byte{0x08, 0x05, 0x08, 0x06, 0x12, 0x09, 0x01}, 6}, // the last id, then a truncated send
		{[]byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x01}, 0},
	} {
		p.writeRaw(websocket.BinaryMessage, tc.frame)
		f := p.next()
		if f.GetId() != tc.id || f.GetError().GetCode() != wire.CodeInvalid || strings.Contains(f.GetError().GetMessage(), "proto:") {
			t.Errorf("%x: %v, want invalid with id %d", tc.frame, f, tc.id)
		}
	}
	p.roundTrip()
}

func TestDecodeProblem(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"id":1,"bogus":5}`, `undecodable frame: unknown field "bogus" at line 1:9`},
		{`[1]`, `undecodable frame: syntax error: unexpected token [ at line 1:1`},
	} {
		_, err := wire.Codec{}.DecodeClient([]byte(tc.in))
		if got := decodeProblem(err); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestSendTextControls: the gateway refuses control characters in message
// text except \n, \r and \t, before the send costs anything.
func TestSendTextControls(t *testing.T) {
	h := newHarness(t)
	conv := h.createDM("alice", "bob")
	c := h.dial("alice", "d", wire.SubprotocolProto)
	for i, text := range []string{"nul\x00", "esc\x1b[31m", "del\x7f", "c1\u009b"} {
		if e := c.reply(c.sendFrame(sendFrame(conv, fmt.Sprint("bad", i), text))).GetError(); e.GetCode() != wire.CodeInvalid || !strings.Contains(e.GetMessage(), "control character") {
			t.Errorf("%q: %v, want invalid", text, e)
		}
	}
	if ok := c.reply(c.sendFrame(sendFrame(conv, "good", "two\nlines\tand\r\nCRLF"))).GetSendOk(); ok == nil {
		t.Fatal("text with newline, tab and CR refused")
	}
}
