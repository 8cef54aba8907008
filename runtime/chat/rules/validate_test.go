package rules

import (
	"strings"
	"testing"
	"time"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// TestMuteAndBlockRequestBounds: a mute's end is at most the year 9999 (the
// largest int64 was accepted and overflowed date conversions), an unblock of
// oneself says unblock.
func TestMuteAndBlockRequestBounds(t *testing.T) {
	now := time.Now().UnixMilli()
	conv := DMID("alice", "bob")
	if err := ValidateMute(&parleyv1.Mute{ConversationId: conv, Until: MaxMuteUntilMs}, now); err != nil {
		t.Errorf("a mute to the end of 9999: %v", err)
	}
	if err := ValidateMute(&parleyv1.Mute{ConversationId: conv, Until: MaxMuteUntilMs + 1}, now); code(err) != wire.CodeInvalid {
		t.Errorf("a mute past 9999: %v, want invalid", err)
	}
	if err := ValidateMute(&parleyv1.Mute{ConversationId: conv, Until: 1<<63 - 1}, now); code(err) != wire.CodeInvalid {
		t.Errorf("a mute to the largest int64: %v, want invalid", err)
	}
	err := ValidateBlock("bob", &parleyv1.Block{UserId: "bob", Remove: true})
	if code(err) != wire.CodeInvalid || !strings.Contains(err.Error(), "unblock yourself") {
		t.Errorf("bob unblocking bob: %v, want invalid saying unblock", err)
	}
}
