package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
)

// TestReadYourWrites (issue 13, honest inbox): a read answered by the
// server is in every later inbox of the user, from any device, at once;
// the answer names the stored pointer (higher than the seq sent when an
// earlier read went further, clamped to the head beyond it); unread counts
// only the other member's messages.
func TestReadYourWrites(t *testing.T) {
	p := startServer(t, "")
	ctx := ctxT(t, 30*time.Second)
	conv := "dm:alice:bob"
	alice := client.NewREST(p.HTTP(), p.token("alice", "phone", time.Hour))
	for i := range 3 {
		if _, err := alice.Send(ctx, conv, client.NewClientMsgID(), fmt.Sprint("hi ", i)); err != nil { // seqs 2, 3, 4
			t.Fatal(err)
		}
	}
	phone, laptop := p.token("bob", "phone", time.Hour), client.NewREST(p.HTTP(), p.token("bob", "laptop", time.Hour))
	read := func(seq int) uint64 {
		t.Helper()
		// Odd steps spell the seq as a string, as the API's own answers do.
		body := fmt.Sprintf(`{"seq":%d}`, seq)
		if seq%2 == 1 {
			body = fmt.Sprintf(`{"seq":"%d"}`, seq)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.HTTP()+"/v1/conversations/"+conv+"/read", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+phone)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			ReadSeq uint64 `json:"read_seq"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("POST read %d: %s, %v", seq, resp.Status, err)
		}
		return out.ReadSeq
	}
	inbox := func() (read, unread uint64) {
		t.Helper()
		states, err := laptop.Inbox(ctx)
		if err != nil || len(states) != 1 {
			t.Fatalf("bob's inbox on the laptop: %v %v", states, err)
		}
		return states[0].ReadSeq, states[0].Unread
	}
	if r, u := inbox(); r != 0 || u != 3 {
		t.Fatalf("before any read: read %d unread %d, want 0 and 3 (alice's messages, not the creation event)", r, u)
	}
	for _, step := range []struct {
		seq            int
		answer, unread uint64
		what           string
	}{
		{3, 3, 1, "read up to 3"},
		{1, 3, 1, "a lower read answers the stored pointer"},
		{99, 4, 0, "beyond the head: clamped to it"},
	} {
		if got := read(step.seq); got != step.answer {
			t.Errorf("%s: POST read %d answered read_seq %d, want %d", step.what, step.seq, got, step.answer)
		}
		// No wait: the next inbox, from another device, reflects it.
		if r, u := inbox(); r != step.answer || u != step.unread {
			t.Errorf("%s: the laptop's inbox right after shows read %d unread %d, want %d and %d", step.what, r, u, step.answer, step.unread)
		}
	}
}
