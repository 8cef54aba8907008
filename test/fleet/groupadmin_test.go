package fleet

import (
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// TestGroupAdminAcrossGateways (issue 13 item 4): in the distributed mode
// a role change made on gateway 0 reaches a member on gateway 1, a rename
// over REST on gateway 1 reaches gateway 0 and the inbox, and when the
// owner leaves the admin becomes owner in Cassandra.
func TestGroupAdminAcrossGateways(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	c.chat(0)
	c.presence(0)
	g0, g1 := c.gateway(0), c.gateway(1)
	ctx := ctxT(t, 90*time.Second)
	aliceREST := client.NewREST(g0.HTTP(), c.token("alice", "rest"))
	bobREST := client.NewREST(g1.HTTP(), c.token("bob", "rest"))
	conv, err := aliceREST.CreateGroup(ctx, "crew", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	alice := c.connect(g0.WS(), "alice", "phone")
	bob := c.connect(g1.WS(), "bob", "phone")

	ev, err := alice.SetRole(ctx, conv, "bob", "admin")
	if err != nil || ev.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED {
		t.Fatalf("set role: %v %v", ev, err)
	}
	waitFor(t, 20*time.Second, "bob gets the role change", func() bool { return bob.hasSeq(conv, ev.GetSeq()) })
	renamed, err := bobREST.Rename(ctx, conv, "the crew")
	if err != nil || renamed.GetText() != "the crew" {
		t.Fatalf("rename: %v %v", renamed, err)
	}
	waitFor(t, 20*time.Second, "alice gets the rename", func() bool { return alice.hasSeq(conv, renamed.GetSeq()) })
	states, err := aliceREST.Inbox(ctx)
	if err != nil || len(states) != 1 || states[0].GetTitle() != "the crew" {
		t.Fatalf("alice's inbox: %v %v", states, err)
	}

	left, err := aliceREST.Leave(ctx, conv, "alice")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "bob learns he owns the group", func() bool { return bob.hasSeq(conv, left.GetSeq()+1) })
	ms, err := bobREST.Members(ctx, conv)
	if err != nil {
		t.Fatal(err)
	}
	var roles []string
	for _, m := range ms {
		roles = append(roles, m.UserID+":"+m.Role)
	}
	if got := strings.Join(roles, " "); got != "bob:owner carol:member" {
		t.Errorf("members after alice left: %s", got)
	}
	if m := c.storedLog(conv)[left.GetSeq()+1]; m.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_OWNER_CHANGED || strings.Join(m.GetMembers(), ",") != "bob" {
		t.Errorf("Cassandra holds %v after the owner's leave, want OWNER_CHANGED naming bob", m)
	}
}
