package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// TestDMTwoDevices: alice on two devices and bob in a DM. Order, dense
// seq, echo to alice's other device, delivery and read receipts reaching
// alice's devices, and bob's presence going online then offline (after the
// grace period) as alice sees it.
func TestDMTwoDevices(t *testing.T) {
	// --presence-public: alice follows bob before their DM exists (presence
	// privacy has its own test, TestPresencePrivacy).
	p := startServer(t, "", "--presence-grace", "300ms", "--heartbeat", "1s", "--presence-ttl", "3s", "--presence-public")
	const conv = "dm:alice:bob"

	phone := connect(t, p, "alice", "phone")
	laptop := connect(t, p, "alice", "laptop", func(o *client.Options) { o.Subprotocol = wire.SubprotocolJSON })
	ctx := ctxT(t, 60*time.Second)
	if err := phone.SubscribePresence(ctx, []string{"bob"}); err != nil {
		t.Fatalf("subscribe presence: %v", err)
	}

	bob := connect(t, p, "bob", "phone", func(o *client.Options) { o.NoAutoAck = true })
	waitFor(t, 10*time.Second, "alice's phone sees bob online", func() bool {
		pr := phone.lastPresence("bob")
		return pr != nil && pr.Status == parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE
	})

	const n = 20
	var last *parleyv1.SendOk
	for i := 0; i < n; i++ {
		ok, err := phone.Send(ctx, conv, fmt.Sprintf("hello %d", i))
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if last != nil && ok.Seq != last.Seq+1 {
			t.Fatalf("send %d got seq %d after %d: not dense", i, ok.Seq, last.Seq)
		}
		last = ok
	}
	// The DM's log starts with its creation event at seq 1.
	first := last.Seq - n + 1
	for _, d := range []struct {
		name string
		dev  *device
	}{{"bob", bob}, {"alice's laptop", laptop}, {"alice's phone", phone}} {
		waitFor(t, 20*time.Second, d.name+" gets all messages", func() bool { return len(d.dev.Messages(conv, text)) >= n })
		msgs := d.dev.Messages(conv, text)
		if len(msgs) != n {
			t.Fatalf("%s got %d messages, want exactly %d", d.name, len(msgs), n)
		}
		assertDense(t, msgs, first)
		for i, m := range msgs {
			if want := fmt.Sprintf("hello %d", i); m.Text != want || m.SenderId != "alice" {
				t.Fatalf("%s message %d = %q from %s, want %q from alice", d.name, i, m.Text, m.SenderId, want)
			}
		}
	}

	// bob acknowledges delivery, then reads: both reach alice's two devices.
	if err := bob.Ack(ctx, conv, last.Seq); err != nil {
		t.Fatalf("bob ack: %v", err)
	}
	for _, dev := range []*device{phone, laptop} {
		waitFor(t, 10*time.Second, "delivered receipt", func() bool {
			return dev.hasReceipt(conv, "bob", parleyv1.ReceiptKind_RECEIPT_KIND_DELIVERED, last.Seq)
		})
	}
	if err := bob.Read(ctx, conv, last.Seq); err != nil {
		t.Fatalf("bob read: %v", err)
	}
	for _, dev := range []*device{phone, laptop} {
		waitFor(t, 10*time.Second, "read receipt", func() bool {
			return dev.hasReceipt(conv, "bob", parleyv1.ReceiptKind_RECEIPT_KIND_READ, last.Seq)
		})
	}
	// The read-by list over REST says bob read the last message. Receipt
	// pointers are persisted at most once a second per member, so the list
	// may lag the live receipt by that much.
	rest := client.NewREST(p.HTTP(), p.token("alice", "rest", time.Hour))
	waitFor(t, 10*time.Second, "read-by lists bob", func() bool {
		rs, err := rest.ReadBy(ctx, conv, last.Seq)
		if err != nil {
			t.Fatalf("read-by: %v", err)
		}
		for _, r := range rs {
			if r.UserID == "bob" && r.ReadSeq >= last.Seq {
				return true
			}
		}
		return false
	})

	// bob leaves: after the grace period alice sees him offline, with a last-active time.
	before := time.Now().Add(-time.Minute).UnixMilli()
	_ = bob.Close()
	waitFor(t, 20*time.Second, "alice's phone sees bob offline", func() bool {
		pr := phone.lastPresence("bob")
		return pr != nil && pr.Status == parleyv1.PresenceStatus_PRESENCE_STATUS_OFFLINE
	})
	if pr := phone.lastPresence("bob"); pr.LastActive < before {
		t.Fatalf("offline presence has last_active %d, want a recent time", pr.LastActive)
	}
	// The inbox shows bob's read pointer and no unread for alice.
	inbox, err := rest.Inbox(ctx)
	if err != nil {
		t.Fatalf("inbox: %v", err)
	}
	if len(inbox) != 1 || inbox[0].ConversationId != conv || inbox[0].HeadSeq != last.Seq || inbox[0].LastMessage.GetText() != fmt.Sprintf("hello %d", n-1) {
		t.Fatalf("alice's inbox = %v, want one DM with head %d and the last message", inbox, last.Seq)
	}
	if inbox[0].Unread != 0 {
		t.Fatalf("alice's unread = %d; sending advances the sender's read pointer, want 0", inbox[0].Unread)
	}
}

