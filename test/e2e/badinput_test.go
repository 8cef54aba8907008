package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// TestBadInput sends bad input of every kind to a real server, over
// WebSocket (both subprotocols) and REST, and checks the documented stable
// error code of each, and that nothing was stored: the heads of the
// conversations involved are unchanged afterwards. Boundary rows (exactly at
// a limit) check that the limit itself is accepted.
func TestBadInput(t *testing.T) {
	const maxText = 1000
	// --read-rate -1: after every row the test reads the conversations back
	// (hundreds of history requests of one user in a few seconds); the read
	// budget has tests of its own (TestReadsRateLimited*).
	p := startServer(t, "", "--max-message-bytes", fmt.Sprint(maxText), "--read-rate", "-1")
	ctx := ctxT(t, 5*time.Minute)
	secret := p.devSecret()
	aliceTok := p.token("alice", "laptop", time.Hour)
	bobTok := p.token("bob", "phone", time.Hour)
	malloryTok := p.token("mallory", "laptop", time.Hour)
	aliceREST := client.NewREST(p.HTTP(), aliceTok)
	bobREST := client.NewREST(p.HTTP(), bobTok)

	// A DM alice–bob and a group of bob and alice, each with a message;
	// mallory is in neither.
	dm := "dm:alice:bob"
	if _, err := aliceREST.Send(ctx, dm, "", "hi bob"); err != nil {
		t.Fatalf("seed dm: %v", err)
	}
	group, err := bobREST.CreateGroup(ctx, "bob and alice", []string{"alice"})
	if err != nil {
		t.Fatalf("create group: %v", err)
	}
	if _, err := bobREST.Send(ctx, group, "", "hi group"); err != nil {
		t.Fatalf("seed group: %v", err)
	}
	want := map[string]uint64{dm: headSeq(t, ctx, aliceREST, dm), group: headSeq(t, ctx, aliceREST, group)}
	// unchanged checks that nothing was stored (or, for a boundary row,
	// exactly what was accepted: stored[conv] more messages).
	unchanged := func(t *testing.T, stored map[string]uint64) {
		t.Helper()
		for conv := range want {
			want[conv] += stored[conv]
			if h := headSeq(t, ctx, aliceREST, conv); h != want[conv] {
				t.Fatalf("head of %s is %d after the row, want %d", conv, h, want[conv])
			}
		}
	}

	sendFrame := func(conv, id, text string) *parleyv1.ClientFrame {
		return &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Send{Send: &parleyv1.Send{
			ConversationId: conv, ClientMsgId: id, Content: &parleyv1.Send_Text{Text: text}}}}
	}
	historyFrame := func(conv string) *parleyv1.ClientFrame {
		return &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_History{History: &parleyv1.History{ConversationId: conv}}}
	}
	users := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("user%03d", i)
		}
		return out
	}

	// WebSocket rows: each on a fresh connection of the subprotocol.
	type wsRow struct {
		name   string
		token  string // default alice
		sub    string
		run    func(t *testing.T, c *rawConn)
		stored map[string]uint64 // accepted boundary rows
	}
	wsRows := []wsRow{
		{name: "text over max-message-bytes is too_large", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			c.wantError(c.write(sendFrame(dm, "big-1", strings.Repeat("x", maxText+1))), false, wire.CodeTooLarge)
		}},
		{name: "text over max-message-bytes is too_large on proto", sub: wire.SubprotocolProto, run: func(t *testing.T, c *rawConn) {
			c.wantError(c.write(sendFrame(group, "big-2", strings.Repeat("x", maxText+1))), false, wire.CodeTooLarge)
		}},
		{name: "multibyte text one byte over the limit is too_large", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			// 333 × "€" (3 bytes) + "ab" = 1001 bytes, 335 characters: the limit counts bytes.
			c.wantError(c.write(sendFrame(dm, "big-3", strings.Repeat("€", 333)+"ab")), false, wire.CodeTooLarge)
		}},
		{name: "text exactly at max-message-bytes is accepted", sub: wire.SubprotocolJSON, stored: map[string]uint64{dm: 1}, run: func(t *testing.T, c *rawConn) {
			text := strings.Repeat("€", 333) + "a" // 1000 bytes
			f := c.reply(c.write(sendFrame(dm, "at-limit-1", text)))
			if f.GetSendOk() == nil {
				t.Fatalf("send of exactly %d bytes: %v, want send_ok", maxText, f)
			}
			if m := historyAt(t, c, dm, f.GetSendOk().GetSeq()); m.GetText() != text {
				t.Fatalf("stored text is %d bytes, want the %d sent", len(m.GetText()), len(text))
			}
		}},
		{name: "text exactly at max-message-bytes is accepted on proto", sub: wire.SubprotocolProto, stored: map[string]uint64{group: 1}, run: func(t *testing.T, c *rawConn) {
			if f := c.reply(c.write(sendFrame(group, "at-limit-2", strings.Repeat("y", maxText)))); f.GetSendOk() == nil {
				t.Fatalf("send of exactly %d bytes: %v, want send_ok", maxText, f)
			}
		}},
		{name: "frame over the 64 KiB read limit gets too_large, then closes with 1009", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			b, _ := json.Marshal(map[string]any{"id": 1, "send": map[string]any{"conversation_id": dm, "client_msg_id": "huge",
				"text": strings.Repeat("z", wire.MaxFrameBytes)}})
			c.writeRaw(websocket.TextMessage, b)
			c.wantError(0, false, wire.CodeTooLarge) // id 0: the frame was never read
			code, err := c.closeCode(30 * time.Second)
			if code != websocket.CloseMessageTooBig {
				t.Fatalf("after a %d-byte frame: %v (close code %d), want close %d", len(b), err, code, websocket.CloseMessageTooBig)
			}
		}},
		{name: "frame of exactly 64 KiB is read", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			prefix := `{"id":1,"send":{"conversation_id":"dm:alice:bob","client_msg_id":"exact-frame","text":"`
			suffix := `"}}`
			b := []byte(prefix + strings.Repeat("z", wire.MaxFrameBytes-len(prefix)-len(suffix)) + suffix)
			c.writeRaw(websocket.TextMessage, b)
			c.wantError(1, false, wire.CodeTooLarge) // the text is over max-message-bytes; the frame is not over the read limit
			c.nextID = 1
			if f := c.reply(c.write(pingFrame())); f.GetPong() == nil {
				t.Fatalf("ping after a %d-byte frame: %v, want pong on the same connection", len(b), f)
			}
		}},
		{name: "unknown frame type in JSON is invalid", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			c.writeRaw(websocket.TextMessage, []byte(`{"id":1,"teleport":{"conversation_id":"dm:alice:bob"}}`))
			c.wantError(1, false, wire.CodeInvalid) // the id is read from the undecodable frame
		}},
		{name: "frame with no body in JSON is invalid", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			c.writeRaw(websocket.TextMessage, []byte(`{"id":1}`))
			c.wantError(1, false, wire.CodeInvalid)
		}},
		{name: "unknown field in a JSON send is invalid", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			c.writeRaw(websocket.TextMessage, []byte(`{"id":1,"send":{"conversation_id":"dm:alice:bob","client_msg_id":"u1","text":"hi","sender_id":"bob"}}`))
			// Answered with the frame's id, naming the field.
			if e := c.wantError(1, false, wire.CodeInvalid); !strings.Contains(e.GetMessage(), `unknown field "sender_id"`) || strings.Contains(e.GetMessage(), "proto:") {
				t.Fatalf("error %q, want it to name the unknown field", e.GetMessage())
			}
		}},
		{name: "proto frame with no known body is invalid", sub: wire.SubprotocolProto, run: func(t *testing.T, c *rawConn) {
			// id=1 (field 1, varint) and an unknown field 99 (varint 7).
			c.writeRaw(websocket.BinaryMessage, []byte{0x08, 0x01, 0x98, 0x06, 0x07})
			c.wantError(1, false, wire.CodeInvalid)
		}},
		{name: "more than 10 invalid frames in a row close with 4502", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			for range 11 {
				c.writeRaw(websocket.TextMessage, []byte(`not json`))
			}
			for i := range 11 {
				f, err := c.next(30 * time.Second)
				if err != nil {
					t.Fatalf("reading the answer to invalid frame %d: %v", i+1, err)
				}
				if f.GetError().GetCode() != wire.CodeInvalid {
					t.Fatalf("answer to invalid frame %d: %v, want error invalid", i+1, f)
				}
			}
			if code, err := c.closeCode(30 * time.Second); code != wire.ClosePolicyViolation {
				t.Fatalf("after 11 invalid frames: %v (close code %d), want close %d", err, code, wire.ClosePolicyViolation)
			}
		}},
		{name: "invalid JSON is invalid", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			c.writeRaw(websocket.TextMessage, []byte(`{"id":1,"send":{"conversation_id":"dm:alice:bob",`))
			c.wantError(1, false, wire.CodeInvalid)
		}},
		{name: "undecodable protobuf is invalid", sub: wire.SubprotocolProto, run: func(t *testing.T, c *rawConn) {
			c.writeRaw(websocket.BinaryMessage, []byte{0xff, 0xff, 0xff, 0xff, 0x0f, 0x01})
			c.wantError(0, true, wire.CodeInvalid)
		}},
		{name: "text frame on the proto subprotocol is invalid", sub: wire.SubprotocolProto, run: func(t *testing.T, c *rawConn) {
			b, _ := wire.Codec{Binary: false}.EncodeClient(&parleyv1.ClientFrame{Id: 1, Body: sendFrame(dm, "wrong-type-1", "hi").Body})
			c.writeRaw(websocket.TextMessage, b)
			c.wantError(0, true, wire.CodeInvalid)
		}},
		{name: "binary frame on the JSON subprotocol is invalid", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			b, _ := proto.Marshal(&parleyv1.ClientFrame{Id: 1, Body: sendFrame(dm, "wrong-type-2", "hi").Body})
			c.writeRaw(websocket.BinaryMessage, b)
			c.wantError(0, true, wire.CodeInvalid)
		}},
		{name: "missing conversation_id is invalid", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			c.wantError(c.write(sendFrame("", "no-conv", "hi")), false, wire.CodeInvalid)
		}},
		{name: "missing client_msg_id is invalid", sub: wire.SubprotocolProto, run: func(t *testing.T, c *rawConn) {
			c.wantError(c.write(sendFrame(dm, "", "hi")), false, wire.CodeInvalid)
		}},
		{name: "empty text is invalid", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			c.wantError(c.write(sendFrame(dm, "empty", "")), false, wire.CodeInvalid)
		}},
		{name: "white-space-only text is invalid", sub: wire.SubprotocolProto, run: func(t *testing.T, c *rawConn) {
			if e := c.wantError(c.write(sendFrame(dm, "blank", " \n\t\u3000 ")), false, wire.CodeInvalid); !strings.Contains(e.GetMessage(), "white space") {
				t.Errorf("message %q does not say white space", e.GetMessage())
			}
		}},
		{name: "text with white space around a character is accepted", sub: wire.SubprotocolJSON, stored: map[string]uint64{dm: 1}, run: func(t *testing.T, c *rawConn) {
			if f := c.reply(c.write(sendFrame(dm, "spaced", "  .  "))); f.GetSendOk() == nil {
				t.Fatalf("send of \"  .  \": %v, want send_ok", f)
			}
		}},
		{name: "client_msg_id over 64 bytes is invalid", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			c.wantError(c.write(sendFrame(dm, strings.Repeat("c", wire.MaxClientMsgIDBytes+1), "hi")), false, wire.CodeInvalid)
		}},
		{name: "client_msg_id of exactly 64 bytes is accepted", sub: wire.SubprotocolJSON, stored: map[string]uint64{dm: 1}, run: func(t *testing.T, c *rawConn) {
			if f := c.reply(c.write(sendFrame(dm, strings.Repeat("c", wire.MaxClientMsgIDBytes), "hi"))); f.GetSendOk() == nil {
				t.Fatalf("send with a 64-byte client_msg_id: %v, want send_ok", f)
			}
		}},
		{name: "send to a DM of others is not_member", token: malloryTok, sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			c.wantError(c.write(sendFrame(dm, "m1", "let me in")), false, wire.CodeNotMember)
		}},
		{name: "send to a group one is not in is not_member", token: malloryTok, sub: wire.SubprotocolProto, run: func(t *testing.T, c *rawConn) {
			c.wantError(c.write(sendFrame(group, "m2", "let me in")), false, wire.CodeNotMember)
		}},
		{name: "history of a DM of others is not_member", token: malloryTok, sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			c.wantError(c.write(historyFrame(dm)), false, wire.CodeNotMember)
		}},
		{name: "history of a group one is not in is not_member", token: malloryTok, sub: wire.SubprotocolProto, run: func(t *testing.T, c *rawConn) {
			c.wantError(c.write(historyFrame(group)), false, wire.CodeNotMember)
		}},
		{name: "malformed conversation id is invalid", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			for _, conv := range []string{"general", "g:abc", "g:", "dm:bob:alice", "dm:alice", "dm:alice:b b"} {
				c.wantError(c.write(sendFrame(conv, "bad-"+conv, "hi")), false, wire.CodeInvalid)
				c.wantError(c.write(historyFrame(conv)), false, wire.CodeInvalid)
			}
		}},
		{name: "DM with oneself is invalid", sub: wire.SubprotocolProto, run: func(t *testing.T, c *rawConn) {
			c.wantError(c.write(sendFrame("dm:alice:alice", "self", "hi me")), false, wire.CodeInvalid)
		}},
		{name: "history limit over 200 is invalid", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			c.wantError(c.write(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_History{History: &parleyv1.History{
				ConversationId: dm, Limit: wire.MaxPageSize + 1}}}), false, wire.CodeInvalid)
		}},
		{name: "presence_sub over the cap is invalid", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			c.wantError(c.write(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_PresenceSub{PresenceSub: &parleyv1.PresenceSub{
				UserIds: users(101)}}}), false, wire.CodeInvalid)
		}},
		{name: "presence_sub of exactly the cap is accepted", sub: wire.SubprotocolProto, run: func(t *testing.T, c *rawConn) {
			id := c.write(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_PresenceSub{PresenceSub: &parleyv1.PresenceSub{UserIds: users(100)}}})
			seen := map[string]bool{}
			c.until("100 presence replies", func(f *parleyv1.ServerFrame) bool {
				if f.GetId() == id {
					if e := f.GetError(); e != nil {
						t.Fatalf("presence_sub of 100 users: error %s: %s", e.GetCode(), e.GetMessage())
					}
					seen[f.GetPresence().GetUserId()] = true
				}
				return len(seen) == 100
			})
		}},
		{name: "presence_sub of a bad user id is invalid", sub: wire.SubprotocolJSON, run: func(t *testing.T, c *rawConn) {
			c.wantError(c.write(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_PresenceSub{PresenceSub: &parleyv1.PresenceSub{
				UserIds: []string{"bob", "not a user"}}}}), false, wire.CodeInvalid)
		}},
	}
	for _, row := range wsRows {
		t.Run("ws/"+row.name, func(t *testing.T) {
			tok := row.token
			if tok == "" {
				tok = aliceTok
			}
			c := openRaw(t, p, tok, row.sub)
			row.run(t, c)
			unchanged(t, row.stored)
		})
	}

	// Tokens, at the upgrade and on a REST endpoint.
	otherSecret := []byte(strings.Repeat("k", 32))
	tokenRows := []struct {
		name  string
		token string
		code  string
	}{
		{"expired token", mint(t, secret, "alice", "laptop", time.Now().Add(-time.Hour)), wire.CodeTokenExpired},
		{"token signed with another secret", mint(t, otherSecret, "alice", "laptop", time.Now().Add(time.Hour)), wire.CodeUnauthenticated},
		{"alg none token", mintNone(t, "alice"), wire.CodeUnauthenticated},
		{"HS384 with the right secret", mintWith(t, jwt.SigningMethodHS384, secret, func(*devClaims) {}), wire.CodeUnauthenticated},
		{"wrong issuer", mintWith(t, jwt.SigningMethodHS256, secret, func(c *devClaims) { c.Issuer = "someone-else" }), wire.CodeUnauthenticated},
		{"wrong audience", mintWith(t, jwt.SigningMethodHS256, secret, func(c *devClaims) { c.Audience = jwt.ClaimStrings{"other"} }), wire.CodeUnauthenticated},
		{"no exp", mintWith(t, jwt.SigningMethodHS256, secret, func(c *devClaims) { c.ExpiresAt = nil }), wire.CodeUnauthenticated},
		{"not yet valid", mintWith(t, jwt.SigningMethodHS256, secret, func(c *devClaims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour)) }), wire.CodeUnauthenticated},
		{"subject not a user id", mintWith(t, jwt.SigningMethodHS256, secret, func(c *devClaims) { c.Subject = "alice:bob" }), wire.CodeUnauthenticated},
		{"not a JWT", "not-a-jwt", wire.CodeUnauthenticated},
		{"no token", "", wire.CodeUnauthenticated},
	}
	for _, row := range tokenRows {
		t.Run("upgrade/"+row.name, func(t *testing.T) {
			ws, resp, err := dialRaw(p, row.token, []string{wire.SubprotocolProto, wire.SubprotocolJSON}, nil)
			if err == nil {
				ws.Close()
				t.Fatalf("upgrade succeeded, want HTTP 401 %s", row.code)
			}
			if resp == nil {
				t.Fatalf("upgrade: %v without a response, want HTTP 401 %s", err, row.code)
			}
			body := readErrBody(t, resp)
			if code, msg := errorBody(body); resp.StatusCode != http.StatusUnauthorized || code != row.code {
				t.Fatalf("upgrade: HTTP %d %q (%s), want 401 %s", resp.StatusCode, code, msg, row.code)
			}
			unchanged(t, nil)
		})
		t.Run("upgrade with access_token query/"+row.name, func(t *testing.T) {
			d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, Subprotocols: []string{wire.SubprotocolJSON}}
			ws, resp, err := d.Dial(p.WS()+"/v1/ws?access_token="+url.QueryEscape(row.token), nil)
			if err == nil {
				ws.Close()
				t.Fatalf("upgrade succeeded, want HTTP 401 %s", row.code)
			}
			if resp == nil {
				t.Fatalf("upgrade: %v without a response, want HTTP 401 %s", err, row.code)
			}
			if code, msg := errorBody(readErrBody(t, resp)); resp.StatusCode != http.StatusUnauthorized || code != row.code {
				t.Fatalf("upgrade: HTTP %d %q (%s), want 401 %s", resp.StatusCode, code, msg, row.code)
			}
			unchanged(t, nil)
		})
		t.Run("rest/"+row.name, func(t *testing.T) {
			for _, r := range []struct{ method, path, body string }{
				{http.MethodGet, "/v1/conversations", ""},
				{http.MethodPost, "/v1/messages", `{"conversation_id":"dm:alice:bob","client_msg_id":"tok-` + strings.ReplaceAll(row.name, " ", "-") + `","text":"sneaky"}`},
			} {
				var body []byte
				if r.body != "" {
					body = []byte(r.body)
				}
				status, b := restCall(t, r.method, p.HTTP()+r.path, row.token, body)
				if code, msg := errorBody(b); status != http.StatusUnauthorized || code != row.code {
					t.Fatalf("%s %s: HTTP %d %q (%s), want 401 %s", r.method, r.path, status, code, msg, row.code)
				}
			}
			unchanged(t, nil)
		})
	}
	t.Run("upgrade/no subprotocol offered", func(t *testing.T) {
		ws, resp, err := dialRaw(p, aliceTok, nil, nil)
		if err == nil {
			ws.Close()
			t.Fatal("upgrade without a subprotocol succeeded, want HTTP 400 invalid")
		}
		if resp == nil {
			t.Fatalf("upgrade: %v without a response", err)
		}
		if code, msg := errorBody(readErrBody(t, resp)); resp.StatusCode != http.StatusBadRequest || code != wire.CodeInvalid {
			t.Fatalf("upgrade: HTTP %d %q (%s), want 400 invalid", resp.StatusCode, code, msg)
		}
	})
	t.Run("upgrade/unknown subprotocol only", func(t *testing.T) {
		ws, resp, err := dialRaw(p, aliceTok, []string{"parley.v2.xml"}, nil)
		if err == nil {
			ws.Close()
			t.Fatal("upgrade with an unknown subprotocol succeeded, want HTTP 400 invalid")
		}
		if resp == nil {
			t.Fatalf("upgrade: %v without a response", err)
		}
		if code, msg := errorBody(readErrBody(t, resp)); resp.StatusCode != http.StatusBadRequest || code != wire.CodeInvalid {
			t.Fatalf("upgrade: HTTP %d %q (%s), want 400 invalid", resp.StatusCode, code, msg)
		}
	})

	// REST bad input.
	msg := func(fields map[string]any) string {
		b, _ := json.Marshal(fields)
		return string(b)
	}
	restRows := []struct {
		name         string
		token        string // default alice
		method, path string
		body         string
		status       int
		code         string // "" for success
		stored       map[string]uint64
	}{
		{name: "invalid JSON body", method: "POST", path: "/v1/messages", body: `{"conversation_id":"dm:alice:bob",`,
			status: 400, code: wire.CodeInvalid},
		{name: "empty body", method: "POST", path: "/v1/messages", body: ``, status: 400, code: wire.CodeInvalid},
		{name: "unknown field", method: "POST", path: "/v1/messages",
			body: msg(map[string]any{"conversation_id": dm, "client_msg_id": "r-unknown", "text": "hi", "sender_id": "bob"}), status: 400, code: wire.CodeInvalid},
		{name: "missing conversation_id", method: "POST", path: "/v1/messages",
			body: msg(map[string]any{"client_msg_id": "r-noconv", "text": "hi"}), status: 400, code: wire.CodeInvalid},
		{name: "missing client_msg_id", method: "POST", path: "/v1/messages",
			body: msg(map[string]any{"conversation_id": dm, "text": "hi"}), status: 400, code: wire.CodeInvalid},
		{name: "client_msg_id over 64 bytes", method: "POST", path: "/v1/messages",
			body: msg(map[string]any{"conversation_id": dm, "client_msg_id": strings.Repeat("r", 65), "text": "hi"}), status: 400, code: wire.CodeInvalid},
		{name: "text over max-message-bytes", method: "POST", path: "/v1/messages",
			body: msg(map[string]any{"conversation_id": dm, "client_msg_id": "r-big", "text": strings.Repeat("x", maxText+1)}), status: 413, code: wire.CodeTooLarge},
		{name: "text exactly at max-message-bytes", method: "POST", path: "/v1/messages",
			body: msg(map[string]any{"conversation_id": dm, "client_msg_id": "r-at-limit", "text": strings.Repeat("x", maxText)}), status: 200, stored: map[string]uint64{dm: 1}},
		{name: "body over 64 KiB", method: "POST", path: "/v1/messages",
			body: msg(map[string]any{"conversation_id": dm, "client_msg_id": "r-huge", "text": strings.Repeat("x", 70_000)}), status: 413, code: wire.CodeTooLarge},
		{name: "malformed conversation id", method: "POST", path: "/v1/messages",
			body: msg(map[string]any{"conversation_id": "g:abc", "client_msg_id": "r-badconv", "text": "hi"}), status: 400, code: wire.CodeInvalid},
		{name: "DM with oneself", method: "POST", path: "/v1/messages",
			body: msg(map[string]any{"conversation_id": "dm:alice:alice", "client_msg_id": "r-self", "text": "hi"}), status: 400, code: wire.CodeInvalid},
		{name: "send to a DM of others", token: malloryTok, method: "POST", path: "/v1/messages",
			body: msg(map[string]any{"conversation_id": dm, "client_msg_id": "r-mallory", "text": "hi"}), status: 403, code: wire.CodeNotMember},
		{name: "history of a group one is not in", token: malloryTok, method: "GET", path: "/v1/history/" + url.PathEscape(group),
			status: 403, code: wire.CodeNotMember},
		{name: "history limit over 200", method: "GET", path: "/v1/history/" + url.PathEscape(dm) + "?limit=201", status: 400, code: wire.CodeInvalid},
		{name: "history limit of exactly 200", method: "GET", path: "/v1/history/" + url.PathEscape(dm) + "?limit=200", status: 200},
		{name: "history before not a number", method: "GET", path: "/v1/history/" + url.PathEscape(dm) + "?before=last", status: 400, code: wire.CodeInvalid},
		{name: "history with both before and after", method: "GET", path: "/v1/history/" + url.PathEscape(dm) + "?before=3&after=1", status: 400, code: wire.CodeInvalid},
		{name: "history of a malformed conversation id", method: "GET", path: "/v1/history/general", status: 400, code: wire.CodeInvalid},
		{name: "add members without user_ids", method: "POST", path: "/v1/conversations/" + url.PathEscape(group) + "/members",
			body: `{"user_ids":[]}`, status: 400, code: wire.CodeInvalid},
		{name: "add a bad user id", method: "POST", path: "/v1/conversations/" + url.PathEscape(group) + "/members",
			body: `{"user_ids":["carol","dm:x"]}`, status: 400, code: wire.CodeInvalid},
		{name: "add members to a group one is not in", token: malloryTok, method: "POST", path: "/v1/conversations/" + url.PathEscape(group) + "/members",
			body: `{"user_ids":["mallory"]}`, status: 403, code: wire.CodeNotMember},
		{name: "create a group with a bad member id", method: "POST", path: "/v1/conversations",
			body: `{"title":"x","members":["bob","no spaces"]}`, status: 400, code: wire.CodeInvalid},
		{name: "create a group with a newline in the title", method: "POST", path: "/v1/conversations",
			body: msg(map[string]any{"title": "two\nlines", "members": []string{"bob"}}), status: 400, code: wire.CodeInvalid},
		{name: "create a group with NUL in the title", method: "POST", path: "/v1/conversations",
			body: msg(map[string]any{"title": "nul\x00", "members": []string{"bob"}}), status: 400, code: wire.CodeInvalid},
		{name: "create a group with ESC in the title", method: "POST", path: "/v1/conversations",
			body: msg(map[string]any{"title": "\x1b[31mred", "members": []string{"bob"}}), status: 400, code: wire.CodeInvalid},
		{name: "create a group with a C1 control in the title", method: "POST", path: "/v1/conversations",
			body: msg(map[string]any{"title": "csi\u009b", "members": []string{"bob"}}), status: 400, code: wire.CodeInvalid},
		{name: "create a group with a bidi override in the title", method: "POST", path: "/v1/conversations",
			body: msg(map[string]any{"title": "evil\u202egpj.exe", "members": []string{"bob"}}), status: 400, code: wire.CodeInvalid},
		{name: "create a group with a bidi isolate in the title", method: "POST", path: "/v1/conversations",
			body: msg(map[string]any{"title": "\u2067x\u2069", "members": []string{"bob"}}), status: 400, code: wire.CodeInvalid},
		{name: "text with NUL", method: "POST", path: "/v1/messages",
			body: msg(map[string]any{"conversation_id": dm, "client_msg_id": "r-nul", "text": "a\x00b"}), status: 400, code: wire.CodeInvalid},
		{name: "text with ESC", method: "POST", path: "/v1/messages",
			body: msg(map[string]any{"conversation_id": dm, "client_msg_id": "r-esc", "text": "\x1b[2J"}), status: 400, code: wire.CodeInvalid},
		{name: "text with newline, tab and CR", method: "POST", path: "/v1/messages",
			body: msg(map[string]any{"conversation_id": dm, "client_msg_id": "r-lines", "text": "a\nb\tc\r\n"}), status: 200, stored: map[string]uint64{dm: 1}},
		{name: "read without seq", method: "POST", path: "/v1/conversations/" + url.PathEscape(dm) + "/read",
			body: `{}`, status: 400, code: wire.CodeInvalid},
		{name: "receipts without seq", method: "GET", path: "/v1/conversations/" + url.PathEscape(dm) + "/receipts",
			status: 400, code: wire.CodeInvalid},
		{name: "presence of over 100 users", method: "GET", path: "/v1/presence?user=" + strings.Join(users(101), "&user="), status: 400, code: wire.CodeInvalid},
		{name: "presence without users", method: "GET", path: "/v1/presence", status: 400, code: wire.CodeInvalid},
	}
	for _, row := range restRows {
		t.Run("rest/"+row.name, func(t *testing.T) {
			tok := row.token
			if tok == "" {
				tok = aliceTok
			}
			var body []byte
			if row.method == http.MethodPost {
				body = []byte(row.body)
			}
			status, b := restCall(t, row.method, p.HTTP()+row.path, tok, body)
			code, message := errorBody(b)
			if status != row.status || code != row.code {
				t.Fatalf("%s %s: HTTP %d code %q (%s), want %d %q", row.method, row.path, status, code, message, row.status, row.code)
			}
			unchanged(t, row.stored)
		})
	}
}

