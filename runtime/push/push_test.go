package push

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/bus/memory"
	"github.com/parleychat/parley/runtime/chat"
	"github.com/parleychat/parley/runtime/presence"
	presmem "github.com/parleychat/parley/runtime/presence/memory"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store/pebble"
)

func text(conv string, seq uint64, sender, body string) *parleyv1.Delivery {
	return &parleyv1.Delivery{Body: &parleyv1.Delivery_Message{Message: &parleyv1.Message{
		ConversationId: conv, Seq: seq, MessageId: 77, SenderId: sender,
		Kind: parleyv1.MessageKind_MESSAGE_KIND_TEXT, Text: body, CreatedAt: 1000,
	}}}
}

func TestNotification(t *testing.T) {
	event := &parleyv1.Delivery{Body: &parleyv1.Delivery_Message{Message: &parleyv1.Message{
		ConversationId: "g:1", Seq: 2, SenderId: "alice", Kind: parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED}}}
	receipt := &parleyv1.Delivery{Body: &parleyv1.Delivery_Receipt{Receipt: &parleyv1.Receipt{ConversationId: "g:1", UserId: "bob"}}}
	media := &parleyv1.Delivery{Body: &parleyv1.Delivery_Message{Message: &parleyv1.Message{
		ConversationId: "g:1", Seq: 3, SenderId: "alice", Kind: parleyv1.MessageKind_MESSAGE_KIND_MEDIA,
		Media: &parleyv1.Media{Url: "https://m/x.png", Mime: "image/png"}}}}
	tests := []struct {
		name  string
		users []string
		d     *parleyv1.Delivery
		want  []string // nil: no notification
	}{
		{"text to others", []string{"bob", "alice", "carol"}, text("g:1", 4, "alice", "hi"), []string{"bob", "carol"}},
		{"only the sender offline", []string{"alice"}, text("g:1", 4, "alice", "hi"), nil},
		{"membership event", []string{"bob"}, event, nil},
		{"receipt", []string{"bob"}, receipt, nil},
		{"media", []string{"bob"}, media, []string{"bob"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := notification(tt.users, tt.d)
			if tt.want == nil {
				if n != nil {
					t.Fatalf("got %+v, want none", n)
				}
				return
			}
			if n == nil || !slices.Equal(n.Users, tt.want) {
				t.Fatalf("got %+v, want users %v", n, tt.want)
			}
			m := tt.d.GetMessage()
			if n.Message.ConversationID != m.ConversationId || n.Message.Seq != m.Seq || n.ID() != m.ConversationId+"/"+itoa(m.Seq) {
				t.Fatalf("message %+v does not match %v", n.Message, m)
			}
		})
	}
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// receiver is a webhook that answers each request with the next status of
// script (then 200), recording what it accepted.
type receiver struct {
	mu       sync.Mutex
	script   []int
	attempts map[string]int
	got      []Notification
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts[req.Header.Get("X-Parley-Delivery")]++
	status := http.StatusOK
	if len(r.script) > 0 {
		status, r.script = r.script[0], r.script[1:]
	}
	if status == http.StatusOK {
		var n Notification
		if err := json.Unmarshal(body, &n); err != nil {
			status = http.StatusBadRequest
		} else {
			r.got = append(r.got, n)
		}
	}
	w.WriteHeader(status)
}

func (r *receiver) texts() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, n := range r.got {
		out = append(out, n.Message.Text)
	}
	return out
}

