package chat

import (
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

func roleRec(user, conv, target, role string) *parleyv1.IngressRecord {
	return &parleyv1.IngressRecord{Origin: origin(user), ConversationId: conv, Op: &parleyv1.IngressRecord_SetRole{
		SetRole: &parleyv1.SetRole{ConversationId: conv, UserId: target, Role: role}}}
}

func renameRec(user, conv, title string) *parleyv1.IngressRecord {
	return &parleyv1.IngressRecord{Origin: origin(user), ConversationId: conv, Op: &parleyv1.IngressRecord_Rename{
		Rename: &parleyv1.Rename{ConversationId: conv, Title: title}}}
}

// roles returns conv's members as "user:role" in the members list's order.
func (e *env) roles(tb testing.TB, conv string) string {
	tb.Helper()
	ms, err := e.q.Members(e.ctx, ownerOfStore(tb, e, conv), conv)
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.UserID+":"+m.Role)
	}
	return strings.Join(out, " ")
}

// ownerOfStore is any current member of conv, to read its members as.
func ownerOfStore(tb testing.TB, e *env, conv string) string {
	tb.Helper()
	ms, err := e.st.Members(e.ctx, conv)
	if err != nil || len(ms) == 0 {
		tb.Fatalf("members of %s: %v %v", conv, ms, err)
	}
	return ms[0].UserID
}

