package fleet

import (
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/chat/rules"
	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// TestEditDeleteAcrossGateways (issue 13): in the distributed mode an edit
// made on gateway 0 reaches the sender's other device and the peer on
// gateway 1, a delete over REST on gateway 1 reaches gateway 0, and
// Cassandra holds the latest text, the edit time and a tombstone with none
// of the deleted text.
func TestEditDeleteAcrossGateways(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	c.chat(0)
	c.presence(0)
	g0, g1 := c.gateway(0), c.gateway(1)
	ctx := ctxT(t, 90*time.Second)
	alice := c.connect(g0.WS(), "alice", "phone")
	alice2 := c.connect(g1.WS(), "alice", "laptop")
	bob := c.connect(g1.WS(), "bob", "phone")
	dm := rules.DMID("alice", "bob")

	sent, err := alice.Send(ctx, dm, "teh typo")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := alice.Edit(ctx, dm, sent.GetSeq(), "the typo")
	if err != nil {
		t.Fatalf("edit: %v", err)
	}
	for _, d := range []*device{alice2, bob} {
		waitFor(t, 20*time.Second, d.name+" gets the edit", func() bool { return d.hasSeq(dm, ev.GetSeq()) })
		for _, m := range d.Messages(dm) {
			if m.GetSeq() == ev.GetSeq() && (m.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_EDITED || m.GetTargetSeq() != sent.GetSeq() || m.GetText() != "the typo") {
				t.Fatalf("%s got %v", d.name, m)
			}
		}
	}
	bobs, err := bob.Send(ctx, dm, "bob's secret")
	if err != nil {
		t.Fatal(err)
	}
	del, err := client.NewREST(g1.HTTP(), c.token("bob", "rest")).Delete(ctx, dm, bobs.GetSeq())
	if err != nil || del.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_DELETED {
		t.Fatalf("delete: %v %v", del, err)
	}
	waitFor(t, 20*time.Second, "alice gets the delete", func() bool { return alice.hasSeq(dm, del.GetSeq()) })

	stored := c.storedLog(dm)
	if m := stored[sent.GetSeq()]; m.GetText() != "the typo" || m.GetEditedAt() != ev.GetCreatedAt() || m.GetChangeSeq() != ev.GetSeq() {
		t.Errorf("stored edited message %v", m)
	}
	if m := stored[bobs.GetSeq()]; !m.GetDeleted() || m.GetText() != "" {
		t.Errorf("stored deleted message %v", m)
	}
	for _, m := range stored {
		if strings.Contains(m.GetText(), "secret") {
			t.Errorf("Cassandra keeps deleted text at seq %d: %v", m.GetSeq(), m)
		}
	}
}

// TestReactionsAcrossGateways (issue 13): in the distributed mode a
// reaction made on gateway 0 reaches the reactor's other device and the
// peer on gateway 1 with the counts, one over REST on gateway 1 reaches
// gateway 0, and Cassandra holds the aggregate with its users; a repeat
// sequences nothing.
func TestReactionsAcrossGateways(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	c.chat(0)
	c.presence(0)
	g0, g1 := c.gateway(0), c.gateway(1)
	ctx := ctxT(t, 90*time.Second)
	alice := c.connect(g0.WS(), "alice", "phone")
	alice2 := c.connect(g1.WS(), "alice", "laptop")
	bob := c.connect(g1.WS(), "bob", "phone")
	dm := rules.DMID("alice", "bob")

	sent, err := bob.Send(ctx, dm, "dinner at 8")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := alice.React(ctx, dm, sent.GetSeq(), "👍")
	if err != nil || ev.GetSeq() == 0 {
		t.Fatalf("react: %v %v", ev, err)
	}
	for _, d := range []*device{alice2, bob} {
		waitFor(t, 20*time.Second, d.name+" gets the reaction", func() bool { return d.hasSeq(dm, ev.GetSeq()) })
		for _, m := range d.Messages(dm) {
			if m.GetSeq() == ev.GetSeq() && (m.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_REACTION || m.GetTargetSeq() != sent.GetSeq() ||
				m.GetEmoji() != "👍" || len(m.GetReactions()) != 1 || m.GetReactions()[0].GetCount() != 1) {
				t.Fatalf("%s got %v", d.name, m)
			}
		}
	}
	ev2, err := client.NewREST(g1.HTTP(), c.token("bob", "rest")).React(ctx, dm, sent.GetSeq(), "👍")
	if err != nil || len(ev2.GetReactions()) != 1 || ev2.GetReactions()[0].GetCount() != 2 {
		t.Fatalf("REST react: %v %v", ev2, err)
	}
	waitFor(t, 20*time.Second, "alice gets bob's reaction", func() bool { return alice.hasSeq(dm, ev2.GetSeq()) })
	if again, err := alice.React(ctx, dm, sent.GetSeq(), "👍"); err != nil || again.GetSeq() != 0 {
		t.Fatalf("repeated reaction: %v %v, want seq 0", again, err)
	}

	stored := c.storedLog(dm)
	m := stored[sent.GetSeq()]
	if rs := m.GetReactions(); len(rs) != 1 || rs[0].GetEmoji() != "👍" || strings.Join(rs[0].GetUserIds(), ",") != "alice,bob" || m.GetReactionSeq() != ev2.GetSeq() {
		t.Errorf("stored message %v, want 👍 by alice and bob at reaction_seq %d", m, ev2.GetSeq())
	}
	if len(stored) != int(ev2.GetSeq()) {
		t.Errorf("Cassandra holds %d messages, want %d (the repeat stores nothing)", len(stored), ev2.GetSeq())
	}
}
