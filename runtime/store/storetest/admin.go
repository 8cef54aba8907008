package storetest

import (
	"slices"
	"testing"
	"time"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
)

// roleMsg is a ROLE_CHANGED event at seq giving user role.
func roleMsg(conv string, seq uint64, by, user, role string) *parleyv1.Message {
	m := eventMsg(conv, seq, parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED, by, user)
	m.Text = role
	return m
}

// renameMsg is a RENAMED event at seq setting the title.
func renameMsg(conv string, seq uint64, by, title string) *parleyv1.Message {
	m := eventMsg(conv, seq, parleyv1.MessageKind_MESSAGE_KIND_RENAMED, by)
	m.Text = title
	return m
}

// testRoles: ROLE_CHANGED sets a member's stored role and keeps its
// joined_seq; it leaves a non-member a non-member; a removed and re-added
// admin is a member again; OWNER_CHANGED in the same append as the
// owner's removal makes its member the owner. The effects are the ones the
// chat role gives these events (runtime/chat/effects.go: none for the
// role of a non-member, the member's joined_seq kept); the store persists
// them as given.
func testRoles(t *testing.T, s store.MessageStore) {
	const (
		created = parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED
		added   = parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED
		removed = parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED
	)
	conv := newConv()
	alice, bob, carol, dave := newUser("alice"), newUser("bob"), newUser("carol"), newUser("dave")
	createConv(t, s, conv, store.KindGroup, alice)
	role := func(seq uint64, user string, joined uint64, role string) store.Effect {
		return store.PutMember(seq, store.Member{UserID: user, JoinedSeq: joined, Role: role})
	}
	mustAppendWith(t, s, conv, list(eventMsg(conv, 1, created, alice, alice, bob), eventMsg(conv, 2, added, alice, carol)),
		join(1, alice, store.RoleOwner), join(1, bob, store.RoleMember), join(2, carol, store.RoleMember))

	mustAppendWith(t, s, conv, list(roleMsg(conv, 3, alice, bob, store.RoleAdmin), roleMsg(conv, 4, alice, dave, store.RoleAdmin)),
		role(3, bob, 1, store.RoleAdmin))
	want := sortedMembers(
		store.Member{UserID: alice, JoinedSeq: 1, Role: store.RoleOwner},
		store.Member{UserID: bob, JoinedSeq: 1, Role: store.RoleAdmin},
		store.Member{UserID: carol, JoinedSeq: 2, Role: store.RoleMember},
	)
	if got := members(t, s, conv); !slices.Equal(got, want) {
		t.Fatalf("after making bob (and dave, not a member) admins: Members = %v, want %v", got, want)
	}
	if m, ok, err := s.Member(ctxFor(t), conv, dave); err != nil || ok {
		t.Errorf("Member(dave), made admin while not a member = %v, %v, %v; want not a member", m, ok, err)
	}

	// Demoted, then promoted and demoted in one append: the last wins.
	mustAppendWith(t, s, conv, list(roleMsg(conv, 5, alice, carol, store.RoleAdmin), roleMsg(conv, 6, alice, carol, store.RoleMember)),
		role(5, carol, 2, store.RoleAdmin), role(6, carol, 2, store.RoleMember))
	if m, _, err := s.Member(ctxFor(t), conv, carol); err != nil || m.Role != store.RoleMember || m.JoinedSeq != 2 {
		t.Errorf("Member(carol) after admin then member = %v, %v; want member joined at 2", m, err)
	}

	// A removed admin comes back as a member.
	mustAppendWith(t, s, conv, list(eventMsg(conv, 7, removed, alice, bob), eventMsg(conv, 8, added, alice, bob)),
		store.RemoveMember(7, bob), join(8, bob, store.RoleMember))
	if m, _, err := s.Member(ctxFor(t), conv, bob); err != nil || m.Role != store.RoleMember || m.JoinedSeq != 8 {
		t.Errorf("Member(bob) removed and re-added = %v, %v; want member joined at 8", m, err)
	}

	// The owner leaves; the transfer comes in the same append.
	mustAppendWith(t, s, conv, list(eventMsg(conv, 9, removed, alice, alice),
		eventMsg(conv, 10, parleyv1.MessageKind_MESSAGE_KIND_OWNER_CHANGED, alice, carol)),
		store.RemoveMember(9, alice), role(10, carol, 2, store.RoleOwner))
	want = sortedMembers(
		store.Member{UserID: bob, JoinedSeq: 8, Role: store.RoleMember},
		store.Member{UserID: carol, JoinedSeq: 2, Role: store.RoleOwner},
	)
	if got := members(t, s, conv); !slices.Equal(got, want) {
		t.Fatalf("after alice left and carol took over: Members = %v, want %v", got, want)
	}
	if !inboxHas(t, s, alice, conv) {
		t.Errorf("Inbox(alice) lost %s when she left", conv)
	}
	// The events are stored as they came.
	if m := message(t, s, conv, 3); m.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED || m.GetText() != store.RoleAdmin ||
		!slices.Equal(m.GetMembers(), []string{bob}) {
		t.Errorf("ROLE_CHANGED read back as %v", m)
	}
}

// testRename: RENAMED sets the conversation's title and nothing else of
// it; the newest rename wins, within one append too.
func testRename(t *testing.T, s store.MessageStore) {
	conv := newConv()
	alice := newUser("alice")
	c := store.Conversation{ID: conv, Kind: store.KindGroup, Title: "first", HomeRegion: "eu-west", CreatedBy: alice,
		CreatedAt: time.UnixMilli(1_712_345_678_901).UTC()}
	if err := s.CreateConversation(ctxFor(t), c); err != nil {
		t.Fatal(err)
	}
	mustAppendWith(t, s, conv, list(eventMsg(conv, 1, parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED, alice, alice)),
		join(1, alice, store.RoleOwner))
	check := func(title string) {
		t.Helper()
		got, err := s.Conversation(ctxFor(t), conv)
		if err != nil {
			t.Fatal(err)
		}
		want := c
		want.Title = title
		if !got.CreatedAt.Equal(want.CreatedAt) {
			t.Errorf("CreatedAt = %v, want %v", got.CreatedAt, want.CreatedAt)
		}
		got.CreatedAt = want.CreatedAt
		if got != want {
			t.Errorf("Conversation = %+v, want %+v", got, want)
		}
	}
	mustAppendWith(t, s, conv, list(renameMsg(conv, 2, alice, "second")), store.Rename(2, "second"))
	check("second")
	mustAppendWith(t, s, conv, list(textMsg(conv, 3), renameMsg(conv, 4, alice, "third"), renameMsg(conv, 5, alice, "fourth 🎉")),
		store.Rename(4, "third"), store.Rename(5, "fourth 🎉"))
	check("fourth 🎉")
	if m := message(t, s, conv, 4); m.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_RENAMED || m.GetText() != "third" {
		t.Errorf("RENAMED read back as %v", m)
	}
}
