package e2e

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

func muteFrame(conv string, until int64, remove bool) *parleyv1.ClientFrame {
	return &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Mute{Mute: &parleyv1.Mute{ConversationId: conv, Until: until, Remove: remove}}}
}

func blockFrame(user string, remove bool) *parleyv1.ClientFrame {
	return &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Block{Block: &parleyv1.Block{UserId: user, Remove: remove}}}
}

// TestMute (issue 13 item 6): a mute set over REST, the JSON subprotocol,
// Protobuf frames or the SDK shows in that user's inbox only (with its
// end), and an unmute clears it; bad mutes get their codes over REST and
// both subprotocols and change nothing.
func TestMute(t *testing.T) {
	p, ctx, rest, conv := startCrew(t)
	muted := func(user string) (bool, int64) {
		t.Helper()
		states, err := rest(user).Inbox(ctx)
		if err != nil {
			t.Fatalf("%s's inbox: %v", user, err)
		}
		for _, st := range states {
			if st.GetConversationId() == conv {
				return st.GetMuted(), st.GetMutedUntil()
			}
		}
		t.Fatalf("%s's inbox has no %s", user, conv)
		return false, 0
	}
	until := time.Now().Add(time.Hour).UnixMilli()
	if err := rest("bob").Mute(ctx, conv, until); err != nil {
		t.Fatalf("bob mutes over REST: %v", err)
	}
	if m, u := muted("bob"); !m || u != until {
		t.Fatalf("bob's inbox: muted %v until %d, want muted until %d", m, u, until)
	}
	if m, _ := muted("alice"); m {
		t.Fatal("alice's inbox shows bob's mute")
	}
	alice := openRaw(t, p, p.token("alice", "desk", time.Hour), wire.SubprotocolJSON)
	if f := alice.reply(alice.write(muteFrame(conv, 0, false))); f.GetMute().GetConversationId() != conv || f.GetMute().GetRemove() {
		t.Fatalf("alice's JSON mute answered %v", f)
	}
	if m, u := muted("alice"); !m || u != 0 {
		t.Fatalf("alice's inbox: muted %v until %d, want muted with no end", m, u)
	}
	carol := openRaw(t, p, p.token("carol", "desk", time.Hour), wire.SubprotocolProto)
	if f := carol.reply(carol.write(muteFrame(conv, until, false))); f.GetMute().GetUntil() != until {
		t.Fatalf("carol's Protobuf mute answered %v", f)
	}
	if m, _ := muted("carol"); !m {
		t.Fatal("carol's inbox is not muted")
	}
	if f := carol.reply(carol.write(muteFrame(conv, 0, true))); !f.GetMute().GetRemove() {
		t.Fatalf("carol's Protobuf unmute answered %v", f)
	}
	if m, _ := muted("carol"); m {
		t.Fatal("carol's inbox still muted after her unmute")
	}
	aliceSDK, _ := dialSDK(t, p, p.token("alice", "laptop", time.Hour), wire.SubprotocolProto, nil)
	if err := aliceSDK.Unmute(ctx, conv); err != nil {
		t.Fatalf("alice unmutes over the SDK: %v", err)
	}
	if m, _ := muted("alice"); m {
		t.Fatal("alice's inbox still muted after her unmute")
	}
	if err := rest("bob").Unmute(ctx, conv); err != nil {
		t.Fatalf("bob unmutes over REST: %v", err)
	}
	if err := rest("bob").Mute(ctx, conv, 0); err != nil {
		t.Fatal(err)
	}

	// Bad input: each its code, bob's mute (no end) unchanged.
	path := p.HTTP() + "/v1/conversations/" + url.PathEscape(conv) + "/mute"
	past := time.Now().Add(-time.Minute).UnixMilli()
	for _, tc := range []struct {
		name, user, method, url string
		body                    string
		status                  int
		code                    string
	}{
		{"an end in the past", "bob", http.MethodPut, path, `{"until":` + strconv.FormatInt(past, 10) + `}`, 400, wire.CodeInvalid},
		{"an end that is no time", "bob", http.MethodPut, path, `{"until":"soon"}`, 400, wire.CodeInvalid},
		{"an unknown field", "bob", http.MethodPut, path, `{"for":60}`, 400, wire.CodeInvalid},
		{"a non-member", "mallory", http.MethodPut, path, "", 403, wire.CodeNotMember},
		{"a group that does not exist", "bob", http.MethodPut, p.HTTP() + "/v1/conversations/g:1/mute", "", 404, wire.CodeNotFound},
		{"a malformed id", "bob", http.MethodPut, p.HTTP() + "/v1/conversations/nope/mute", "", 400, wire.CodeInvalid},
		{"an unmute with an end", "bob", http.MethodDelete, path, `{"until":` + strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10) + `}`, 400, wire.CodeInvalid},
	} {
		var body []byte
		if tc.body != "" {
			body = []byte(tc.body)
		}
		status, b := restCall(t, tc.method, tc.url, p.token(tc.user, "rest", time.Hour), body)
		if code, _ := errorBody(b); status != tc.status || code != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.name, status, b, tc.status, tc.code)
		}
	}
	alice.wantError(alice.write(muteFrame(conv, past, false)), false, wire.CodeInvalid)
	carol.wantError(carol.write(muteFrame("g:1", 0, false)), false, wire.CodeNotFound)
	mallory := openRaw(t, p, p.token("mallory", "desk", time.Hour), wire.SubprotocolProto)
	mallory.wantError(mallory.write(muteFrame(conv, 0, false)), false, wire.CodeNotMember)
	if m, u := muted("bob"); !m || u != 0 {
		t.Fatalf("bob's mute after refusals: muted %v until %d, want muted with no end", m, u)
	}
	if m, _ := muted("alice"); m {
		t.Fatal("a refused mute muted alice")
	}
}

