package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

func setRoleFrame(conv, user, role string) *parleyv1.ClientFrame {
	return &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_SetRole{SetRole: &parleyv1.SetRole{ConversationId: conv, UserId: user, Role: role}}}
}

func renameFrame(conv, title string) *parleyv1.ClientFrame {
	return &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Rename{Rename: &parleyv1.Rename{ConversationId: conv, Title: title}}}
}

// isEvent reports a pushed message of kind at seq.
func isEvent(kind parleyv1.MessageKind, seq uint64) func(*parleyv1.ServerFrame) bool {
	return func(f *parleyv1.ServerFrame) bool {
		m := f.GetMessage()
		return f.GetId() == 0 && m.GetKind() == kind && m.GetSeq() == seq
	}
}

// roleList renders the members list as "user:role ...".
func roleList(t *testing.T, r *client.REST, conv string) string {
	t.Helper()
	ms, err := r.Members(ctxT(t, time.Minute), conv)
	if err != nil {
		t.Fatalf("members of %s: %v", conv, err)
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.UserID+":"+m.Role)
	}
	return strings.Join(out, " ")
}

// startCrew starts a server where alice created the group "crew" with bob
// and carol; rest makes a REST client of a user.
func startCrew(t *testing.T) (p *proc, ctx context.Context, rest func(string) *client.REST, conv string) {
	t.Helper()
	p = startServer(t, "")
	ctx = ctxT(t, 2*time.Minute)
	rest = func(u string) *client.REST { return client.NewREST(p.HTTP(), p.token(u, "rest", time.Hour)) }
	conv, err := rest("alice").CreateGroup(ctx, "crew", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	return p, ctx, rest, conv
}

// TestGroupAdmin (issue 13 item 4): the owner makes an admin over the JSON
// subprotocol (SDK), the admin renames over Protobuf frames, roles change
// over REST; every other member's device gets each event live; the inbox
// shows the new title; every bad input gets its code over REST and both
// subprotocols and changes nothing.
func TestGroupAdmin(t *testing.T) {
	p, ctx, rest, conv := startCrew(t)
	alice, laptop := dialSDK(t, p, p.token("alice", "laptop", time.Hour), wire.SubprotocolJSON, nil)
	bob := openRaw(t, p, p.token("bob", "desk", time.Hour), wire.SubprotocolProto)
	carol := openRaw(t, p, p.token("carol", "desk", time.Hour), wire.SubprotocolJSON)

	// The owner makes bob an admin over JSON (SDK).
	ev, err := alice.SetRole(ctx, conv, "bob", "admin")
	if err != nil || ev.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED || ev.GetText() != "admin" || ev.GetSeq() == 0 {
		t.Fatalf("alice makes bob an admin: %v %v", ev, err)
	}
	bob.until("bob sees he is an admin", isEvent(parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED, ev.GetSeq()))
	carol.until("carol sees bob made an admin", isEvent(parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED, ev.GetSeq()))
	if again, err := alice.SetRole(ctx, conv, "bob", "admin"); err != nil || again.GetSeq() != 0 {
		t.Fatalf("repeated promotion: %v %v, want seq 0", again, err)
	}
	if got := roleList(t, rest("carol"), conv); got != "alice:owner bob:admin carol:member" {
		t.Fatalf("members %s", got)
	}

	// The admin renames over Protobuf frames.
	f := bob.reply(bob.write(renameFrame(conv, "the crew")))
	renamed := f.GetMessage()
	if renamed.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_RENAMED || renamed.GetText() != "the crew" || renamed.GetSenderId() != "bob" {
		t.Fatalf("bob's rename answered %v", f)
	}
	carol.until("carol sees the rename", isEvent(parleyv1.MessageKind_MESSAGE_KIND_RENAMED, renamed.GetSeq()))
	waitFor(t, 10*time.Second, "alice's laptop gets the rename", func() bool { return laptop.message(conv, renamed.GetSeq()) != nil })
	states, err := rest("carol").Inbox(ctx)
	if err != nil || len(states) != 1 || states[0].GetTitle() != "the crew" {
		t.Fatalf("carol's inbox after the rename: %v %v", states, err)
	}

	// Roles over REST: carol made an admin and a member again.
	if ev, err := rest("alice").SetRole(ctx, conv, "carol", "admin"); err != nil || ev.GetText() != "admin" {
		t.Fatalf("REST promotion: %v %v", ev, err)
	}
	demoted, err := rest("alice").SetRole(ctx, conv, "carol", "member")
	if err != nil || demoted.GetText() != "member" {
		t.Fatalf("REST demotion: %v %v", demoted, err)
	}
	bob.until("bob sees carol demoted", isEvent(parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED, demoted.GetSeq()))

	// Bad input, REST: each its code and status, nothing stored.
	dm := "dm:alice:bob"
	if _, err := alice.Send(ctx, dm, "hi"); err != nil {
		t.Fatal(err)
	}
	head := headSeq(t, ctx, rest("alice"), conv)
	groupPath := p.HTTP() + "/v1/conversations/" + url.PathEscape(conv)
	body := func(k, v string) []byte { b, _ := json.Marshal(map[string]string{k: v}); return b }
	for _, tc := range []struct {
		name, user, method, url string
		body                    []byte
		status                  int
		code                    string
	}{
		{"a member renames", "carol", http.MethodPatch, groupPath, body("title", "mine"), 403, wire.CodeForbidden},
		{"a member promotes", "carol", http.MethodPatch, groupPath + "/members/carol", body("role", "admin"), 403, wire.CodeForbidden},
		{"an admin promotes", "bob", http.MethodPatch, groupPath + "/members/carol", body("role", "admin"), 403, wire.CodeForbidden},
		{"an admin removes the owner", "bob", http.MethodDelete, groupPath + "/members/alice", nil, 403, wire.CodeForbidden},
		{"a member removes another", "carol", http.MethodDelete, groupPath + "/members/bob", nil, 403, wire.CodeForbidden},
		{"a member adds", "carol", http.MethodPost, groupPath + "/members", []byte(`{"user_ids":["dave"]}`), 403, wire.CodeForbidden},
		{"promote a non-member", "alice", http.MethodPatch, groupPath + "/members/dave", body("role", "admin"), 404, wire.CodeNotFound},
		{"demote the owner", "alice", http.MethodPatch, groupPath + "/members/alice", body("role", "member"), 400, wire.CodeInvalid},
		{"a role that does not exist", "alice", http.MethodPatch, groupPath + "/members/carol", body("role", "boss"), 400, wire.CodeInvalid},
		{"give ownership", "alice", http.MethodPatch, groupPath + "/members/carol", body("role", "owner"), 400, wire.CodeInvalid},
		{"an empty title", "alice", http.MethodPatch, groupPath, body("title", ""), 400, wire.CodeInvalid},
		{"a title over 256 bytes", "alice", http.MethodPatch, groupPath, body("title", strings.Repeat("é", 129)), 413, wire.CodeTooLarge},
		{"a title with a newline", "alice", http.MethodPatch, groupPath, body("title", "a\nb"), 400, wire.CodeInvalid},
		{"an unknown field", "alice", http.MethodPatch, groupPath, []byte(`{"name":"x"}`), 400, wire.CodeInvalid},
		{"a non-member renames", "mallory", http.MethodPatch, groupPath, body("title", "mine"), 403, wire.CodeNotMember},
		{"rename a DM", "alice", http.MethodPatch, p.HTTP() + "/v1/conversations/" + url.PathEscape(dm), body("title", "us"), 400, wire.CodeInvalid},
		{"roles in a DM", "alice", http.MethodPatch, p.HTTP() + "/v1/conversations/" + url.PathEscape(dm) + "/members/bob", body("role", "admin"), 400, wire.CodeInvalid},
		{"a group that does not exist", "alice", http.MethodPatch, p.HTTP() + "/v1/conversations/g:1", body("title", "x"), 404, wire.CodeNotFound},
	} {
		status, b := restCall(t, tc.method, tc.url, p.token(tc.user, "rest", time.Hour), tc.body)
		if code, _ := errorBody(b); status != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, b, tc.status, tc.code)
		}
	}
	// Bad input over both subprotocols.
	bob.wantError(bob.write(setRoleFrame(conv, "carol", "admin")), false, wire.CodeForbidden)
	bob.wantError(bob.write(renameFrame(conv, strings.Repeat("t", 257))), false, wire.CodeTooLarge)
	carol.wantError(carol.write(renameFrame(conv, "   ")), false, wire.CodeInvalid)
	carol.wantError(carol.write(setRoleFrame(conv, "bob", "member")), false, wire.CodeForbidden)
	carol.wantError(carol.write(setRoleFrame(dm, "bob", "admin")), false, wire.CodeInvalid)
	if _, err := alice.Rename(ctx, conv, ""); errCode(err) != wire.CodeInvalid {
		t.Errorf("SDK rename to an empty title: %v, want invalid", err)
	}
	if h := headSeq(t, ctx, rest("alice"), conv); h != head {
		t.Fatalf("refused requests stored something: head %d, want %d", h, head)
	}
	if got := roleList(t, rest("carol"), conv); got != "alice:owner bob:admin carol:member" {
		t.Fatalf("members after refusals %s", got)
	}
	states, err = rest("bob").Inbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range states {
		if st.GetConversationId() == conv && st.GetTitle() != "the crew" {
			t.Fatalf("bob's inbox after refusals titles the group %q", st.GetTitle())
		}
	}
}

