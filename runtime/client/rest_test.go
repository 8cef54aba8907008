package client_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// restServer answers like runtime/httpapi: protojson bodies with proto field
// names and {"error":{...}} errors.
func restServer(t *testing.T) (*httptest.Server, *[]string) {
	var seen []string
	mux := http.NewServeMux()
	auth := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			seen = append(seen, r.Method+" "+r.URL.RequestURI())
			if r.Header.Get("Authorization") != "Bearer tok" {
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = io.WriteString(w, `{"error":{"code":"unauthenticated","message":"bad token"}}`)
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("POST /v1/messages", auth(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]string
		_ = json.NewDecoder(r.Body).Decode(&b)
		if b["client_msg_id"] == "" || b["conversation_id"] != "dm:a:b" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":{"code":"invalid","message":"missing fields"}}`)
			return
		}
		_, _ = io.WriteString(w, `{"conversation_id":"dm:a:b","seq":"7","message_id":"99","created_at":"1700000000000","client_msg_id":"`+b["client_msg_id"]+`"}`)
	}))
	mux.HandleFunc("GET /v1/history/{conv}", auth(func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("conv") != "g:1" || r.URL.Query().Get("after") != "3" || r.URL.Query().Get("limit") != "2" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":{"code":"invalid","message":"unexpected query"}}`)
			return
		}
		_, _ = io.WriteString(w, `{"conversation_id":"g:1","messages":[{"conversation_id":"g:1","seq":"4","sender_id":"a","kind":"MESSAGE_KIND_TEXT","text":"x"},{"conversation_id":"g:1","seq":"5","kind":"MESSAGE_KIND_MEMBER_ADDED","members":["c"]}],"has_more":true}`)
	}))
	mux.HandleFunc("POST /v1/conversations", auth(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"conversation":{"id":"g:abc","kind":"group","title":"t"},"event":{"conversation_id":"g:abc","seq":"1","kind":"MESSAGE_KIND_CONVERSATION_CREATED"}}`)
	}))
	mux.HandleFunc("POST /v1/conversations/{conv}/members", auth(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusConflict)
		_, _ = io.WriteString(w, `{"error":{"code":"group_full","message":"500 members"}}`)
	}))
	mux.HandleFunc("DELETE /v1/conversations/{conv}/members/{user}", auth(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"event":{"conversation_id":"`+r.PathValue("conv")+`","seq":"9","kind":"MESSAGE_KIND_MEMBER_REMOVED","members":["`+r.PathValue("user")+`"]}}`)
	}))
	mux.HandleFunc("GET /v1/conversations", auth(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"conversations":[{"conversation_id":"dm:a:b","kind":"dm","head_seq":"3","unread":"1","last_message":{"seq":"3","text":"yo"}}]}`)
	}))
	mux.HandleFunc("GET /v1/conversations/{conv}/receipts", auth(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"conversation_id":"g:1","seq":4,"receipts":[{"user_id":"b","delivered_seq":5,"read_seq":4}]}`)
	}))
	mux.HandleFunc("POST /v1/conversations/{conv}/read", auth(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"conversation_id":"g:1","read_seq":4}`)
	}))
	mux.HandleFunc("GET /v1/presence", auth(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"presence":[{"user_id":"a","status":"PRESENCE_STATUS_ONLINE"},{"user_id":"b","status":"PRESENCE_STATUS_OFFLINE","last_active":"1700000000000"}]}`)
	}))
	mux.HandleFunc("/v1/broken", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream exploded", http.StatusBadGateway)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &seen
}

func TestREST(t *testing.T) {
	srv, seen := restServer(t)
	// A ws:// address with the WebSocket path is accepted as the REST root.
	r := client.NewREST("ws"+srv.URL[len("http"):]+"/v1/ws", "tok")
	ctx := ctxT(t)

	ok, err := r.Send(ctx, "dm:a:b", "", "hi")
	if err != nil || ok.GetSeq() != 7 || ok.GetMessageId() != 99 || len(ok.GetClientMsgId()) != 32 {
		t.Fatalf("Send = %v, %v; want seq 7 with a generated client_msg_id", ok, err)
	}
	h, err := r.History(ctx, "g:1", 0, 3, 2)
	if err != nil || len(h.GetMessages()) != 2 || !h.GetHasMore() || h.GetMessages()[1].GetKind() != parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED {
		t.Fatalf("History = %v, %v", h, err)
	}
	id, err := r.CreateGroup(ctx, "t", []string{"b"})
	if err != nil || id != "g:abc" {
		t.Fatalf("CreateGroup = %q, %v; want g:abc", id, err)
	}
	_, err = r.AddMembers(ctx, "g:abc", []string{"c"})
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeGroupFull {
		t.Fatalf("AddMembers error %v, want *wire.Error group_full", err)
	}
	ev, err := r.RemoveMember(ctx, "g:abc", "c")
	if err != nil || ev.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED || !slices.Equal(ev.GetMembers(), []string{"c"}) {
		t.Fatalf("RemoveMember = %v, %v", ev, err)
	}
	inbox, err := r.Inbox(ctx)
	if err != nil || len(inbox) != 1 || inbox[0].GetHeadSeq() != 3 || inbox[0].GetLastMessage().GetText() != "yo" {
		t.Fatalf("Inbox = %v, %v", inbox, err)
	}
	rs, err := r.ReadBy(ctx, "g:1", 4)
	if err != nil || len(rs) != 1 || rs[0] != (client.Receipt{UserID: "b", DeliveredSeq: 5, ReadSeq: 4}) {
		t.Fatalf("ReadBy = %v, %v", rs, err)
	}
	if err := r.Read(ctx, "g:1", 4); err != nil {
		t.Fatalf("Read: %v", err)
	}
	ps, err := r.Presence(ctx, []string{"a", "b"})
	if err != nil || len(ps) != 2 || ps[1].GetLastActive() != 1700000000000 || ps[0].GetStatus() != parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE {
		t.Fatalf("Presence = %v, %v", ps, err)
	}
	want := []string{
		"POST /v1/messages", "GET /v1/history/g:1?after=3&limit=2", "POST /v1/conversations",
		"POST /v1/conversations/g:abc/members", "DELETE /v1/conversations/g:abc/members/c",
		"GET /v1/conversations", "GET /v1/conversations/g:1/receipts?seq=4", "POST /v1/conversations/g:1/read",
		"GET /v1/presence?user=a&user=b",
	}
	if !slices.Equal(*seen, want) {
		t.Fatalf("requests\n%q\nwant\n%q", *seen, want)
	}
}

func TestRESTErrors(t *testing.T) {
	srv, _ := restServer(t)
	ctx := ctxT(t)
	_, err := client.NewREST(srv.URL, "wrong").Inbox(ctx)
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeUnauthenticated || we.Message != "bad token" {
		t.Fatalf("bad token: %v, want *wire.Error unauthenticated", err)
	}
	// A body without an error object still maps to a code by status.
	r := client.NewREST(srv.URL, "tok")
	err = r.Read(ctx, "x", 1) // routed to the read handler: fine
	if err != nil {
		t.Fatal(err)
	}
	r.BaseURL = srv.URL + "/v1/broken?"
	_, err = r.Inbox(ctx)
	if !errors.As(err, &we) || we.Code != wire.CodeInternal {
		t.Fatalf("non-JSON 502: %v, want *wire.Error internal", err)
	}
}
