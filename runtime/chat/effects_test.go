package chat

import (
	"math/rand/v2"
	"slices"
	"testing"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
)

// TestEffects: the membership rules the store backends applied before
// issue 15, now the sequencer's (effects); the store conformance suite
// checks that both backends persist the effects as given.
func TestEffects(t *testing.T) {
	const (
		created = parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED
		added   = parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED
		removed = parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED
		role    = parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED
		owner   = parleyv1.MessageKind_MESSAGE_KIND_OWNER_CHANGED
		renamed = parleyv1.MessageKind_MESSAGE_KIND_RENAMED
		text    = parleyv1.MessageKind_MESSAGE_KIND_TEXT
	)
	ev := func(seq uint64, kind parleyv1.MessageKind, text string, users ...string) *parleyv1.Message {
		return &parleyv1.Message{ConversationId: "g:1", Seq: seq, SenderId: "alice", Kind: kind, Text: text, Members: users}
	}
	mem := func(user string, joined uint64, role string) store.Member {
		return store.Member{UserID: user, JoinedSeq: joined, Role: role}
	}
	join := func(seq uint64, user, role string) store.Effect { return store.PutMember(seq, mem(user, seq, role)) }
	group := store.Conversation{ID: "g:1", Kind: store.KindGroup, CreatedBy: "alice"}
	dm := store.Conversation{ID: "dm:a:b", Kind: store.KindDM, CreatedBy: "a"}
	// A group with alice the owner (joined 1), bob an admin (1), carol a
	// member (2).
	members := map[string]store.Member{
		"alice": mem("alice", 1, store.RoleOwner),
		"bob":   mem("bob", 1, store.RoleAdmin),
		"carol": mem("carol", 2, store.RoleMember),
	}
	tests := []struct {
		name    string
		conv    store.Conversation
		members map[string]store.Member
		evs     []*parleyv1.Message
		want    []store.Effect
		// wantMembers, when set, is the members after state.apply(want).
		wantMembers []store.Member
	}{
		{
			name: "GroupCreatorBecomesOwner",
			conv: group, evs: []*parleyv1.Message{ev(1, created, "t", "alice", "bob")},
			want: []store.Effect{join(1, "alice", store.RoleOwner), join(1, "bob", store.RoleMember)},
		},
		{
			name: "DMHasNoOwner",
			conv: dm, evs: []*parleyv1.Message{ev(1, created, "", "a", "b")},
			want: []store.Effect{join(1, "a", store.RoleMember), join(1, "b", store.RoleMember)},
		},
		{
			// A conversation the sequencer has no record of (a DM its first
			// send creates) has nobody as owner.
			name: "NoRecordNoOwner",
			evs:  []*parleyv1.Message{ev(1, created, "", "alice", "bob")},
			want: []store.Effect{join(1, "alice", store.RoleMember), join(1, "bob", store.RoleMember)},
		},
		{
			name: "OwnerOnlyThroughCreation",
			conv: group, evs: []*parleyv1.Message{ev(1, created, "", "bob"), ev(2, added, "", "alice")},
			want: []store.Effect{join(1, "bob", store.RoleMember), join(2, "alice", store.RoleMember)},
		},
		{
			// Naming a current member again changes nothing: the owner
			// stays owner, the admin admin.
			name: "CurrentMemberKeepsRow",
			conv: group, members: members, evs: []*parleyv1.Message{ev(5, added, "", "dave", "alice", "bob", "dave")},
			want: []store.Effect{join(5, "dave", store.RoleMember)},
			wantMembers: []store.Member{mem("alice", 1, store.RoleOwner), mem("bob", 1, store.RoleAdmin),
				mem("carol", 2, store.RoleMember), mem("dave", 5, store.RoleMember)},
		},
		{
			// Removing a non-member is passed on too: the store's no-op,
			// and on Cassandra a tombstone no replayed older join passes.
			name: "RemoveAnyone",
			conv: group, members: members, evs: []*parleyv1.Message{ev(5, removed, "", "carol", "stranger")},
			want:        []store.Effect{store.RemoveMember(5, "carol"), store.RemoveMember(5, "stranger")},
			wantMembers: []store.Member{mem("alice", 1, store.RoleOwner), mem("bob", 1, store.RoleAdmin)},
		},
		{
			name: "RoleKeepsJoinedSeq",
			conv: group, members: members, evs: []*parleyv1.Message{ev(5, role, store.RoleAdmin, "carol"), ev(6, role, store.RoleMember, "bob")},
			want: []store.Effect{store.PutMember(5, mem("carol", 2, store.RoleAdmin)), store.PutMember(6, mem("bob", 1, store.RoleMember))},
		},
		{
			name: "RoleOfNonMemberChangesNothing",
			conv: group, members: members, evs: []*parleyv1.Message{ev(5, role, store.RoleAdmin, "dave")},
		},
		{
			name: "RoleNamingTwoChangesNothing",
			conv: group, members: members, evs: []*parleyv1.Message{ev(5, role, store.RoleAdmin, "carol", "bob")},
		},
		{
			name: "RemovedAdminComesBackAMember",
			conv: group, members: members, evs: []*parleyv1.Message{ev(7, removed, "", "bob"), ev(8, added, "", "bob")},
			want: []store.Effect{store.RemoveMember(7, "bob"), join(8, "bob", store.RoleMember)},
		},
		{
			name: "OwnerLeavesAndPassesOn",
			conv: group, members: members, evs: []*parleyv1.Message{ev(9, removed, "", "alice"), ev(10, owner, "", "bob")},
			want:        []store.Effect{store.RemoveMember(9, "alice"), store.PutMember(10, mem("bob", 1, store.RoleOwner))},
			wantMembers: []store.Member{mem("bob", 1, store.RoleOwner), mem("carol", 2, store.RoleMember)},
		},
		{
			name: "OwnerChangedToOneWhoLeftChangesNothing",
			conv: group, members: members, evs: []*parleyv1.Message{ev(9, removed, "", "bob"), ev(10, owner, "", "bob")},
			want: []store.Effect{store.RemoveMember(9, "bob")},
		},
		{
			// Events of one append apply in seq order, as if appended one
			// by one.
			name: "OneAppendInOrder",
			conv: group,
			evs: []*parleyv1.Message{
				ev(1, created, "", "alice", "bob"), ev(2, text, "hi"), ev(3, added, "", "carol"),
				ev(4, removed, "", "bob"), ev(5, removed, "", "carol"), ev(6, added, "", "carol"),
			},
			want: []store.Effect{
				join(1, "alice", store.RoleOwner), join(1, "bob", store.RoleMember), join(3, "carol", store.RoleMember),
				store.RemoveMember(4, "bob"), store.RemoveMember(5, "carol"), join(6, "carol", store.RoleMember),
			},
			wantMembers: []store.Member{mem("alice", 1, store.RoleOwner), mem("carol", 6, store.RoleMember)},
		},
		{
			name: "RenamesInOrder",
			conv: group, members: members, evs: []*parleyv1.Message{ev(3, text, "x"), ev(4, renamed, "third"), ev(5, renamed, "fourth")},
			want: []store.Effect{store.Rename(4, "third"), store.Rename(5, "fourth")},
		},
		{
			name: "MessagesChangeNothing",
			conv: group, members: members,
			evs: []*parleyv1.Message{ev(5, text, "hi", "dave"), ev(6, parleyv1.MessageKind_MESSAGE_KIND_EDITED, "ho"),
				ev(7, parleyv1.MessageKind_MESSAGE_KIND_DELETED, ""), ev(8, parleyv1.MessageKind_MESSAGE_KIND_REACTION, "")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := effects(tc.conv, tc.members, tc.evs)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("effects = %+v\nwant %+v", got, tc.want)
			}
			if err := store.CheckEffects(tc.evs[0].GetSeq(), tc.evs[len(tc.evs)-1].GetSeq(), got); err != nil {
				t.Errorf("CheckEffects: %v", err)
			}
			if tc.wantMembers == nil {
				return
			}
			st := &convState{members: map[string]store.Member{}}
			for id, m := range tc.members {
				st.members[id] = m
			}
			st.apply(got)
			var ms []store.Member
			for _, m := range st.members {
				ms = append(ms, m)
			}
			slices.SortFunc(ms, func(a, b store.Member) int {
				switch {
				case a.UserID < b.UserID:
					return -1
				case a.UserID > b.UserID:
					return 1
				}
				return 0
			})
			if !slices.Equal(ms, tc.wantMembers) {
				t.Errorf("members after apply = %v, want %v", ms, tc.wantMembers)
			}
			if tc.members != nil && len(tc.members) != 3 {
				t.Errorf("effects modified the members it was given")
			}
		})
	}
}

