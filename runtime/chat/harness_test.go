package chat

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/bus"
	busmem "github.com/parleychat/parley/runtime/bus/memory"
	"github.com/parleychat/parley/runtime/chat/ingress"
	"github.com/parleychat/parley/runtime/chat/internal/chattest"
	"github.com/parleychat/parley/runtime/presence"
	presmem "github.com/parleychat/parley/runtime/presence/memory"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/store/pebble"
)

// env is a chat role wired to real components: a Pebble store in a temp
// dir, the in-memory bus, the memory session registry, and two test
// gateways ("gateway-0", "gateway-1") that feed replies to their Clients and
// record the deliveries they would push.
type env struct {
	ctx    context.Context
	cfg    Config
	st     store.MessageStore
	b      *busmem.Bus
	reg    presence.Registry
	router *Router
	q      *Queries
	gws    []*testGateway

	mu    sync.Mutex
	stops []func()
}

type testGateway struct {
	id     string
	client *ingress.Client

	mu         sync.Mutex
	deliveries []*parleyv1.Delivery
	records    int
}

func newEnv(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := DefaultConfig()
	cfg.ReceiptFlush = 20 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	st, err := pebble.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := busmem.New()
	if err := EnsureTopics(ctx, b, cfg, 4, 2); err != nil {
		t.Fatal(err)
	}
	reg := presmem.New()
	e := &env{ctx: ctx, cfg: cfg, st: st, b: b, reg: reg, router: NewRouter(b, reg, cfg.DeliverTopic), q: NewQueries(st)}
	for i := range 2 {
		gw := &testGateway{id: fmt.Sprintf("gateway-%d", i)}
		gw.client = ingress.NewClient(b, gw.id, cfg.IngressTopic)
		go gw.client.Run(ctx)
		if err := b.Subscribe(ctx, cfg.DeliverTopic, int32(i), gw.handle); err != nil {
			t.Fatal(err)
		}
		e.gws = append(e.gws, gw)
	}
	e.q.NotifyBlocksTo(e.gws[0].client)
	t.Cleanup(func() {
		cancel()
		e.mu.Lock()
		stops := e.stops
		e.mu.Unlock()
		for _, stop := range stops {
			stop()
		}
		_ = b.Close()
		_ = reg.Close()
		_ = st.Close()
	})
	return e
}

func (g *testGateway) handle(rec bus.Record) {
	dr := &parleyv1.DeliverRecord{}
	if err := proto.Unmarshal(rec.Value, dr); err != nil {
		panic(err)
	}
	// Deliveries first: a test that got its reply may look for the pushes
	// published in the same record.
	g.mu.Lock()
	g.records++
	g.deliveries = append(g.deliveries, dr.GetDeliveries()...)
	g.mu.Unlock()
	for _, rep := range dr.GetReplies() {
		g.client.HandleReply(rep)
	}
}

// startSequencer runs a sequencer until the test ends (or stop is called)
// and waits until it owns a partition.
func (e *env) startSequencer(tb testing.TB, member string, node int64) (s *Sequencer, stop func()) {
	tb.Helper()
	cfg := e.cfg
	cfg.Member, cfg.NodeID = member, node
	s, err := NewSequencer(cfg, e.st, e.b, e.router)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("sequencer %s: %v", member, err)
			}
		})
	}
	e.mu.Lock()
	e.stops = append(e.stops, stop)
	e.mu.Unlock()
	waitFor(tb, "sequencer owns partitions", func() bool { return len(s.owned()) > 0 })
	return s, stop
}

// call sends rec through gateway-0's client and waits for the reply.
func (e *env) call(rec *parleyv1.IngressRecord) (*parleyv1.Reply, error) {
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	return e.gws[0].client.Call(ctx, rec)
}

func (e *env) send(user, conv, cmid, text string) (*parleyv1.Reply, error) {
	return e.call(sendRec(user, conv, cmid, text))
}

func (e *env) mustSend(tb testing.TB, user, conv, cmid, text string) *parleyv1.SendOk {
	tb.Helper()
	rep, err := e.send(user, conv, cmid, text)
	if err != nil {
		tb.Fatalf("send %s by %s: %v", cmid, user, err)
	}
	return rep.GetSendOk()
}

