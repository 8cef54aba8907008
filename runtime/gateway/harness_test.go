package gateway

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/bus/memory"
	"github.com/parleychat/parley/runtime/chat"
	"github.com/parleychat/parley/runtime/chat/ingress"
	"github.com/parleychat/parley/runtime/chat/rules"
	"github.com/parleychat/parley/runtime/metrics"
	"github.com/parleychat/parley/runtime/presence"
	presencememory "github.com/parleychat/parley/runtime/presence/memory"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/store/pebble"
	"github.com/parleychat/parley/runtime/wire"
)

// waitFor is how long a test waits for an event before it fails.
const waitFor = 5 * time.Second

// harness runs a gateway in embedded mode with real pieces: dev tokens,
// Pebble, the memory bus, memory presence, and the chat role's sequencer,
// router, client and queries.
type harness struct {
	t      testing.TB
	g      *Gateway
	srv    *httptest.Server
	url    string
	issuer *auth.DevIssuer
	bus    *memory.Bus
	st     *pebble.Store
	ps     *presence.Service
	m      *metrics.Metrics
	chat   chat.Config
}

type harnessOpts struct {
	cfg      Config
	verifier auth.Verifier // default: the dev HMAC verifier
	grace    time.Duration // presence grace
}

func newHarness(t testing.TB, opts ...func(*harnessOpts)) *harness {
	t.Helper()
	o := harnessOpts{cfg: Config{Heartbeat: time.Second}, grace: 50 * time.Millisecond}
	for _, f := range opts {
		f(&o)
	}
	secret := []byte(strings.Repeat("k", auth.DevSecretBytes))
	if o.verifier == nil {
		o.verifier = auth.NewHMACVerifier(secret)
	}
	ctx, cancel := context.WithCancel(context.Background())

	h := &harness{t: t, issuer: auth.NewDevIssuer(secret), bus: memory.New(), chat: chat.DefaultConfig()}
	if err := chat.EnsureTopics(ctx, h.bus, h.chat, 4, 1); err != nil {
		t.Fatal(err)
	}
	st, err := pebble.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h.st = st
	reg := presencememory.New()
	var gw atomic.Pointer[Gateway]
	h.ps = presence.NewService(reg, presence.Config{Heartbeat: o.cfg.Heartbeat, TTL: 3 * o.cfg.Heartbeat, Grace: o.grace},
		func(p *parleyv1.Presence) {
			if g := gw.Load(); g != nil {
				g.PresenceChanged(p)
			}
		})
	router := chat.NewRouter(h.bus, reg, h.chat.DeliverTopic)
	seq, err := chat.NewSequencer(h.chat, st, h.bus, router)
	if err != nil {
		t.Fatal(err)
	}
	cc := ingress.NewClient(h.bus, "gateway-0", h.chat.IngressTopic)
	h.m = metrics.New(prometheus.NewRegistry())
	cfg := o.cfg
	cfg.ID = "gateway-0"
	cfg.Bus = h.bus
	cfg.DeliverTopic = h.chat.DeliverTopic
	h.g = New(cfg, Deps{Verifier: o.verifier, Ingress: cc, Queries: chat.NewQueries(st), Router: router, Presence: h.ps, Metrics: h.m})
	gw.Store(h.g)

	done := make(chan struct{}, 4)
	run := func(f func()) {
		go func() {
			defer func() { done <- struct{}{} }()
			f()
		}()
	}
	run(func() { _ = seq.Run(ctx) })
	run(func() { cc.Run(ctx) })
	run(func() { h.ps.Run(ctx) })
	run(func() {
		if err := h.g.Run(ctx); err != nil {
			t.Errorf("gateway run: %v", err)
		}
	})
	h.srv = httptest.NewServer(h.g)
	h.url = "ws" + strings.TrimPrefix(h.srv.URL, "http") + Path
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), waitFor)
		if err := h.g.Drain(dctx, 0); err != nil {
			t.Errorf("drain at cleanup: %v", err)
		}
		dcancel()
		h.srv.Close()
		cancel()
		for range 4 {
			<-done
		}
		_ = h.bus.Close()
		_ = st.Close()
	})
	h.waitSubscribed()
	return h
}