// TestPresenceNoFlap: a device that reconnects within the grace period does
// not make its user flap offline.
func TestPresenceNoFlap(t *testing.T) {
	p := startServer(t, "", "--presence-grace", "3s", "--heartbeat", "1s", "--presence-ttl", "3s", "--presence-public")
	alice := connect(t, p, "alice", "phone")
	ctx := ctxT(t, 30*time.Second)
	if err := alice.SubscribePresence(ctx, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	bob1 := connect(t, p, "bob", "phone")
	waitFor(t, 10*time.Second, "bob online", func() bool {
		pr := alice.lastPresence("bob")
		return pr != nil && pr.Status == parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE
	})
	_ = bob1.Close()
	bob2 := connect(t, p, "bob", "phone")
	// A message round trip after the grace period would have fired proves
	// the announcement had its chance: send from bob and wait for alice.
	if _, err := bob2.Send(ctx, "dm:alice:bob", "still here"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "alice gets bob's message", func() bool { return len(alice.Messages("dm:alice:bob", text)) == 1 })
	deadline := time.Now().Add(4 * time.Second) // past the 3s grace
	for time.Now().Before(deadline) {
		// Only what follows bob's first online counts: the answer to the
		// subscription said offline, since bob had not connected yet.
		online := false
		for _, pr := range alice.Presence() {
			if pr.UserId != "bob" {
				continue
			}
			if pr.Status == parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE {
				online = true
			} else if online {
				t.Fatalf("bob flapped to %v although he reconnected within the grace period", pr.Status)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPresencePrivacy (issue 13): presence and last-seen are visible only
// to users who share a conversation — over REST and over a WebSocket
// subscription. A stranger reads "unknown" although the user is online;
// once they share a group, the same requests show the real status.
func TestPresencePrivacy(t *testing.T) {
	p := startServer(t, "")
	ctx := ctxT(t, 30*time.Second)
	online := parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE
	connect(t, p, "bob", "phone")
	mallory := connect(t, p, "mallory", "laptop")
	rest := client.NewREST(p.HTTP(), p.token("mallory", "laptop", time.Hour))
	status := func() parleyv1.PresenceStatus {
		t.Helper()
		ps, err := rest.Presence(ctx, []string{"bob"})
		if err != nil || len(ps) != 1 || ps[0].UserId != "bob" {
			t.Fatalf("mallory reads bob's presence: %v %v", ps, err)
		}
		if ps[0].Status != online && ps[0].LastActive != 0 {
			t.Fatalf("a hidden presence leaks last_active %d", ps[0].LastActive)
		}
		return ps[0].Status
	}
	if got := status(); got != parleyv1.PresenceStatus_PRESENCE_STATUS_UNKNOWN {
		t.Fatalf("a stranger reads bob's presence as %v over REST, want unknown", got)
	}
	if err := mallory.SubscribePresence(ctx, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the subscription's answer", func() bool { return mallory.lastPresence("bob") != nil })
	if pr := mallory.lastPresence("bob"); pr.Status != parleyv1.PresenceStatus_PRESENCE_STATUS_UNKNOWN || pr.LastActive != 0 {
		t.Fatalf("a stranger's subscription answered %v, want unknown", pr)
	}

	// Carol puts both in a group: now they share a conversation.
	carol := client.NewREST(p.HTTP(), p.token("carol", "phone", time.Hour))
	if _, err := carol.CreateGroup(ctx, "club", []string{"bob", "mallory"}); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != online {
		t.Fatalf("a fellow group member reads bob's presence as %v, want online", got)
	}
	if err := mallory.SubscribePresence(ctx, []string{"bob"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "bob online for a fellow member", func() bool {
		pr := mallory.lastPresence("bob")
		return pr != nil && pr.Status == online
	})
}