// The publisher's notifications reach the webhook through the push topic;
// retriable failures are retried with backoff, a refused notification is
// dropped after one attempt and the ones behind it still go out.
func TestPipeline(t *testing.T) {
	rcv := &receiver{attempts: map[string]int{}, script: []int{503, 429, 200, 400}}
	srv := httptest.NewServer(rcv)
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	b := memory.New()
	const top = "parley.t.push"
	if err := b.CreateTopic(ctx, bus.Topic{Name: top, Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	w, err := NewWorker(b, Config{Webhook: srv.URL, Topic: top, Member: "push-0", BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	pub := NewPublisher(b, top)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := w.Run(ctx); err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	wg.Go(func() { pub.Run(ctx) })
	defer func() {
		cancel()
		wg.Wait()
		_ = b.Close()
	}()
	<-w.Joined()

	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; got %v", what, rcv.texts())
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	attempts := func(id string) int {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return rcv.attempts[id]
	}
	// 503 and 429 are retried; the third attempt is accepted.
	pub.Offline(ctx, []string{"bob"}, text("dm:alice:bob", 2, "alice", "first"))
	waitUntil("first", func() bool { return slices.Contains(rcv.texts(), "first") })
	if n := attempts("dm:alice:bob/2"); n != 3 {
		t.Fatalf("first took %d attempts, want 3", n)
	}
	// 400 is final: one attempt, dropped, and the partition moves on.
	pub.Offline(ctx, []string{"bob"}, text("dm:alice:bob", 3, "alice", "second"))
	waitUntil("second attempted", func() bool { return attempts("dm:alice:bob/3") == 1 })
	pub.Offline(ctx, []string{"bob"}, text("dm:alice:bob", 4, "alice", "third"))
	waitUntil("third", func() bool { return slices.Contains(rcv.texts(), "third") })
	if n := attempts("dm:alice:bob/3"); n != 1 {
		t.Fatalf("second (answered 400) took %d attempts, want 1", n)
	}
	if got := rcv.texts(); !slices.Equal(got, []string{"first", "third"}) {
		t.Fatalf("accepted %v, want [first third]", got)
	}
}

func TestConfigChecks(t *testing.T) {
	for _, c := range []Config{
		{Webhook: "ftp://x", Topic: "t", Member: "m"},
		{Webhook: "", Topic: "t", Member: "m"},
		{Webhook: "http://x", Member: "m"},
		{Webhook: "http://x", Topic: "t"},
	} {
		if _, err := NewWorker(memory.New(), c); err == nil {
			t.Errorf("NewWorker(%+v) accepted", c)
		}
	}
}

// In a multi-region deployment the publisher skips users another region
// announced online (presence.Service.OnlineElsewhere on the relayed
// statuses): bob, online in us, gets no push from eu; carol, offline
// everywhere, does; a notification left with nobody is not published.
func TestSkipUsersOnlineElsewhere(t *testing.T) {
	ctx := context.Background()
	reg := presmem.New()
	defer reg.Close()
	if err := reg.SetStatus(ctx, presence.RemoteStatusID("bob", "us"), presence.Status{Online: true, LastActive: time.Now()}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := reg.SetStatus(ctx, presence.RemoteStatusID("carol", "us"), presence.Status{LastActive: time.Now()}, time.Hour); err != nil {
		t.Fatal(err)
	}
	elsewhere := presence.NewService(reg, presence.Config{}, nil)
	elsewhere.SetRemoteRegions(func() []string { return []string{"us"} })

	got := publishAll(t, func(pub *Publisher) { pub.SkipUsers(elsewhere.OnlineElsewhere) },
		offline{[]string{"bob"}, text("dm:alice:bob", 2, "alice", "only bob")},
		offline{[]string{"bob", "carol"}, text("g:1", 5, "alice", "both")})
	if len(got) != 1 || got[0].Message.Text != "both" || !slices.Equal(got[0].Users, []string{"carol"}) {
		t.Fatalf("published %+v, want only \"both\" to [carol]", got)
	}
}

// Mute (issue 13): a user who muted a conversation gets no offline push
// for it (chat.Queries.Muted on a real store), while the same user is
// pushed for another conversation and other users for this one; a mute
// that has ended no longer counts; after an unmute the user is pushed
// again.
func TestSkipMuted(t *testing.T) {
	ctx := context.Background()
	st, err := pebble.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = st.Close() }()
	if err := st.SetMute(ctx, "g:1", "bob", 0); err != nil {
		t.Fatal(err)
	}
	if err := st.SetMute(ctx, "g:2", "bob", time.Now().Add(-time.Minute).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	muted := chat.NewQueries(st).Muted
	got := publishAll(t, func(pub *Publisher) { pub.SkipMuted(muted) },
		offline{[]string{"bob"}, text("g:1", 2, "alice", "muted for bob")},
		offline{[]string{"bob", "carol"}, text("g:1", 3, "alice", "carol only")},
		offline{[]string{"bob"}, text("g:2", 4, "alice", "mute ended")},
		offline{[]string{"bob"}, text("dm:alice:bob", 1, "alice", "not muted")})
	want := map[string][]string{"carol only": {"carol"}, "mute ended": {"bob"}, "not muted": {"bob"}}
	if len(got) != len(want) {
		t.Fatalf("published %+v, want %v", got, want)
	}
	for _, n := range got {
		if !slices.Equal(n.Users, want[n.Message.Text]) {
			t.Fatalf("%q pushed to %v, want %v", n.Message.Text, n.Users, want[n.Message.Text])
		}
	}
	if err := st.Unmute(ctx, "g:1", "bob"); err != nil {
		t.Fatal(err)
	}
	got = publishAll(t, func(pub *Publisher) { pub.SkipMuted(muted) },
		offline{[]string{"bob"}, text("g:1", 5, "alice", "unmuted")})
	if len(got) != 1 || !slices.Equal(got[0].Users, []string{"bob"}) {
		t.Fatalf("after unmute published %+v, want one push to bob", got)
	}
}

type offline struct {
	users []string
	d     *parleyv1.Delivery
}

// publishAll runs a publisher set up by setup on a memory bus, queues each
// of offs, and returns the notifications it published, once the number
// expected without skips has had time to arrive: it waits for the first
// and then briefly, since a wrongly published one would be there by then.
func publishAll(t *testing.T, setup func(*Publisher), offs ...offline) []Notification {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := memory.New()
	defer b.Close()
	const top = "parley.eu.push"
	if err := b.CreateTopic(ctx, bus.Topic{Name: top, Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []Notification
	if err := b.Subscribe(ctx, top, 0, func(r bus.Record) {
		var n Notification
		if err := json.Unmarshal(r.Value, &n); err != nil {
			t.Errorf("notification %s: %v", r.Value, err)
		}
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	pub := NewPublisher(b, top)
	setup(pub)
	var wg sync.WaitGroup
	wg.Go(func() { pub.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	for _, o := range offs {
		pub.Offline(ctx, o.users, o.d)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n >= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // a wrongly published notification would be here by now
	mu.Lock()
	defer mu.Unlock()
	return slices.Clone(got)
}