// TestGroupRoles: the owner makes and unmakes admins; admins add, remove
// members (not the owner, not other admins), rename and delete any
// message; members do none of it. Every refusal has its code and stores
// nothing; every change is a sequenced event pushed to the members.
func TestGroupRoles(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		e.online(t, u, 0)
	}
	g := e.createGroup(t, "alice", "crew", "bob", "carol")

	rep, err := e.call(roleRec("alice", g, "bob", "admin"))
	ev := rep.GetEvent()
	if err != nil || ev.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED || ev.GetText() != "admin" ||
		strings.Join(ev.GetMembers(), ",") != "bob" || ev.GetSenderId() != "alice" || ev.GetSeq() != 2 {
		t.Fatalf("alice makes bob an admin: %v %v", rep, err)
	}
	waitFor(t, "carol sees bob made an admin", func() bool { return len(e.pushes(0, "carol", isMessage(2))) == 1 })
	if got := e.roles(t, g); got != "alice:owner bob:admin carol:member" {
		t.Fatalf("members %s", got)
	}
	// A retry changes nothing and answers seq 0.
	if rep, err := e.call(roleRec("alice", g, "bob", "admin")); err != nil || rep.GetEvent().GetSeq() != 0 ||
		rep.GetEvent().GetKind() != parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED || e.head(t, g) != 2 {
		t.Fatalf("repeated promotion: %v %v, head %d", rep, err, e.head(t, g))
	}

	// The admin adds and removes members, and renames.
	if _, err := e.call(addRec("bob", g, "dave")); err != nil {
		t.Fatalf("admin adds dave: %v", err)
	}
	if _, err := e.call(removeRec("bob", g, "dave")); err != nil {
		t.Fatalf("admin removes dave: %v", err)
	}
	rep, err = e.call(renameRec("bob", g, "the crew"))
	if err != nil || rep.GetEvent().GetKind() != parleyv1.MessageKind_MESSAGE_KIND_RENAMED || rep.GetEvent().GetText() != "the crew" {
		t.Fatalf("admin renames: %v %v", rep, err)
	}
	renamed := rep.GetEvent().GetSeq()
	waitFor(t, "alice sees the rename", func() bool { return len(e.pushes(0, "alice", isMessage(renamed))) == 1 })
	if c, _ := e.st.Conversation(e.ctx, g); c.Title != "the crew" {
		t.Fatalf("stored title %q", c.Title)
	}
	states, err := e.q.Inbox(e.ctx, "carol")
	if err != nil || len(states) != 1 || states[0].GetTitle() != "the crew" {
		t.Fatalf("carol's inbox: %v %v", states, err)
	}
	if rep, err := e.call(renameRec("alice", g, "the crew")); err != nil || rep.GetEvent().GetSeq() != 0 {
		t.Fatalf("rename to the same title: %v %v", rep, err)
	}
	if _, err := e.call(addRec("alice", g, "dave")); err != nil {
		t.Fatal(err)
	}

	head := e.head(t, g)
	dm := rules.DMID("alice", "bob")
	e.mustSend(t, "alice", dm, "hi", "hi")
	for _, tc := range []struct {
		name string
		rec  *parleyv1.IngressRecord
		want string
	}{
		{"a member promotes", roleRec("carol", g, "dave", "admin"), wire.CodeForbidden},
		{"an admin promotes", roleRec("bob", g, "dave", "admin"), wire.CodeForbidden},
		{"a member renames", renameRec("carol", g, "mine"), wire.CodeForbidden},
		{"a member adds", addRec("carol", g, "eve"), wire.CodeForbidden},
		{"a member removes another", removeRec("carol", g, "dave"), wire.CodeForbidden},
		{"an admin removes the owner", removeRec("bob", g, "alice"), wire.CodeForbidden},
		{"promote a non-member", roleRec("alice", g, "eve", "admin"), wire.CodeNotFound},
		{"demote the owner", roleRec("alice", g, "alice", "member"), wire.CodeInvalid},
		{"a role that does not exist", roleRec("alice", g, "dave", "moderator"), wire.CodeInvalid},
		{"give ownership", roleRec("alice", g, "dave", "owner"), wire.CodeInvalid},
		{"an empty role", roleRec("alice", g, "dave", ""), wire.CodeInvalid},
		{"an invalid user id", roleRec("alice", g, "no such", "admin"), wire.CodeInvalid},
		{"a non-member promotes", roleRec("eve", g, "dave", "admin"), wire.CodeNotMember},
		{"a non-member renames", renameRec("eve", g, "x"), wire.CodeNotMember},
		{"an empty title", renameRec("alice", g, ""), wire.CodeInvalid},
		{"a blank title", renameRec("alice", g, "   "), wire.CodeInvalid},
		{"a title over the limit", renameRec("alice", g, strings.Repeat("t", rules.MaxTitleBytes+1)), wire.CodeTooLarge},
		{"a two-line title", renameRec("alice", g, "a\nb"), wire.CodeInvalid},
		{"roles in a DM", roleRec("alice", dm, "bob", "admin"), wire.CodeInvalid},
		{"rename a DM", renameRec("alice", dm, "us"), wire.CodeInvalid},
		{"a group that does not exist", renameRec("alice", "g:1", "x"), wire.CodeNotFound},
	} {
		if _, err := e.call(tc.rec); code(err) != tc.want {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.want)
		}
	}
	if h := e.head(t, g); h != head {
		t.Fatalf("refused requests stored something: head %d, want %d", h, head)
	}
	if got := e.roles(t, g); got != "alice:owner bob:admin carol:member dave:member" {
		t.Fatalf("members after refusals %s", got)
	}

	// A title at the limit is taken.
	if _, err := e.call(renameRec("bob", g, strings.Repeat("t", rules.MaxTitleBytes))); err != nil {
		t.Fatalf("a title of %d bytes: %v", rules.MaxTitleBytes, err)
	}
	// Only the owner removes an admin.
	if _, err := e.call(roleRec("alice", g, "carol", "admin")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.call(removeRec("bob", g, "carol")); code(err) != wire.CodeForbidden {
		t.Fatalf("an admin removes another admin: %v, want forbidden", err)
	}
	if _, err := e.call(removeRec("alice", g, "carol")); err != nil {
		t.Fatalf("the owner removes an admin: %v", err)
	}
	// Demoted, bob is a member again.
	rep, err = e.call(roleRec("alice", g, "bob", "member"))
	if err != nil || rep.GetEvent().GetText() != "member" {
		t.Fatalf("alice demotes bob: %v %v", rep, err)
	}
	if _, err := e.call(renameRec("bob", g, "again")); code(err) != wire.CodeForbidden {
		t.Fatalf("a demoted admin renames: %v, want forbidden", err)
	}
	if got := e.roles(t, g); got != "alice:owner bob:member dave:member" {
		t.Fatalf("members %s", got)
	}
}

// TestAdminDeletesAnyMessage: an admin deletes another member's message
// past the edit window, like the owner; a member does not.
func TestAdminDeletesAnyMessage(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.EditWindow = time.Hour })
	conv := "g:434343"
	e.seedOldGroup(t, conv, []string{"alice", "bob", "carol"}, "carol", "old")
	e.startSequencer(t, "chat-0", 0)
	if _, err := e.call(deleteRec("bob", conv, 2)); code(err) != wire.CodeForbidden {
		t.Fatalf("a member deletes carol's message: %v, want forbidden", err)
	}
	if _, err := e.call(roleRec("alice", conv, "bob", "admin")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.call(deleteRec("bob", conv, 2)); err != nil {
		t.Fatalf("an admin deletes an old message of carol's: %v", err)
	}
	if m := e.message(t, conv, 2); !m.GetDeleted() {
		t.Fatalf("not deleted: %v", m)
	}
}

