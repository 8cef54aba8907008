package region_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/bus"
	busmem "github.com/parleychat/parley/runtime/bus/memory"
	"github.com/parleychat/parley/runtime/chat"
	"github.com/parleychat/parley/runtime/chat/ingress"
	"github.com/parleychat/parley/runtime/chat/rules"
	"github.com/parleychat/parley/runtime/presence"
	presmem "github.com/parleychat/parley/runtime/presence/memory"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/region"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/store/pebble"
	"github.com/parleychat/parley/runtime/wire"
)

// These tests run two regions in one process on the embedded parts (the
// memory bus per region, one Pebble store standing in for the shared
// Cassandra cluster) to check the routing rules quickly; test/multiregion
// runs the same scenarios on real Kafka, Cassandra and Redis in network
// namespaces.

// link is a peer region's bus as seen across a WAN link that can be cut.
type link struct {
	bus.Bus
	cut atomic.Bool
}

var errCut = errors.New("link cut")

func (l *link) PublishAll(ctx context.Context, msgs []bus.Message) []error {
	if l.cut.Load() {
		errs := make([]error, len(msgs))
		for i := range errs {
			errs[i] = fmt.Errorf("%w: %w", bus.ErrNotSent, errCut)
		}
		return errs
	}
	return l.Bus.PublishAll(ctx, msgs)
}

func (l *link) Close() error { return nil } // the peer closes its own bus

// testRegion is one region: its bus, registry, chat role (sequencer,
// outbox, relay) and one gateway ("gateway-0") that records what it would
// push.
type testRegion struct {
	name   string
	id     int
	b      *busmem.Bus
	reg    presence.Registry
	router *chat.Router
	mesh   *region.Mesh
	outbox *region.Outbox
	client *ingress.Client

	mu     sync.Mutex
	pushed []*parleyv1.Delivery
}

type world struct {
	ctx   context.Context
	st    store.MessageStore
	rs    map[string]*testRegion
	links map[string]*link // by the region they lead to
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := pebble.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := &world{ctx: ctx, st: st, rs: map[string]*testRegion{}, links: map[string]*link{}}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		_ = st.Close()
	})
	for _, r := range []struct {
		name string
		id   int
	}{{"eu", 1}, {"us", 2}} {
		b := busmem.New()
		cfg := chat.DefaultConfig()
		cfg.Region = r.name
		cfg.IngressTopic, cfg.DeliverTopic = ingress.IngressTopic(r.name), ingress.DeliverTopic(r.name)
		cfg.ReceiptFlush = 20 * time.Millisecond
		if err := chat.EnsureTopics(ctx, b, cfg, 4, 1); err != nil {
			t.Fatal(err)
		}
		for _, topic := range []string{ingress.RelayTopic(r.name), ingress.OutboxTopic(r.name)} {
			if err := b.CreateTopic(ctx, bus.Topic{Name: topic, Partitions: 4}); err != nil {
				t.Fatal(err)
			}
		}
		w.rs[r.name] = &testRegion{name: r.name, id: r.id, b: b, reg: presmem.New()}
		w.links[r.name] = &link{Bus: b}
	}
	for _, tr := range w.rs {
		var peers []region.Peer
		for _, o := range w.rs {
			if o != tr {
				peers = append(peers, region.Peer{Name: o.name, ID: o.id, Brokers: []string{"x:1"}})
			}
		}
		m, err := region.NewMesh(region.Config{
			Local: tr.name, LocalID: tr.id, Own: tr.b, Peers: peers, PublishTimeout: time.Second,
			Dial: func(p region.Peer) (bus.Bus, error) { return w.links[p.Name], nil },
		})
		if err != nil {
			t.Fatal(err)
		}
		tr.mesh = m
		tr.router = chat.NewRouter(tr.b, tr.reg, ingress.DeliverTopic(tr.name))
		tr.router.SetRegions(m)
		cfg := chat.DefaultConfig()
		cfg.Region, cfg.Member, cfg.NodeID = tr.name, "chat-0", int64(tr.id)<<7
		cfg.IngressTopic, cfg.DeliverTopic = ingress.IngressTopic(tr.name), ingress.DeliverTopic(tr.name)
		cfg.Regions = m
		seq, err := chat.NewSequencer(cfg, st, tr.b, tr.router)
		if err != nil {
			t.Fatal(err)
		}
		ob := region.NewOutbox(m, tr.b, tr.router.Reply, "chat-0")
		tr.outbox = ob
		rl := region.NewRelay(m, tr.b, tr.router, "chat-0")
		rl.StorePresence(tr.reg, presence.Config{})
		tr.client = ingress.NewClient(tr.b, "gateway-0", ingress.IngressTopic(tr.name))
		tr.client.SetRegion(tr.name)
		if err := tr.b.Subscribe(ctx, ingress.DeliverTopic(tr.name), 0, tr.handle); err != nil {
			t.Fatal(err)
		}
		run := func(f func(context.Context) error) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := f(ctx); err != nil {
					t.Errorf("region %s: %v", tr.name, err)
				}
			}()
		}
		run(seq.Run)
		run(ob.Run)
		run(rl.Run)
		run(func(ctx context.Context) error { m.Run(ctx); return nil })
		run(func(ctx context.Context) error { tr.client.Run(ctx); return nil })
		for _, ch := range []<-chan struct{}{seq.Joined(), ob.Joined(), rl.Joined()} {
			<-ch
		}
	}
	return w
}

