package chat

import "github.com/parleychat/parley/runtime/chat/rules"

// dmPeer returns the other user of DM conv, or "" when user is not in it.
func dmPeer(conv, user string) string {
	a, b, ok := rules.ParseDM(conv)
	switch {
	case !ok:
		return ""
	case user == a:
		return b
	case user == b:
		return a
	}
	return ""
}