// TestBadInputRateLimited sends more than the per-user rate allows over
// one connection: the excess is refused with rate_limited and a positive
// retry_after_ms, and only the accepted sends are stored.
func TestBadInputRateLimited(t *testing.T) {
	const burst, sends = 5, 10
	p := startServer(t, "", "--send-rate", "5", "--send-burst", fmt.Sprint(burst))
	ctx := ctxT(t, 2*time.Minute)
	aliceTok := p.token("alice", "laptop", time.Hour)
	aliceREST := client.NewREST(p.HTTP(), aliceTok)
	dm := "dm:alice:bob"
	// bob opens the DM, so alice's budget (shared by REST and WebSocket) is full.
	bobREST := client.NewREST(p.HTTP(), p.token("bob", "laptop", time.Hour))
	if _, err := bobREST.Send(ctx, dm, "", "first"); err != nil {
		t.Fatalf("seed dm: %v", err)
	}
	before := headSeq(t, ctx, aliceREST, dm)

	c := openRaw(t, p, aliceTok, wire.SubprotocolProto)
	ids := make([]uint64, sends)
	for i := range ids { // all written before any reply is read
		ids[i] = c.sendText(dm, fmt.Sprintf("flood-%d", i), fmt.Sprintf("message %d", i))
	}
	replies := map[uint64]*parleyv1.ServerFrame{}
	c.until(fmt.Sprintf("%d replies", sends), func(f *parleyv1.ServerFrame) bool {
		if f.GetSendOk() != nil || f.GetError() != nil {
			replies[f.GetId()] = f
		}
		return len(replies) == sends
	})
	var ok, limited uint64
	for _, id := range ids {
		f := replies[id]
		switch e := f.GetError(); {
		case f.GetSendOk() != nil:
			ok++
		case e.GetCode() == wire.CodeRateLimited:
			limited++
			if e.GetRetryAfterMs() == 0 {
				t.Errorf("request %d: rate_limited without retry_after_ms", id)
			}
		default:
			t.Errorf("request %d: %v, want send_ok or rate_limited", id, f)
		}
	}
	if limited == 0 || ok < burst {
		t.Fatalf("%d sends at once with burst %d: %d accepted, %d rate_limited; want at least %d accepted and some rate_limited", sends, burst, ok, limited, burst)
	}
	if h := headSeq(t, ctx, aliceREST, dm); h != before+ok {
		t.Fatalf("head is %d after %d accepted sends from %d, want %d: refused sends must not be stored", h, ok, before, before+ok)
	}
}

// historyAt returns message seq of conv read over c's connection.
func historyAt(t *testing.T, c *rawConn, conv string, seq uint64) *parleyv1.Message {
	t.Helper()
	f := c.reply(c.write(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_History{History: &parleyv1.History{
		ConversationId: conv, Before: proto.Uint64(seq + 1), Limit: 1}}}))
	ms := f.GetHistoryResult().GetMessages()
	if len(ms) != 1 || ms[0].GetSeq() != seq {
		t.Fatalf("history at seq %d of %s: %v", seq, conv, f)
	}
	return ms[0]
}

func readErrBody(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	if resp.Body == nil {
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	return b
}