// waitSubscribed returns once the gateway reads its deliver partition: it
// publishes a typing delivery to a probe session until one arrives.
func (h *harness) waitSubscribed() {
	h.t.Helper()
	c := h.dial("probe", "d", wire.SubprotocolProto)
	rec, _ := proto.Marshal(&parleyv1.DeliverRecord{Deliveries: []*parleyv1.Delivery{{
		UserIds: []string{"probe"},
		Body:    &parleyv1.Delivery_Typing{Typing: &parleyv1.Typing{ConversationId: "g:1", UserId: "x"}},
	}}})
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		if err := h.bus.Publish(context.Background(), h.chat.DeliverTopic, 0, nil, rec); err != nil {
			h.t.Fatal(err)
		}
		if _, ok := c.tryNext(20 * time.Millisecond); ok {
			c.closeNormal()
			// The probe's session ends asynchronously; tests count
			// connections from zero.
			h.waitConnections(0)
			return
		}
	}
	h.t.Fatal("gateway did not subscribe to its deliver partition")
}

func (h *harness) token(user, device string) string {
	h.t.Helper()
	tok, err := h.issuer.Issue(user, device, time.Hour)
	if err != nil {
		h.t.Fatal(err)
	}
	return tok
}

// dial connects user's device with subprotocol and reads the Welcome.
func (h *harness) dial(user, device, sub string) *wsClient {
	h.t.Helper()
	c := h.dialNoRead(user, device, sub)
	c.startReading()
	f := c.next()
	if f.GetWelcome() == nil {
		h.t.Fatalf("first frame is %v, want welcome", f)
	}
	c.welcome = f.GetWelcome()
	return c
}

// dialNoRead connects without reading anything (a stalled client).
func (h *harness) dialNoRead(user, device, sub string) *wsClient {
	h.t.Helper()
	d := websocket.Dialer{Subprotocols: []string{sub}, HandshakeTimeout: waitFor}
	hdr := http.Header{"Authorization": {"Bearer " + h.token(user, device)}}
	conn, resp, err := d.Dial(h.url, hdr)
	if err != nil {
		h.t.Fatalf("dial %s/%s: %v (response %v)", user, device, err, resp)
	}
	if conn.Subprotocol() != sub {
		h.t.Fatalf("negotiated %q, want %q", conn.Subprotocol(), sub)
	}
	codec, _ := wire.CodecFor(sub)
	c := &wsClient{t: h.t, conn: conn, codec: codec, frames: make(chan *parleyv1.ServerFrame, 4096), done: make(chan struct{})}
	h.t.Cleanup(func() { _ = conn.Close() })
	return c
}

func (h *harness) waitConnections(n int) {
	h.t.Helper()
	eventually(h.t, "connections == n", func() bool { return h.g.Connections() == n })
}

// createDM stores DM a-b with both as members, as the chat role would.
func (h *harness) createDM(a, b string) string {
	h.t.Helper()
	conv := rules.DMID(a, b)
	ctx := context.Background()
	if err := h.st.CreateConversation(ctx, store.Conversation{ID: conv, Kind: store.KindDM, CreatedBy: a, CreatedAt: time.Now()}); err != nil {
		h.t.Fatal(err)
	}
	err := h.st.Append(ctx, conv, []*parleyv1.Message{{ConversationId: conv, Seq: 1, MessageId: 1, SenderId: a,
		Kind: parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED, Members: []string{a, b}, CreatedAt: time.Now().UnixMilli()}},
		store.PutMember(1, store.Member{UserID: a, JoinedSeq: 1, Role: store.RoleMember}),
		store.PutMember(1, store.Member{UserID: b, JoinedSeq: 1, Role: store.RoleMember}))
	if err != nil {
		h.t.Fatal(err)
	}
	return conv
}

