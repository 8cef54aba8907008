package storetest

import (
	"errors"
	"slices"
	"testing"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
)

// testEffects: the store persists the effects it is given and derives none
// from the events (issue 15: the rules are the chat role's). Membership
// events appended without effects change no member and no inbox; effects
// beside a text message apply all the same; a written row replaces the
// one before, joined_seq and role as given.
func testEffects(t *testing.T, s store.MessageStore) {
	const (
		created = parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED
		added   = parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED
	)
	conv := newConv()
	alice, bob := newUser("alice"), newUser("bob")
	createConv(t, s, conv, store.KindGroup, alice)

	mustAppend(t, s, conv, eventMsg(conv, 1, created, alice, alice, bob), eventMsg(conv, 2, added, alice, bob))
	if got := members(t, s, conv); len(got) != 0 {
		t.Errorf("membership events without effects: Members = %v, want none", got)
	}
	for _, u := range []string{alice, bob} {
		if inboxHas(t, s, u, conv) {
			t.Errorf("membership events without effects: Inbox(%s) has %s", u, conv)
		}
	}

	mustAppendWith(t, s, conv, list(textMsg(conv, 3)), join(3, bob, store.RoleAdmin))
	bobM := store.Member{UserID: bob, JoinedSeq: 3, Role: store.RoleAdmin}
	if got, want := members(t, s, conv), []store.Member{bobM}; !slices.Equal(got, want) {
		t.Errorf("an effect beside a text message: Members = %v, want %v", got, want)
	}
	if !inboxHas(t, s, bob, conv) {
		t.Errorf("Inbox(bob) lacks %s after a written member row", conv)
	}

	// A row written again replaces the one before; a removal in the same
	// append before it does not stop it.
	bobM = store.Member{UserID: bob, JoinedSeq: 2, Role: store.RoleOwner}
	mustAppendWith(t, s, conv, list(textMsg(conv, 4), textMsg(conv, 5)), store.RemoveMember(4, bob), store.PutMember(5, bobM))
	if m, ok, err := s.Member(ctxFor(t), conv, bob); err != nil || !ok || m != bobM {
		t.Errorf("Member(bob) = %v, %v, %v; want %v", m, ok, err, bobM)
	}
}

// testEffectsInvalid: effects that do not fit their append are refused
// with an error that is not ErrSeqTaken, and nothing of the append is
// stored: not its messages, not its other effects.
func testEffectsInvalid(t *testing.T, s store.MessageStore) {
	conv := newConv()
	alice := newUser("alice")
	createConv(t, s, conv, store.KindGroup, alice)
	mustAppend(t, s, conv, textMsg(conv, 1))
	ok := join(2, alice, store.RoleMember)
	tests := []struct {
		name    string
		effects []store.Effect
	}{
		{"SeqBelowAppend", []store.Effect{ok, join(1, alice, store.RoleMember)}},
		{"SeqAboveAppend", []store.Effect{ok, join(4, alice, store.RoleMember)}},
		{"SeqsDecrease", []store.Effect{join(3, alice, store.RoleMember), ok}},
		{"EmptyUser", []store.Effect{ok, store.RemoveMember(3, "")}},
		{"NoRole", []store.Effect{ok, join(3, alice, "")}},
		{"NoJoinedSeq", []store.Effect{ok, store.PutMember(3, store.Member{UserID: alice, Role: store.RoleMember})}},
		{"JoinedAfterSeq", []store.Effect{ok, store.PutMember(2, store.Member{UserID: alice, JoinedSeq: 3, Role: store.RoleMember})}},
		{"UnknownKind", []store.Effect{ok, {Kind: 99, Seq: 3, Member: store.Member{UserID: alice}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Append(ctxFor(t), conv, textMsgs(conv, 2, 3), tc.effects...)
			if err == nil || errors.Is(err, store.ErrSeqTaken) {
				t.Fatalf("Append error = %v, want a non-ErrSeqTaken error", err)
			}
			if h := head(t, s, conv); h != 1 {
				t.Errorf("Head = %d after a refused append, want 1", h)
			}
			if got := members(t, s, conv); len(got) != 0 {
				t.Errorf("Members = %v after a refused append, want none", got)
			}
		})
	}
}
