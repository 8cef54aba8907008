package chat

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestMentions(t *testing.T) {
	members := map[string]bool{"bob": true, "carol": true, "d.e": true, "x@y.com": true}
	isMember := func(u string) bool { return members[u] }
	for _, tc := range []struct {
		text string
		want []string
	}{
		{"@bob hi", []string{"bob"}},
		{"hi @bob, @carol and @bob again", []string{"bob", "carol"}},
		{"thanks @carol.", []string{"carol"}},
		{"ping @d.e.", []string{"d.e"}},
		{"@nobody here", nil},               // not a member: plain text
		{"mail bob@example.com", nil},       // no space before the @
		{"@", nil},                          // nothing after it
		{"@@bob", nil},                      // "@bob" is not a member
		{"line\n@carol", []string{"carol"}}, // after any white space
		{"\u00a0@bob", []string{"bob"}},     // a non-breaking space too
		{"write to @x@y.com", []string{"x@y.com"}},
		{"é@bob", nil},
	} {
		if got := Mentions(tc.text, isMember); !slices.Equal(got, tc.want) {
			t.Errorf("Mentions(%q) = %q, want %q", tc.text, got, tc.want)
		}
	}
	// At most MaxMentions, each member once.
	var b strings.Builder
	many := map[string]bool{}
	for i := range MaxMentions + 10 {
		u := fmt.Sprintf("u%d", i)
		many[u] = true
		fmt.Fprintf(&b, "@%s @%s ", u, u)
	}
	if got := Mentions(b.String(), func(u string) bool { return many[u] }); len(got) != MaxMentions || got[0] != "u0" || got[MaxMentions-1] != fmt.Sprintf("u%d", MaxMentions-1) {
		t.Errorf("%d mentions (%v…), want the first %d", len(got), got[:min(3, len(got))], MaxMentions)
	}
}

// TestMentionsStoredAndCounted (issue 13): the sequencer stores the members a
// text mentions; the inbox counts unread messages mentioning the user apart
// from unread; reading clears both; a delete clears the mentions.
func TestMentionsStoredAndCounted(t *testing.T) {
	e := newEnv(t, nil)
	e.startSequencer(t, "chat-0", 0)
	for _, u := range []string{"alice", "bob", "carol"} {
		e.online(t, u, 0)
	}
	conv := e.createGroup(t, "alice", "crew", "bob", "carol")
	first := e.mustSend(t, "alice", conv, "a1", "hey @bob and @carol. @dave is not here, mail x@y.z").GetSeq()
	if got := e.message(t, conv, first).GetMentions(); !slices.Equal(got, []string{"bob", "carol"}) {
		t.Fatalf("stored mentions %q, want [bob carol]", got)
	}
	e.mustSend(t, "alice", conv, "a2", "no mention")
	last := e.mustSend(t, "carol", conv, "c1", "@bob?").GetSeq()
	state := func(user string) (unread, mentions uint64) {
		t.Helper()
		states, err := e.q.Inbox(e.ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range states {
			if s.GetConversationId() == conv {
				return s.GetUnread(), s.GetMentions()
			}
		}
		t.Fatalf("%s's inbox has no %s", user, conv)
		return 0, 0
	}
	if u, m := state("bob"); u != 3 || m != 2 {
		t.Errorf("bob: unread %d mentions %d, want 3 and 2", u, m)
	}
	// An edit that drops @bob drops the mention; one that adds it adds it.
	if _, err := e.call(editRec("carol", conv, last, "anyone?")); err != nil {
		t.Fatal(err)
	}
	if u, m := state("bob"); u != 3 || m != 1 {
		t.Errorf("bob after carol's edit: unread %d mentions %d, want 3 and 1", u, m)
	}
	if got := e.message(t, conv, last).GetMentions(); len(got) != 0 {
		t.Errorf("edited message keeps mentions %q", got)
	}
	if _, err := e.call(editRec("carol", conv, last, "anyone? @bob")); err != nil {
		t.Fatal(err)
	}
	if u, m := state("bob"); u != 3 || m != 2 {
		t.Errorf("bob after carol's second edit: unread %d mentions %d, want 3 and 2", u, m)
	}
	if u, m := state("carol"); u != 2 || m != 1 {
		t.Errorf("carol: unread %d mentions %d, want 2 and 1 (her own message is not unread)", u, m)
	}
	if _, err := e.call(readRec("bob", conv, last)); err != nil {
		t.Fatal(err)
	}
	if u, m := state("bob"); u != 0 || m != 0 {
		t.Errorf("bob after reading: unread %d mentions %d, want 0 and 0", u, m)
	}
	if _, err := e.call(deleteRec("alice", conv, first)); err != nil {
		t.Fatal(err)
	}
	if m := e.message(t, conv, first); len(m.GetMentions()) != 0 || !m.GetDeleted() {
		t.Errorf("deleted message %v still lists mentions", m)
	}
	if u, m := state("carol"); u != 1 || m != 0 {
		t.Errorf("carol after the delete: unread %d mentions %d, want 1 and 0", u, m)
	}
}
