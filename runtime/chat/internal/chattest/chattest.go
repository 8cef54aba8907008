// Package chattest holds the small helpers the tests of runtime/chat and of
// its sub-packages (ingress, rules) share: reading an error's wire code,
// polling for a condition, and building ingress records.
package chattest

import (
	"errors"
	"testing"
	"time"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// Code returns err's wire code, "" for nil, or "other: …" for an error
// that is not a *wire.Error.
func Code(err error) string {
	var we *wire.Error
	if errors.As(err, &we) {
		return we.Code
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return ""
}

// WaitFor polls cond every 2 ms until it holds, failing tb after 10 s.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Origin is the origin of a request by user from device "d1", session
// "sess-<user>".
func Origin(user string) *parleyv1.Origin {
	return &parleyv1.Origin{UserId: user, DeviceId: "d1", SessionId: "sess-" + user}
}

// SendRec is the ingress record of user's send of text to conv with
// client_msg_id cmid.
func SendRec(user, conv, cmid, text string) *parleyv1.IngressRecord {
	return &parleyv1.IngressRecord{Origin: Origin(user), ConversationId: conv, Op: &parleyv1.IngressRecord_Send{
		Send: &parleyv1.Send{ConversationId: conv, ClientMsgId: cmid, Content: &parleyv1.Send_Text{Text: text}}}}
}
