package ingress

import (
	"errors"
	"testing"
	"time"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// code returns err's wire code, "" for nil, or "other: …" for an error that
// is not a *wire.Error.
func code(err error) string {
	var we *wire.Error
	if errors.As(err, &we) {
		return we.Code
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return ""
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func origin(user string) *parleyv1.Origin {
	return &parleyv1.Origin{UserId: user, DeviceId: "d1", SessionId: "sess-" + user}
}

func sendRec(user, conv, cmid, text string) *parleyv1.IngressRecord {
	return &parleyv1.IngressRecord{Origin: origin(user), ConversationId: conv, Op: &parleyv1.IngressRecord_Send{
		Send: &parleyv1.Send{ConversationId: conv, ClientMsgId: cmid, Content: &parleyv1.Send_Text{Text: text}}}}
}
