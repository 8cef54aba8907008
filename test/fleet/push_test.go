package fleet

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/parleychat/parley/runtime/client"
	"github.com/parleychat/parley/runtime/push"
)

// webhook is an HTTP test receiver of push notifications that fails the
// first few requests.
type webhook struct {
	*httptest.Server
	mu       sync.Mutex
	failures int // requests still to answer 503
	attempts map[string]int
	got      []push.Notification
}

func newWebhook(t *testing.T, failures int) *webhook {
	w := &webhook{failures: failures, attempts: make(map[string]int)}
	w.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.mu.Lock()
		defer w.mu.Unlock()
		id := r.Header.Get("X-Parley-Delivery")
		w.attempts[id]++
		if w.failures > 0 {
			w.failures--
			http.Error(rw, "try later", http.StatusServiceUnavailable)
			return
		}
		var n push.Notification
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &n) != nil || n.ID() != id {
			http.Error(rw, "bad request", http.StatusBadRequest)
			t.Errorf("bad push request: %s %s %q %s", r.Method, r.Header.Get("Content-Type"), id, body)
			return
		}
		w.got = append(w.got, n)
	}))
	t.Cleanup(w.Close)
	return w
}

// find returns the notification of the message with text, if received.
func (w *webhook) find(text string) (push.Notification, int, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range w.got {
		if n.Message.Text == text {
			return n, w.attempts[n.ID()], true
		}
	}
	return push.Notification{}, 0, false
}

func (w *webhook) all() []push.Notification {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.got)
}

// startPush starts a cluster of one chat, push and gateway process, the
// push role posting to hook.
func startPush(t *testing.T, hook *webhook) (*cluster, *proc) {
	t.Helper()
	c := newCluster(t, clusterOpts{})
	pushFlags := []string{"--push-webhook", hook.URL, "--push-backoff-min", "50ms", "--push-backoff-max", "500ms"}
	c.chat(0, pushFlags...)
	c.start("push-0", append([]string{"--role", "push", "--member", "push-0", "--data-dir", t.TempDir()}, pushFlags...)...)
	return c, c.gateway(0)
}

// waitPush waits for the notification of the message with text and
// returns its users, sorted.
func (w *webhook) waitPush(t *testing.T, text string) []string {
	t.Helper()
	var n push.Notification
	waitFor(t, 30*time.Second, "push for "+text, func() bool {
		var found bool
		n, _, found = w.find(text)
		return found
	})
	return slices.Sorted(slices.Values(n.Users))
}

// TestOfflinePush: the chat role publishes the members without a live
// session; the push role POSTs them to the webhook, retrying with backoff
// while it fails. Online members, and the sender, get no push.
func TestOfflinePush(t *testing.T) {
	hook := newWebhook(t, 2)
	c, gw := startPush(t, hook)
	ctx := ctxT(t, 2*time.Minute)

	alice := c.connect(gw.WS(), "alice", "phone")
	carol := c.connect(gw.WS(), "carol", "phone")
	group, err := client.NewREST(gw.HTTP(), c.token("alice", "phone")).CreateGroup(ctx, "push", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}

	// Bob has never connected: he gets a push, after two failed attempts.
	ok, err := alice.Send(ctx, group, "hello")
	if err != nil {
		t.Fatal(err)
	}
	var n push.Notification
	var attempts int
	waitFor(t, 30*time.Second, "push for hello", func() bool {
		var found bool
		n, attempts, found = hook.find("hello")
		return found
	})
	if !slices.Equal(n.Users, []string{"bob"}) {
		t.Fatalf("hello pushed to %v, want [bob] (carol is online, alice sent it)", n.Users)
	}
	if n.Message.ConversationID != group || n.Message.Seq != ok.GetSeq() || n.Message.SenderID != "alice" || n.Message.Kind != "text" {
		t.Fatalf("push %+v does not match the message (seq %d)", n.Message, ok.GetSeq())
	}
	if attempts != 3 {
		t.Fatalf("hello was posted %d times, want 3 (two 503s, then 200)", attempts)
	}

	// Bob comes online, carol leaves: the next message is pushed to carol.
	c.connect(gw.WS(), "bob", "phone")
	_ = carol.Close()
	rc := goredis.NewClient(&goredis.Options{Addr: c.redis})
	defer rc.Close()
	waitFor(t, 10*time.Second, "carol's session gone from the registry", func() bool {
		n, err := rc.ZCard(ctx, c.name+":sessions:{carol}").Result()
		return err == nil && n == 0
	})
	ok, err = alice.Send(ctx, group, "second")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "push for second", func() bool {
		n, _, found := hook.find("second")
		return found && n.Message.Seq == ok.GetSeq()
	})
	n, _, _ = hook.find("second")
	if !slices.Equal(n.Users, []string{"carol"}) {
		t.Fatalf("second pushed to %v, want [carol]", n.Users)
	}
	for _, n := range hook.all() {
		if slices.Contains(n.Users, "alice") {
			t.Fatalf("the sender got a push: %+v", n)
		}
	}
}

// TestOfflinePushSkipsMuted (issue 13 item 6): of two offline members of a
// group, bob, who muted it over REST, gets no push of alice's message and
// carol does; once bob unmutes, the next message is pushed to both.
func TestOfflinePushSkipsMuted(t *testing.T) {
	hook := newWebhook(t, 0)
	c, gw := startPush(t, hook)
	ctx := ctxT(t, 2*time.Minute)
	rest := func(user string) *client.REST { return client.NewREST(gw.HTTP(), c.token(user, "phone")) }

	alice := c.connect(gw.WS(), "alice", "phone")
	group, err := rest("alice").CreateGroup(ctx, "muted", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	if err := rest("bob").Mute(ctx, group, 0); err != nil {
		t.Fatalf("bob mutes the group: %v", err)
	}
	if _, err := alice.Send(ctx, group, "while muted"); err != nil {
		t.Fatal(err)
	}
	if got := hook.waitPush(t, "while muted"); !slices.Equal(got, []string{"carol"}) {
		t.Fatalf("while muted pushed to %v, want [carol] (bob muted the group)", got)
	}

	if err := rest("bob").Unmute(ctx, group); err != nil {
		t.Fatalf("bob unmutes the group: %v", err)
	}
	if _, err := alice.Send(ctx, group, "after unmute"); err != nil {
		t.Fatal(err)
	}
	if got := hook.waitPush(t, "after unmute"); !slices.Equal(got, []string{"bob", "carol"}) {
		t.Fatalf("after unmute pushed to %v, want [bob carol]", got)
	}
}