// TestBlock (issue 13 item 6): alice blocks bob over the SDK; bob's
// device is told her presence is unknown at once, and reads it unknown
// over REST and presence_sub; his sends to their DM get blocked over REST
// and both subprotocols with nothing stored, while alice still reads and
// writes; their group is unaffected; bad blocks are invalid and store
// nothing; after alice unblocks over REST, bob sees her and writes again.
func TestBlock(t *testing.T) {
	p := startServer(t, "")
	ctx := ctxT(t, 2*time.Minute)
	rest := func(u string) *client.REST { return client.NewREST(p.HTTP(), p.token(u, "rest", time.Hour)) }
	dm := "dm:alice:bob"
	alice, _ := dialSDK(t, p, p.token("alice", "laptop", time.Hour), wire.SubprotocolProto, nil)
	if _, err := alice.Send(ctx, dm, "hi bob"); err != nil {
		t.Fatal(err)
	}
	bobJSON := openRaw(t, p, p.token("bob", "phone", time.Hour), wire.SubprotocolJSON)
	bobProto := openRaw(t, p, p.token("bob", "desk", time.Hour), wire.SubprotocolProto)
	presenceOf := func() parleyv1.PresenceStatus {
		t.Helper()
		ps, err := rest("bob").Presence(ctx, []string{"alice"})
		if err != nil || len(ps) != 1 {
			t.Fatalf("bob reads alice's presence: %v %v", ps, err)
		}
		return ps[0].GetStatus()
	}
	if s := presenceOf(); s != parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE {
		t.Fatalf("before the block bob reads alice %v, want online", s)
	}

	if err := alice.Block(ctx, "bob"); err != nil {
		t.Fatalf("alice blocks bob: %v", err)
	}
	bobJSON.until("bob's device is told alice's presence is unknown", func(f *parleyv1.ServerFrame) bool {
		pr := f.GetPresence()
		return f.GetId() == 0 && pr.GetUserId() == "alice" && pr.GetStatus() == parleyv1.PresenceStatus_PRESENCE_STATUS_UNKNOWN
	})
	if s := presenceOf(); s != parleyv1.PresenceStatus_PRESENCE_STATUS_UNKNOWN {
		t.Fatalf("blocked bob reads alice %v over REST, want unknown", s)
	}
	sub := bobProto.reply(bobProto.write(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_PresenceSub{PresenceSub: &parleyv1.PresenceSub{UserIds: []string{"alice"}}}}))
	if s := sub.GetPresence().GetStatus(); s != parleyv1.PresenceStatus_PRESENCE_STATUS_UNKNOWN {
		t.Fatalf("blocked bob's presence_sub reads alice %v, want unknown", s)
	}

	head := headSeq(t, ctx, rest("alice"), dm)
	_, err := rest("bob").Send(ctx, dm, "b1", "let me in")
	wantCode(t, "bob's REST send while blocked", err, wire.CodeBlocked)
	status, _ := restCall(t, http.MethodPost, p.HTTP()+"/v1/messages", p.token("bob", "rest", time.Hour), []byte(`{"conversation_id":"`+dm+`","client_msg_id":"b2","text":"hello"}`))
	if status != http.StatusForbidden {
		t.Errorf("blocked REST send: HTTP %d, want 403", status)
	}
	bobJSON.wantError(bobJSON.sendText(dm, "b3", "hello"), false, wire.CodeBlocked)
	bobProto.wantError(bobProto.sendText(dm, "b4", "hello"), false, wire.CodeBlocked)
	bobProto.wantError(bobProto.write(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_React{React: &parleyv1.React{ConversationId: dm, Seq: 1, Emoji: "👍"}}}), false, wire.CodeBlocked)
	if h := headSeq(t, ctx, rest("alice"), dm); h != head {
		t.Fatalf("blocked writes stored something: head %d, want %d", h, head)
	}
	// alice still reads the DM and writes in it.
	if _, err := alice.Send(ctx, dm, "still here"); err != nil {
		t.Fatalf("alice writes in the DM she blocked bob from: %v", err)
	}
	if msgs := allHistory(t, ctx, rest("alice"), dm); len(msgs) < 2 {
		t.Fatalf("alice's history of the DM: %d messages", len(msgs))
	}
	// Groups are unaffected.
	group, err := rest("alice").CreateGroup(ctx, "crew", []string{"bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rest("bob").Send(ctx, group, "g1", "in the group"); err != nil {
		t.Fatalf("blocked bob writes in a group with alice: %v", err)
	}

	// Bad input: invalid, nothing stored.
	for _, tc := range []struct{ name, user, path string }{
		{"oneself", "alice", "alice"},
		{"an invalid id", "alice", "not%20valid"},
	} {
		status, b := restCall(t, http.MethodPut, p.HTTP()+"/v1/blocks/"+tc.path, p.token(tc.user, "rest", time.Hour), nil)
		if code, _ := errorBody(b); status != 400 || code != wire.CodeInvalid {
			t.Errorf("block of %s: %d %s, want 400 invalid", tc.name, status, b)
		}
	}
	bobJSON.wantError(bobJSON.write(blockFrame("bob", false)), false, wire.CodeInvalid)
	bobProto.wantError(bobProto.write(blockFrame("", false)), false, wire.CodeInvalid)
	if err := alice.Block(ctx, "alice"); errCode(err) != wire.CodeInvalid {
		t.Errorf("SDK block of oneself: %v, want invalid", err)
	}
	if got, err := rest("alice").Blocks(ctx); err != nil || !slices.Equal(got, []string{"bob"}) {
		t.Fatalf("alice's blocks = %v, %v; want [bob]", got, err)
	}
	if got, err := rest("bob").Blocks(ctx); err != nil || len(got) != 0 {
		t.Fatalf("bob's blocks after refused blocks = %v, %v; want none", got, err)
	}

	// The unblock, over REST.
	if err := rest("alice").Unblock(ctx, "bob"); err != nil {
		t.Fatalf("alice unblocks bob: %v", err)
	}
	if s := presenceOf(); s != parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE {
		t.Fatalf("after the unblock bob reads alice %v, want online", s)
	}
	if _, err := rest("bob").Send(ctx, dm, "b5", "thanks"); err != nil {
		t.Fatalf("bob writes after the unblock: %v", err)
	}
	if got, err := rest("alice").Blocks(ctx); err != nil || len(got) != 0 {
		t.Fatalf("alice's blocks after the unblock = %v, %v", got, err)
	}

	// The SDK's REST block applies to bob's very next send (the DM's
	// sequencer is told before the call returns), and its unblock too.
	if err := rest("alice").Block(ctx, "bob"); err != nil {
		t.Fatalf("alice blocks bob through the SDK's REST client: %v", err)
	}
	if _, err := rest("bob").Send(ctx, dm, "b6", "again?"); errCode(err) != wire.CodeBlocked {
		t.Fatalf("bob's send right after the SDK's REST block: %v, want blocked", err)
	}
	if err := rest("alice").Unblock(ctx, "bob"); err != nil {
		t.Fatalf("alice unblocks bob again: %v", err)
	}
	if _, err := rest("bob").Send(ctx, dm, "b7", "ok"); err != nil {
		t.Fatalf("bob's send right after the second unblock: %v", err)
	}
}

// TestBlockRESTEmptyUser: PUT and DELETE /v1/blocks/ with no user are
// invalid, as an empty user_id is over the WebSocket (they were a missing
// route, not_found), and store nothing.
func TestBlockRESTEmptyUser(t *testing.T) {
	p := startServer(t, "")
	tok := "Bearer " + p.token("alice", "curl", time.Hour)
	for _, method := range []string{http.MethodPut, http.MethodDelete} {
		if status, body := httpDo(t, method, p.HTTP()+"/v1/blocks/", tok, ""); status != http.StatusBadRequest || !strings.Contains(body, `"invalid"`) {
			t.Errorf("%s /v1/blocks/: %d %s, want 400 invalid", method, status, body)
		}
	}
	if status, body := httpDo(t, http.MethodGet, p.HTTP()+"/v1/blocks", tok, ""); status != http.StatusOK || strings.Contains(body, `""`) {
		t.Errorf("GET /v1/blocks after the refusals: %d %s, want an empty list", status, body)
	}
}