func (e *env) createGroup(tb testing.TB, user, title string, members ...string) string {
	tb.Helper()
	rep, err := e.call(&parleyv1.IngressRecord{Origin: origin(user), Op: &parleyv1.IngressRecord_CreateGroup{
		CreateGroup: &parleyv1.CreateGroup{Title: title, Members: members}}})
	if err != nil {
		tb.Fatalf("create group: %v", err)
	}
	return rep.GetEvent().GetConversationId()
}

func addRec(user, conv string, users ...string) *parleyv1.IngressRecord {
	return &parleyv1.IngressRecord{Origin: origin(user), ConversationId: conv, Op: &parleyv1.IngressRecord_AddMembers{
		AddMembers: &parleyv1.ChangeMembers{UserIds: users}}}
}

func removeRec(user, conv string, users ...string) *parleyv1.IngressRecord {
	return &parleyv1.IngressRecord{Origin: origin(user), ConversationId: conv, Op: &parleyv1.IngressRecord_RemoveMembers{
		RemoveMembers: &parleyv1.ChangeMembers{UserIds: users}}}
}

func readRec(user, conv string, seq uint64) *parleyv1.IngressRecord {
	return &parleyv1.IngressRecord{Origin: origin(user), ConversationId: conv, Op: &parleyv1.IngressRecord_Read{
		Read: &parleyv1.Read{ConversationId: conv, Seq: seq}}}
}

func ackRec(user, conv string, seq uint64) *parleyv1.IngressRecord {
	return &parleyv1.IngressRecord{Origin: origin(user), ConversationId: conv, Op: &parleyv1.IngressRecord_Ack{
		Ack: &parleyv1.Ack{ConversationId: conv, Seq: seq}}}
}

// online registers a session of user on gateway gw (0 or 1).
func (e *env) online(tb testing.TB, user string, gw int) {
	tb.Helper()
	err := e.reg.Touch(e.ctx, presence.Session{
		UserID: user, DeviceID: "d1", SessionID: "sess-" + user, GatewayID: fmt.Sprintf("gateway-%d", gw),
		Expires: time.Now().Add(time.Hour),
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// pushes returns the deliveries gateway gw received for user, filtered by keep.
func (e *env) pushes(gw int, user string, keep func(*parleyv1.Delivery) bool) []*parleyv1.Delivery {
	g := e.gws[gw]
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*parleyv1.Delivery
	for _, d := range g.deliveries {
		for _, u := range d.GetUserIds() {
			if u == user && (keep == nil || keep(d)) {
				out = append(out, d)
				break
			}
		}
	}
	return out
}

func isMessage(seq uint64) func(*parleyv1.Delivery) bool {
	return func(d *parleyv1.Delivery) bool { return d.GetMessage() != nil && d.GetMessage().GetSeq() == seq }
}

func isReceipt(kind parleyv1.ReceiptKind) func(*parleyv1.Delivery) bool {
	return func(d *parleyv1.Delivery) bool { return d.GetReceipt().GetKind() == kind }
}

// log returns conv's whole log, oldest first, checking that seqs are dense from 1.
func (e *env) log(tb testing.TB, conv string) []*parleyv1.Message {
	tb.Helper()
	head, err := e.st.Head(e.ctx, conv)
	if err != nil {
		tb.Fatal(err)
	}
	var all []*parleyv1.Message
	var after uint64
	for after < head {
		page := store.Page{After: after, Limit: store.MaxLimit}
		if after == 0 {
			page = store.Page{Before: store.MaxLimit + 1, Limit: store.MaxLimit}
		}
		msgs, _, err := e.st.Messages(e.ctx, conv, page)
		if err != nil {
			tb.Fatal(err)
		}
		if after == 0 {
			for i, j := 0, len(msgs)-1; i < j; i, j = i+1, j-1 {
				msgs[i], msgs[j] = msgs[j], msgs[i]
			}
		}
		if len(msgs) == 0 {
			break
		}
		all = append(all, msgs...)
		after = msgs[len(msgs)-1].GetSeq()
	}
	for i, m := range all {
		if m.GetSeq() != uint64(i+1) {
			tb.Fatalf("%s: message %d has seq %d: log not dense", conv, i, m.GetSeq())
		}
	}
	if uint64(len(all)) != head {
		tb.Fatalf("%s: head %d but %d messages", conv, head, len(all))
	}
	return all
}

// The helpers every chat test package shares (internal/chattest).
var (
	waitFor = chattest.WaitFor
	origin  = chattest.Origin
	sendRec = chattest.SendRec
	code    = chattest.Code
)