// counter reads a counter or gauge.
func counter(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.GetGauge().GetValue()
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wsClient is a raw protocol client: a background reader feeds frames to a
// channel, so a test can wait for a frame with a deadline without
// corrupting the connection (a gorilla read that times out does).
type wsClient struct {
	t       testing.TB
	conn    *websocket.Conn
	codec   wire.Codec
	frames  chan *parleyv1.ServerFrame
	done    chan struct{}
	err     error // why reading ended; set before done is closed
	welcome *parleyv1.Welcome
	nextID  uint64
}

func (c *wsClient) startReading() {
	go func() {
		defer close(c.done)
		for {
			_, data, err := c.conn.ReadMessage()
			if err != nil {
				c.err = err
				return
			}
			f, err := c.codec.DecodeServer(data)
			if err != nil {
				c.err = err
				return
			}
			c.frames <- f
		}
	}()
}

func (c *wsClient) sendFrame(f *parleyv1.ClientFrame) uint64 {
	c.t.Helper()
	if f.Id == 0 {
		c.nextID++
		f.Id = c.nextID
	}
	b, err := c.codec.EncodeClient(f)
	if err != nil {
		c.t.Fatal(err)
	}
	mt := websocket.TextMessage
	if c.codec.Binary {
		mt = websocket.BinaryMessage
	}
	if err := c.conn.WriteMessage(mt, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
	return f.Id
}

func (c *wsClient) writeRaw(mt int, b []byte) {
	c.t.Helper()
	if err := c.conn.WriteMessage(mt, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *wsClient) tryNext(d time.Duration) (*parleyv1.ServerFrame, bool) {
	select {
	case f := <-c.frames:
		return f, true
	case <-time.After(d):
		return nil, false
	}
}

// next returns the next frame, failing if the connection ends first.
func (c *wsClient) next() *parleyv1.ServerFrame {
	c.t.Helper()
	select {
	case f := <-c.frames:
		return f
	case <-c.done:
		select {
		case f := <-c.frames:
			return f
		default:
		}
		c.t.Fatalf("connection ended while waiting for a frame: %v", c.err)
	case <-time.After(waitFor):
		c.t.Fatal("timed out waiting for a frame")
	}
	return nil
}

// nextMatching skips frames until one satisfies ok.
func (c *wsClient) nextMatching(what string, ok func(*parleyv1.ServerFrame) bool) *parleyv1.ServerFrame {
	c.t.Helper()
	deadline := time.Now().Add(waitFor)
	for time.Now().Before(deadline) {
		if f := c.next(); ok(f) {
			return f
		}
	}
	c.t.Fatalf("no %s frame", what)
	return nil
}

// reply waits for the frame answering request id.
func (c *wsClient) reply(id uint64) *parleyv1.ServerFrame {
	c.t.Helper()
	return c.nextMatching("reply", func(f *parleyv1.ServerFrame) bool { return f.GetId() == id })
}

// roundTrip sends a ping and returns the frames that arrived before the pong.
func (c *wsClient) roundTrip() []*parleyv1.ServerFrame {
	c.t.Helper()
	id := c.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Ping{Ping: &parleyv1.Ping{}}})
	var before []*parleyv1.ServerFrame
	for {
		f := c.next()
		if f.GetId() == id && f.GetPong() != nil {
			return before
		}
		before = append(before, f)
	}
}

// closed waits for the connection to end and returns its close code
// (websocket.CloseAbnormalClosure when it ended without a close frame),
// and the frames read before.
func (c *wsClient) closed() (int, []*parleyv1.ServerFrame) {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(waitFor):
		c.t.Fatal("connection did not close")
	}
	var frames []*parleyv1.ServerFrame
	for len(c.frames) > 0 {
		frames = append(frames, <-c.frames)
	}
	var ce *websocket.CloseError
	if errors.As(c.err, &ce) {
		return ce.Code, frames
	}
	return websocket.CloseAbnormalClosure, frames
}

func (c *wsClient) closeNormal() {
	_ = c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	_ = c.conn.Close()
}

func TestMain(m *testing.M) {
	// The chat role logs every partition assignment; keep test output to
	// warnings unless -v.
	flag.Parse()
	if !testing.Verbose() {
		slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	}
	os.Exit(m.Run())
}
