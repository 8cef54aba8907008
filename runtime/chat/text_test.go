package chat

import (
	"fmt"
	"testing"

	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// TestTextRulesApplied: the chat role refuses group titles and message
// texts that the rules refuse, and stores nothing for them.
func TestTextRulesApplied(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	for _, title := range []string{"a\nb", "nul\x00", "esc\x1b", "c1\u0090", "\u202Eevil", "\u2068x"} {
		_, err := e.call(&parleyv1.IngressRecord{Origin: origin("alice"), Op: &parleyv1.IngressRecord_CreateGroup{
			CreateGroup: &parleyv1.CreateGroup{Title: title, Members: []string{"bob"}}}})
		if code(err) != wire.CodeInvalid {
			t.Errorf("create group titled %q: %v, want invalid", title, err)
		}
	}
	if ids, err := e.st.Inbox(e.ctx, "alice"); err != nil || len(ids) != 0 {
		t.Fatalf("refused groups were created: %v %v", ids, err)
	}
	dm := rules.DMID("alice", "bob")
	for i, text := range []string{"nul\x00", "esc\x1b[2J", "del\x7f", "c1\u009b"} {
		if _, err := e.send("alice", dm, fmt.Sprint("bad", i), text); code(err) != wire.CodeInvalid {
			t.Errorf("send %q: %v, want invalid", text, err)
		}
	}
	ok := e.mustSend(t, "alice", dm, "good", "line one\nline\ttwo\r\n")
	m, err := e.st.Message(e.ctx, dm, ok.GetSeq())
	if err != nil || m.GetText() != "line one\nline\ttwo\r\n" {
		t.Fatalf("stored %v, %v", m, err)
	}
}