func (tr *testRegion) handle(rec bus.Record) {
	dr := &parleyv1.DeliverRecord{}
	if err := proto.Unmarshal(rec.Value, dr); err != nil {
		panic(err)
	}
	tr.mu.Lock()
	tr.pushed = append(tr.pushed, dr.GetDeliveries()...)
	tr.mu.Unlock()
	for _, rep := range dr.GetReplies() {
		tr.client.HandleReply(rep)
	}
}

// connect registers a session of user on r's gateway and stores its home.
func (w *world) connect(t *testing.T, r, user, home string) string {
	t.Helper()
	sid := "s-" + user + "-" + r
	if err := w.rs[r].reg.Touch(w.ctx, presence.Session{UserID: user, DeviceID: "d", SessionID: sid, GatewayID: "gateway-0", Expires: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.st.(store.UserHomes).SetUserHome(w.ctx, user, home, false); err != nil {
		t.Fatal(err)
	}
	return sid
}

// send sends text from user's session in region r and returns the reply.
func (w *world) send(t *testing.T, r, user, home, conv, cmid, text string) *parleyv1.Reply {
	t.Helper()
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	rec := &parleyv1.IngressRecord{
		Origin:         &parleyv1.Origin{UserId: user, DeviceId: "d", SessionId: "s-" + user + "-" + r, HomeRegion: home},
		ConversationId: conv,
		Op:             &parleyv1.IngressRecord_Send{Send: &parleyv1.Send{ConversationId: conv, ClientMsgId: cmid, Content: &parleyv1.Send_Text{Text: text}}},
	}
	rep, err := w.rs[r].client.Call(ctx, rec)
	if err != nil {
		t.Fatalf("send %q from %s in %s: %v", text, user, r, err)
	}
	if rep.GetError() != nil {
		t.Fatalf("send %q from %s in %s: %v", text, user, r, rep.GetError())
	}
	return rep
}

// waitPushed waits until region r pushed a message with text to user.
func (w *world) waitPushed(t *testing.T, r, user, text string) *parleyv1.Message {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		tr := w.rs[r]
		tr.mu.Lock()
		for _, d := range tr.pushed {
			m := d.GetMessage()
			if m.GetText() == text && contains(d.GetUserIds(), user) {
				tr.mu.Unlock()
				return m
			}
		}
		tr.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	tr := w.rs[r]
	tr.mu.Lock()
	for _, d := range tr.pushed {
		t.Logf("region %s pushed %v", r, d)
	}
	tr.mu.Unlock()
	t.Fatalf("region %s never pushed %q to %s", r, text, user)
	return nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// TestCrossRegionDM: a DM between alice (home eu) and bob (home us) is
// homed in eu (the home of its lower user id); bob's send from us is
// sequenced by eu, answered in us, and each side gets the other's messages
// live through its own region.
func TestCrossRegionDM(t *testing.T) {
	w := newWorld(t)
	w.connect(t, "eu", "alice", "eu")
	w.connect(t, "us", "bob", "us")
	conv := rules.DMID("alice", "bob")

	rep := w.send(t, "us", "bob", "us", conv, "b1", "hello from us")
	if rep.GetSendOk().GetSeq() == 0 {
		t.Fatalf("bob's send got %v, want send_ok with a seq", rep)
	}
	w.waitPushed(t, "eu", "alice", "hello from us")
	rep = w.send(t, "eu", "alice", "eu", conv, "a1", "hello from eu")
	w.waitPushed(t, "us", "bob", "hello from eu")

	c, err := w.st.Conversation(w.ctx, conv)
	if err != nil || c.HomeRegion != "eu" {
		t.Fatalf("conversation = %+v, %v; want home region eu", c, err)
	}
	msgs, _, err := w.st.Messages(w.ctx, conv, store.Page{Forward: true, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for i, m := range msgs {
		if m.GetSeq() != uint64(i+1) {
			t.Errorf("message %d has seq %d: seqs not dense", i, m.GetSeq())
		}
		if m.GetText() != "" {
			texts = append(texts, m.GetText())
		}
	}
	if fmt.Sprint(texts) != "[hello from us hello from eu]" {
		t.Errorf("stored texts = %q", texts)
	}
	if rep.GetSendOk().GetSeq() != msgs[len(msgs)-1].GetSeq() {
		t.Errorf("alice's send_ok seq %d, stored head %d", rep.GetSendOk().GetSeq(), msgs[len(msgs)-1].GetSeq())
	}
}

// TestGroupHomedByCreator: a group created by bob (home us) while roaming in
// eu is minted by us; members in both regions get its messages.
func TestGroupHomedByCreator(t *testing.T) {
	w := newWorld(t)
	w.connect(t, "eu", "alice", "eu")
	w.connect(t, "eu", "bob", "us") // roaming
	w.connect(t, "us", "carol", "us")
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	rep, err := w.rs["eu"].client.Call(ctx, &parleyv1.IngressRecord{
		Origin: &parleyv1.Origin{UserId: "bob", DeviceId: "d", SessionId: "s-bob-eu", HomeRegion: "us"},
		Op:     &parleyv1.IngressRecord_CreateGroup{CreateGroup: &parleyv1.CreateGroup{Title: "t", Members: []string{"alice", "carol"}}},
	})
	if err != nil || rep.GetError() != nil {
		t.Fatalf("create group: %v %v", err, rep.GetError())
	}
	g := rep.GetEvent().GetConversationId()
	if id, ok := chat.GroupRegionID(g); !ok || id != 2 {
		t.Fatalf("group %s has region id %d, %v; want 2 (us)", g, id, ok)
	}
	w.send(t, "eu", "alice", "eu", g, "a1", "hi group")
	w.waitPushed(t, "us", "carol", "hi group")
	w.waitPushed(t, "eu", "bob", "hi group")
}

// TestPartitionAccepted: with the link to the home region cut, sends are
// answered send_accepted, and after the heal they are sequenced once each,
// in order, and pushed to the sending session too.
func TestPartitionAccepted(t *testing.T) {
	w := newWorld(t)
	w.connect(t, "eu", "alice", "eu")
	w.connect(t, "us", "bob", "us")
	conv := rules.DMID("alice", "bob")
	w.send(t, "us", "bob", "us", conv, "b0", "before")

	w.links["eu"].cut.Store(true)
	for i := 1; i <= 5; i++ {
		rep := w.send(t, "us", "bob", "us", conv, fmt.Sprintf("b%d", i), fmt.Sprintf("during %d", i))
		acc := rep.GetSendAccepted()
		if acc == nil || acc.GetHomeRegion() != "eu" || acc.GetClientMsgId() != fmt.Sprintf("b%d", i) {
			t.Fatalf("send %d during the partition got %v, want send_accepted for eu", i, rep)
		}
	}
	// A retry of an accepted send under the same client_msg_id.
	w.send(t, "us", "bob", "us", conv, "b3", "during 3")
	// What the operator asks before it removes a region: us's outbox holds
	// the accepted sends (and the retry) until eu takes them.
	if n, err := w.rs["us"].outbox.Pending(w.ctx); err != nil || n < 5 {
		t.Errorf("us's outbox pending during the partition = %d, %v; want at least the 5 accepted sends", n, err)
	}
	w.links["eu"].cut.Store(false)

	for i := 1; i <= 5; i++ {
		w.waitPushed(t, "us", "bob", fmt.Sprintf("during %d", i)) // the sender's own session
		w.waitPushed(t, "eu", "alice", fmt.Sprintf("during %d", i))
	}
	w.wantStoredTexts(t, conv, "[before during 1 during 2 during 3 during 4 during 5]")
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := w.rs["us"].outbox.Pending(w.ctx)
		if err == nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("us's outbox pending after the heal = %d, %v; want 0", n, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPresenceRelayed: a presence change broadcast in eu reaches us's
// gateways as a broadcast (no user ids), through us's relay consumer, and us
// keeps it (presence.RemoteStatusID), so a presence read in us that merges
// eu's statuses says online.
func TestPresenceRelayed(t *testing.T) {
	w := newWorld(t)
	at := time.Now().UnixMilli()
	w.rs["eu"].mesh.RelayBroadcast(w.ctx, []*parleyv1.Delivery{{Body: &parleyv1.Delivery_Presence{Presence: &parleyv1.Presence{
		UserId: "alice", Status: parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE, LastActive: at,
	}}}})
	reader := presence.NewService(w.rs["us"].reg, presence.Config{}, nil)
	reader.SetRemoteRegions(w.rs["us"].mesh.Peers)
	waitFor(t, "us to read alice online", func() bool {
		got, err := reader.Get(w.ctx, []string{"alice"})
		return err == nil && got["alice"].GetStatus() == parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE && got["alice"].GetLastActive() == at
	})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		tr := w.rs["us"]
		tr.mu.Lock()
		for _, d := range tr.pushed {
			if d.GetPresence().GetUserId() == "alice" && len(d.GetUserIds()) == 0 {
				tr.mu.Unlock()
				return
			}
		}
		tr.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("us's gateway never got eu's presence broadcast")
}

// waitFor polls cond every 5 ms for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// presencePushed counts the presence deliveries of user that r's gateway got
// as broadcasts.
func (tr *testRegion) presencePushed(user string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, d := range tr.pushed {
		if d.GetPresence().GetUserId() == user && len(d.GetUserIds()) == 0 {
			n++
		}
	}
	return n
}

// TestPresenceRefresh: the periodic re-announcement of eu's online users
// (Mesh.RelayPresenceRefresh) makes us catch up — a user whose online change
// was lost shows online and is pushed to us's gateways once; one already
// shown is stored again (fresh) and not pushed again; an online status whose
// offline was lost ages out of the remote window; and a refresh older than
// an offline us already has does not bring the user back.
func TestPresenceRefresh(t *testing.T) {
	w := newWorld(t)
	us := w.rs["us"]
	reader := presence.NewService(us.reg, presence.Config{}, nil)
	reader.SetRemoteRegions(us.mesh.Peers)
	refresh := func(user string, at time.Time) {
		w.rs["eu"].mesh.RelayPresenceRefresh(w.ctx, []*parleyv1.Delivery{{Body: &parleyv1.Delivery_Presence{Presence: &parleyv1.Presence{
			UserId: user, Status: parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE, LastActive: at.UnixMilli(),
		}}}})
	}
	read := func(user string) *parleyv1.Presence {
		got, err := reader.Get(w.ctx, []string{user})
		if err != nil {
			t.Fatal(err)
		}
		return got[user]
	}
	online := parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE

	t1 := time.Now().Truncate(time.Millisecond)
	refresh("alice", t1)
	waitFor(t, "alice online in us", func() bool { return read("alice").GetStatus() == online })
	waitFor(t, "alice pushed to us's gateway", func() bool { return us.presencePushed("alice") == 1 })

	t2 := t1.Add(time.Second)
	refresh("alice", t2)
	waitFor(t, "the second refresh stored", func() bool { return read("alice").GetLastActive() == t2.UnixMilli() })
	time.Sleep(200 * time.Millisecond) // the relay broadcasts right after it stores
	if n := us.presencePushed("alice"); n != 1 {
		t.Errorf("alice pushed %d times after a refresh that changed nothing shown, want 1", n)
	}

	// eu's offline for alice was lost: her online ages out.
	stale := presence.Status{Online: true, LastActive: time.Now().Add(-time.Hour)}
	if err := us.reg.SetStatus(w.ctx, presence.RemoteStatusID("alice", "eu"), stale, time.Hour); err != nil {
		t.Fatal(err)
	}
	if p := read("alice"); p.GetStatus() == online {
		t.Errorf("alice = %v an hour after eu last re-announced her, want offline", p)
	}
	// She is back online there; the next refresh shows and pushes it.
	refresh("alice", time.Now())
	waitFor(t, "alice online again", func() bool { return read("alice").GetStatus() == online })
	waitFor(t, "alice pushed again", func() bool { return us.presencePushed("alice") == 2 })

	// An offline newer than a refresh (they crossed) is kept.
	left := time.Now().Truncate(time.Millisecond)
	if err := us.reg.SetStatus(w.ctx, presence.RemoteStatusID("bob", "eu"), presence.Status{LastActive: left}, time.Hour); err != nil {
		t.Fatal(err)
	}
	refresh("bob", left.Add(-time.Second))
	refresh("carol", time.Now()) // after bob's, on the same path
	waitFor(t, "carol online", func() bool { return read("carol").GetStatus() == online })
	time.Sleep(200 * time.Millisecond)
	if p := read("bob"); p.GetStatus() == online || p.GetLastActive() != left.UnixMilli() {
		t.Errorf("bob = %v after a refresh older than his offline, want offline at %d", p, left.UnixMilli())
	}
	if n := us.presencePushed("bob"); n != 0 {
		t.Errorf("bob pushed %d times, want 0", n)
	}
}

// TestSetPeersLive: a region that drops its peer answers sends homed there
// with a clear error naming the region, and works again once the peer is
// back — without a restart (the operator's peers ConfigMap).
func TestSetPeersLive(t *testing.T) {
	w := newWorld(t)
	w.connect(t, "eu", "alice", "eu")
	w.connect(t, "us", "bob", "us")
	conv := rules.DMID("alice", "bob")
	w.send(t, "us", "bob", "us", conv, "b1", "before")

	us := w.rs["us"].mesh
	if err := us.SetPeers(nil); err != nil {
		t.Fatal(err)
	}
	if us.Known("eu") || len(us.Peers()) != 0 {
		t.Fatalf("after SetPeers(nil): Known(eu)=%v, peers %v", us.Known("eu"), us.Peers())
	}
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	rep, err := w.rs["us"].client.Call(ctx, &parleyv1.IngressRecord{
		Origin:         &parleyv1.Origin{UserId: "bob", DeviceId: "d", SessionId: "s-bob-us", HomeRegion: "us"},
		ConversationId: conv,
		Op:             &parleyv1.IngressRecord_Send{Send: &parleyv1.Send{ConversationId: conv, ClientMsgId: "b2", Content: &parleyv1.Send_Text{Text: "while eu is unknown"}}},
	})
	if we := wire.AsError(err); err == nil || we.Code != wire.CodeUnavailable || !strings.Contains(we.Message, `"eu"`) {
		t.Fatalf("send with eu out of the mesh = %v, %v; want unavailable naming eu", rep, err)
	}
	if err := us.SetPeers([]region.Peer{{Name: "eu", ID: 1, Brokers: []string{"x:1"}}}); err != nil {
		t.Fatal(err)
	}
	w.send(t, "us", "bob", "us", conv, "b3", "after")
	w.waitPushed(t, "eu", "alice", "after")

	if err := us.SetPeers([]region.Peer{{Name: "eu", ID: 1}, {Name: "ap", ID: 1}}); err == nil {
		t.Error("SetPeers with two peers of one id succeeded")
	}
	if !us.Known("eu") {
		t.Error("a refused SetPeers changed the peers")
	}
}

// TestRegionRemovedWithOutbox: the issue's "a region removed while it still
// holds outbox entries". Sends accepted into us's outbox for eu while the
// link was cut stay there, uncommitted, when eu leaves us's mesh before the
// heal (nothing forwarded, nothing dropped); once eu is back in the mesh
// they are sequenced in eu exactly once, in accepted order.
func TestRegionRemovedWithOutbox(t *testing.T) {
	w := newWorld(t)
	w.connect(t, "eu", "alice", "eu")
	w.connect(t, "us", "bob", "us")
	conv := rules.DMID("alice", "bob")
	w.send(t, "us", "bob", "us", conv, "b0", "before")

	w.links["eu"].cut.Store(true)
	for i := 1; i <= 3; i++ {
		if rep := w.send(t, "us", "bob", "us", conv, fmt.Sprintf("b%d", i), fmt.Sprintf("queued %d", i)); rep.GetSendAccepted() == nil {
			t.Fatalf("send %d during the partition got %v, want send_accepted", i, rep)
		}
	}
	us := w.rs["us"].mesh
	if err := us.SetPeers(nil); err != nil {
		t.Fatal(err)
	}
	w.links["eu"].cut.Store(false)

	// eu is out of us's mesh: the outbox keeps its records. The forwarder
	// retries with backoff, so give it a few rounds to (wrongly) forward.
	time.Sleep(1500 * time.Millisecond)
	msgs, _, err := w.st.Messages(w.ctx, conv, store.Page{Forward: true, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 { // the DM's creation event and "before"
		t.Fatalf("%d messages stored while eu was out of us's mesh, want the 2 from before the partition: %v", len(msgs), msgs)
	}

	if err := us.SetPeers([]region.Peer{{Name: "eu", ID: 1, Brokers: []string{"x:1"}}}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		w.waitPushed(t, "eu", "alice", fmt.Sprintf("queued %d", i))
	}
	w.wantStoredTexts(t, conv, "[before queued 1 queued 2 queued 3]")
}

// wantStoredTexts checks conv's stored log: seqs dense from 1, and the texts
// of its messages, each once and in order, printed as want.
func (w *world) wantStoredTexts(t *testing.T, conv, want string) {
	t.Helper()
	msgs, _, err := w.st.Messages(w.ctx, conv, store.Page{Forward: true, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for i, m := range msgs {
		if m.GetSeq() != uint64(i+1) {
			t.Errorf("message %d has seq %d: seqs not dense", i, m.GetSeq())
		}
		if m.GetText() != "" {
			texts = append(texts, m.GetText())
		}
	}
	if fmt.Sprint(texts) != want {
		t.Errorf("stored texts = %q, want %s (each once, in order)", texts, want)
	}
}