// TestReadAtFollowsMembers: the counts behind read-by-all (readAt) give,
// after any mix of joins, rejoins, role changes, departures and pointers
// moving forward, the same lowest effective read pointer as a scan of
// every member.
func TestReadAtFollowsMembers(t *testing.T) {
	rng := rand.New(rand.NewPCG(16, 500))
	users := []string{"u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"}
	st := &convState{members: map[string]store.Member{}, ptrs: map[string]pointers{}}
	scan := func() uint64 {
		first, lo := true, uint64(0)
		for u, m := range st.members {
			if r := effectiveRead(m, st.ptrs[u]); first || r < lo {
				first, lo = false, r
			}
		}
		return lo
	}
	seq := uint64(1)
	for i := range 20000 {
		u := users[rng.IntN(len(users))]
		switch rng.IntN(4) {
		case 0: // joins, rejoins or changes role
			joined := seq
			if m, ok := st.members[u]; ok && rng.IntN(2) == 0 {
				joined = m.JoinedSeq
			}
			st.apply([]store.Effect{store.PutMember(seq, store.Member{UserID: u, JoinedSeq: joined, Role: store.RoleMember})})
		case 1:
			st.apply([]store.Effect{store.RemoveMember(seq, u)})
		default: // reads forward, as conversation.advance moves it
			p := st.ptrs[u]
			p.read += uint64(rng.IntN(3))
			if m, ok := st.members[u]; ok {
				st.countRead(m, st.ptrs[u], -1)
				st.countRead(m, p, 1)
			}
			st.ptrs[u] = p
		}
		seq += uint64(rng.IntN(2))
		lo := st.lowestRead()
		if want := scan(); lo != want {
			t.Fatalf("step %d: lowestRead %d, scan of the members %d (counts %v)", i, lo, want, st.readAt)
		}
		st.readMin = lo
	}
}