// TestOwnerLeaves: when the owner leaves, an OWNER_CHANGED event follows
// its MEMBER_REMOVED, naming the longest-standing admin, else the
// longest-standing member; the last member leaving leaves an empty group
// where every request gets not_member.
func TestOwnerLeaves(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		e.online(t, u, 0)
	}
	g := e.createGroup(t, "alice", "club", "bob") // bob joined first
	if _, err := e.call(addRec("alice", g, "carol", "dave")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.call(roleRec("alice", g, "dave", "admin")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.call(roleRec("alice", g, "carol", "admin")); err != nil {
		t.Fatal(err)
	}
	head := e.head(t, g)
	rep, err := e.call(removeRec("alice", g, "alice"))
	if err != nil || rep.GetEvent().GetKind() != parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED {
		t.Fatalf("alice leaves: %v %v", rep, err)
	}
	log := e.log(t, g)
	if len(log) != int(head)+2 {
		t.Fatalf("log has %d messages after the owner left, want %d", len(log), head+2)
	}
	// carol and dave are admins who joined together; carol's id is smaller.
	transfer := log[len(log)-1]
	if transfer.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_OWNER_CHANGED || strings.Join(transfer.GetMembers(), ",") != "carol" ||
		transfer.GetSenderId() != "alice" {
		t.Fatalf("transfer event %v, want OWNER_CHANGED naming carol", transfer)
	}
	waitFor(t, "bob sees carol is the owner", func() bool { return len(e.pushes(0, "bob", isMessage(transfer.GetSeq()))) == 1 })
	if n := len(e.pushes(0, "alice", isMessage(transfer.GetSeq()))); n != 0 {
		t.Fatalf("alice, who left, got the transfer pushed")
	}
	if m, _, _ := e.st.Member(e.ctx, g, "carol"); m.Role != store.RoleOwner {
		t.Fatalf("carol's stored role %q", m.Role)
	}
	if got := e.roles(t, g); got != "carol:owner dave:admin bob:member" {
		t.Fatalf("members %s", got)
	}
	// Without admins left, the longest-standing member.
	if _, err := e.call(removeRec("carol", g, "dave")); err != nil {
		t.Fatalf("the new owner removes an admin: %v", err)
	}
	if _, err := e.call(removeRec("carol", g, "carol")); err != nil {
		t.Fatal(err)
	}
	if got := e.roles(t, g); got != "bob:owner" {
		t.Fatalf("members %s", got)
	}
	// The last member leaves: no transfer, an empty read-only group.
	head = e.head(t, g)
	if _, err := e.call(removeRec("bob", g, "bob")); err != nil {
		t.Fatal(err)
	}
	if h := e.head(t, g); h != head+1 {
		t.Fatalf("the last member's leave stored %d events, want 1", h-head)
	}
	head++
	for _, rec := range []*parleyv1.IngressRecord{
		sendRec("bob", g, "late", "anyone"), addRec("bob", g, "bob"), renameRec("bob", g, "mine"), roleRec("bob", g, "bob", "admin"),
	} {
		if _, err := e.call(rec); code(err) != wire.CodeNotMember {
			t.Errorf("%T in an empty group: %v, want not_member", rec.GetOp(), err)
		}
	}
	if h := e.head(t, g); h != head {
		t.Fatalf("the empty group stored something: head %d", h)
	}
}

// TestOwnerOf: the rule in one place, at its boundaries.
func TestOwnerOf(t *testing.T) {
	m := func(joined uint64, role string) store.Member { return store.Member{JoinedSeq: joined, Role: role} }
	for _, tc := range []struct {
		name    string
		members map[string]store.Member
		want    string
	}{
		{"no members", nil, ""},
		{"the stored owner", map[string]store.Member{"a": m(5, store.RoleOwner), "b": m(1, store.RoleAdmin)}, "a"},
		{"an admin before an older member", map[string]store.Member{"a": m(1, store.RoleMember), "b": m(9, store.RoleAdmin)}, "b"},
		{"the older admin", map[string]store.Member{"a": m(3, store.RoleAdmin), "b": m(2, store.RoleAdmin)}, "b"},
		{"the smaller id on a tie", map[string]store.Member{"b": m(2, store.RoleMember), "a": m(2, store.RoleMember)}, "a"},
	} {
		for id, x := range tc.members {
			x.UserID = id
			tc.members[id] = x
		}
		if got := ownerOf(tc.members); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