// TestOwnerLeavesAndLastMember (issue 13 item 4): the owner leaves and the
// admin becomes owner (an OWNER_CHANGED event, seen live); once the last
// member leaves, the group is empty and refuses every write with
// not_member.
func TestOwnerLeavesAndLastMember(t *testing.T) {
	p, ctx, rest, conv := startCrew(t)
	if _, err := rest("alice").SetRole(ctx, conv, "carol", "admin"); err != nil {
		t.Fatal(err)
	}
	bob := openRaw(t, p, p.token("bob", "desk", time.Hour), wire.SubprotocolJSON)
	carolSDK, carolEvents := dialSDK(t, p, p.token("carol", "desk", time.Hour), wire.SubprotocolProto, nil)

	left, err := rest("alice").Leave(ctx, conv, "alice")
	if err != nil || left.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED {
		t.Fatalf("alice leaves: %v %v", left, err)
	}
	transfer := left.GetSeq() + 1
	f := bob.until("bob sees carol become the owner", isEvent(parleyv1.MessageKind_MESSAGE_KIND_OWNER_CHANGED, transfer))
	if m := f.GetMessage(); strings.Join(m.GetMembers(), ",") != "carol" || m.GetSenderId() != "alice" {
		t.Fatalf("OWNER_CHANGED %v, want carol, sent by alice", m)
	}
	waitFor(t, 10*time.Second, "carol's device gets the transfer", func() bool { return carolEvents.message(conv, transfer) != nil })
	if got := roleList(t, rest("bob"), conv); got != "carol:owner bob:member" {
		t.Fatalf("members after alice left %s", got)
	}
	// The new owner acts as one.
	if _, err := carolSDK.SetRole(ctx, conv, "bob", "admin"); err != nil {
		t.Fatalf("the new owner makes bob an admin: %v", err)
	}
	if _, err := rest("carol").RemoveMember(ctx, conv, "bob"); err != nil {
		t.Fatalf("the new owner removes bob: %v", err)
	}
	if _, err := rest("carol").Leave(ctx, conv, "carol"); err != nil {
		t.Fatalf("the last member leaves: %v", err)
	}
	// Empty and read-only: every write refused, nothing stored.
	_, err = rest("carol").Send(ctx, conv, "late", "anyone here")
	wantCode(t, "a send to the empty group", err, wire.CodeNotMember)
	if !strings.Contains(err.Error(), "read-only") {
		t.Errorf("the refusal does not say the group is read-only: %v", err)
	}
	_, err = carolSDK.Rename(ctx, conv, "mine")
	wantCode(t, "a rename of the empty group", err, wire.CodeNotMember)
	_, err = rest("carol").AddMembers(ctx, conv, []string{"carol"})
	wantCode(t, "an add to the empty group", err, wire.CodeNotMember)
	_, err = rest("carol").History(ctx, conv, 0, 0, 10)
	wantCode(t, "history of the group carol left", err, wire.CodeNotMember)
	states, err := rest("carol").Inbox(ctx)
	if err != nil || len(states) != 1 || states[0].GetConversationId() != conv {
		t.Fatalf("carol's inbox keeps the group she left: %v %v", states, err)
	}
}
