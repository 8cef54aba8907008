package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	"github.com/parleychat/parley/runtime/wire"
)

// TestRESTMethodsAndBodies: a known path asked with a method it does not
// take gets 405 method_not_allowed with an Allow header (not 404), an unknown
// path 404 not_found; and text with <, > and & comes back as written, not as
// \u003c escapes.
func TestRESTMethodsAndBodies(t *testing.T) {
	p := startServer(t, "")
	ctx := ctxT(t, time.Minute)
	tok := p.token("alice", "laptop", time.Hour)
	do := func(method, path, body string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, p.HTTP()+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	for _, tc := range []struct {
		method, path, allow string
	}{
		{http.MethodPut, "/v1/messages", "POST"},
		{http.MethodGet, "/v1/messages", "POST"},
		{http.MethodPost, "/v1/history/dm:alice:bob", "GET"},
		{http.MethodDelete, "/v1/conversations", "GET, POST"},
	} {
		res, body := do(tc.method, tc.path, "")
		var e struct{ Error wire.Error }
		_ = json.Unmarshal([]byte(body), &e)
		if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != tc.allow || e.Error.Code != wire.CodeMethodNotAllowed {
			t.Errorf("%s %s = %d Allow %q %s; want 405, Allow %q, method_not_allowed", tc.method, tc.path, res.StatusCode, res.Header.Get("Allow"), body, tc.allow)
		}
	}
	if res, body := do(http.MethodGet, "/v1/nothing-here", ""); res.StatusCode != http.StatusNotFound || !strings.Contains(body, wire.CodeNotFound) {
		t.Errorf("GET /v1/nothing-here = %d %s, want 404 not_found", res.StatusCode, body)
	}

	rest := client.NewREST(p.HTTP(), tok)
	text := `a <b> & "c" > d`
	if _, err := rest.Send(ctx, "dm:alice:bob", "", text); err != nil {
		t.Fatal(err)
	}
	_, body := do(http.MethodGet, "/v1/history/dm:alice:bob", "")
	if !strings.Contains(body, `a <b> & \"c\" > d`) {
		t.Errorf("history body %s does not carry the text as written", body)
	}
}

// TestReplies (issue 13): a reply sent over REST (reply_to as a string, as
// the API spells seqs) and over the WebSocket SDK is stored with a quote of
// the original, which the answer, the push and history all carry; bad
// reply_to values get stable codes.
func TestReplies(t *testing.T) {
	p := startServer(t, "")
	ctx := ctxT(t, time.Minute)
	aliceTok, bobTok := p.token("alice", "laptop", time.Hour), p.token("bob", "phone", time.Hour)
	aliceREST, bobREST := client.NewREST(p.HTTP(), aliceTok), client.NewREST(p.HTTP(), bobTok)
	conv := "dm:alice:bob"
	orig, err := aliceREST.Send(ctx, conv, "", "lunch at noon?")
	if err != nil {
		t.Fatal(err)
	}
	alice, err := client.Dial(ctx, client.Options{URL: p.HTTP(), Token: aliceTok})
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	aliceEvents := recordEvents(alice)

	// Over REST, reply_to spelled as a string.
	do := func(body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.HTTP()+"/v1/messages", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+bobTok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	status, body := do(`{"conversation_id":"dm:alice:bob","client_msg_id":"r1","text":"yes!","reply_to":"` + fmt.Sprint(orig.GetSeq()) + `"}`)
	if status != http.StatusOK || !strings.Contains(body, `"reply_to":{"seq":"`+fmt.Sprint(orig.GetSeq())+`","sender_id":"alice","text":"lunch at noon?"}`) {
		t.Fatalf("REST reply = %d %s, want 200 with the quote", status, body)
	}
	// Alice's device gets the push with the quote.
	waitFor(t, 10*time.Second, "alice's device gets the reply with its quote", func() bool {
		aliceEvents.mu.Lock()
		defer aliceEvents.mu.Unlock()
		for _, m := range aliceEvents.msgs[conv] {
			if m.GetText() == "yes!" && m.GetReplyTo().GetText() == "lunch at noon?" && m.GetReplyTo().GetSenderId() == "alice" {
				return true
			}
		}
		return false
	})
	// Over the WebSocket SDK: the answer carries the quote.
	ok, err := alice.SendReply(ctx, conv, "great", orig.GetSeq())
	if err != nil || ok.GetReplyTo().GetSeq() != orig.GetSeq() || ok.GetReplyTo().GetText() != "lunch at noon?" {
		t.Fatalf("SDK reply = %v, %v; want send_ok with the quote", ok, err)
	}
	hist, err := bobREST.History(ctx, conv, 0, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	replies := 0
	for _, m := range hist.GetMessages() {
		if m.GetReplyTo().GetSeq() == orig.GetSeq() {
			replies++
		}
	}
	if replies != 2 {
		t.Fatalf("history has %d replies quoting seq %d, want 2: %v", replies, orig.GetSeq(), hist.GetMessages())
	}

	// The same values as the WebSocket's JSON: 1.0 is seq 1 (here, the DM's
	// creation event: invalid, not a parse error).
	if status, body := do(`{"conversation_id":"dm:alice:bob","client_msg_id":"r5","text":"x","reply_to":1.0}`); status != http.StatusBadRequest || !strings.Contains(body, "system event") {
		t.Errorf("reply_to 1.0 = %d %s, want 400 naming the system event at seq 1", status, body)
	}
	for _, tc := range []struct{ body, code string }{
		{`{"conversation_id":"dm:alice:bob","client_msg_id":"r2","text":"x","reply_to":"soon"}`, wire.CodeInvalid},
		{`{"conversation_id":"dm:alice:bob","client_msg_id":"r3","text":"x","reply_to":-1}`, wire.CodeInvalid},
		{`{"conversation_id":"dm:alice:bob","client_msg_id":"r4","text":"x","reply_to":999}`, wire.CodeInvalid},
	} {
		if status, body := do(tc.body); status != http.StatusBadRequest || !strings.Contains(body, tc.code) {
			t.Errorf("%s = %d %s, want 400 %s", tc.body, status, body, tc.code)
		}
	}
	if _, err := alice.SendReply(ctx, conv, "to the creation", 1); wire.AsError(err).Code != wire.CodeInvalid {
		t.Errorf("reply to the DM's creation event: %v, want %s", err, wire.CodeInvalid)
	}
}

// TestMembersList (issue 13): a member lists a group's members, the owner
// first with role owner; once the owner leaves, ownership shows passed to
// the longest-standing member; a non-member gets not_member.
func TestMembersList(t *testing.T) {
	p := startServer(t, "")
	ctx := ctxT(t, time.Minute)
	rest := func(u string) *client.REST { return client.NewREST(p.HTTP(), p.token(u, "laptop", time.Hour)) }
	g, err := rest("alice").CreateGroup(ctx, "crew", []string{"bob", "carol"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rest("alice").AddMembers(ctx, g, []string{"dave"}); err != nil {
		t.Fatal(err)
	}
	names := func(ms []client.Member) string {
		var out []string
		for _, m := range ms {
			out = append(out, m.UserID+":"+m.Role)
		}
		return strings.Join(out, " ")
	}
	ms, err := rest("dave").Members(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(ms); got != "alice:owner bob:member carol:member dave:member" {
		t.Fatalf("members = %s", got)
	}
	if _, err := rest("alice").RemoveMember(ctx, g, "alice"); err != nil {
		t.Fatal(err)
	}
	ms, err = rest("carol").Members(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(ms); got != "bob:owner carol:member dave:member" {
		t.Fatalf("members after the owner left = %s, want bob (longest-standing) as owner", got)
	}
	if _, err := rest("alice").Members(ctx, g); wire.AsError(err).Code != wire.CodeNotMember {
		t.Fatalf("a former member lists members: %v, want %s", err, wire.CodeNotMember)
	}
}
