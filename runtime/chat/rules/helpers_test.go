package rules

import "github.com/parleychat/parley/runtime/chat/internal/chattest"

// The helpers every chat test package shares (internal/chattest).
var (
	code = chattest.Code
)
