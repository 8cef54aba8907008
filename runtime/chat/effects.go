package chat

import (
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
)

// effects returns the member rows and title that evs change, appended in
// seq order to conversation conv whose current members are members (nil:
// none): the store.Effects the sequencer passes to store.Append with evs
// and applies to its own state once they are stored (convState.apply).
//
// Decision (issue 15): this is the one place the membership rules live.
// The sequencer decides the change, since it already knows the members and
// the conversation; the backends persist what they are given, in the same
// write as the events (docs/design.md §5), so two backends cannot drift.
// The rules, applied as if the events were appended one by one:
//
//   - CONVERSATION_CREATED and MEMBER_ADDED: each named user who is not a
//     member joins (joined_seq = the event's seq) as a member; a current
//     member keeps its row. The creator (Conversation.CreatedBy) of a
//     conversation of kind store.KindGroup joins as store.RoleOwner through
//     CONVERSATION_CREATED; a DM's members are equal.
//   - MEMBER_REMOVED: each named user's row goes (a no-op for a
//     non-member); its inbox entry stays.
//   - ROLE_CHANGED (text: the role) and OWNER_CHANGED (store.RoleOwner)
//     of exactly one member set that member's role, joined_seq kept; a
//     non-member stays one.
//   - RENAMED: the title becomes the event's text.
//
// Other events (messages, edits, deletes, reactions) change none of them.
func effects(conv store.Conversation, members map[string]store.Member, evs []*parleyv1.Message) []store.Effect {
	var (
		out  []store.Effect
		rows map[string]*store.Member // evs' changes so far; nil: removed
	)
	row := func(user string) (store.Member, bool) {
		if m, ok := rows[user]; ok {
			if m == nil {
				return store.Member{}, false
			}
			return *m, true
		}
		m, ok := members[user]
		return m, ok
	}
	put := func(seq uint64, m store.Member) {
		if rows == nil {
			rows = make(map[string]*store.Member)
		}
		rows[m.UserID] = &m
		out = append(out, store.PutMember(seq, m))
	}
	owner := ""
	if conv.Kind == store.KindGroup {
		owner = conv.CreatedBy
	}
	for _, ev := range evs {
		seq := ev.GetSeq()
		switch kind := ev.GetKind(); kind {
		case parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED, parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED:
			for _, u := range ev.GetMembers() {
				if _, ok := row(u); ok {
					continue
				}
				role := store.RoleMember
				if kind == parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED && u == owner {
					role = store.RoleOwner
				}
				put(seq, store.Member{UserID: u, JoinedSeq: seq, Role: role})
			}
		case parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED:
			for _, u := range ev.GetMembers() {
				if rows == nil {
					rows = make(map[string]*store.Member)
				}
				rows[u] = nil
				out = append(out, store.RemoveMember(seq, u))
			}
		case parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED, parleyv1.MessageKind_MESSAGE_KIND_OWNER_CHANGED:
			if len(ev.GetMembers()) != 1 {
				continue
			}
			u, role := ev.GetMembers()[0], ev.GetText()
			if kind == parleyv1.MessageKind_MESSAGE_KIND_OWNER_CHANGED {
				role = store.RoleOwner
			}
			if m, ok := row(u); ok {
				m.Role = role
				put(seq, m)
			}
		case parleyv1.MessageKind_MESSAGE_KIND_RENAMED:
			out = append(out, store.Rename(seq, ev.GetText()))
		}
	}
	return out
}

// apply brings st's members and title in step with stored effects.
func (st *convState) apply(effects []store.Effect) {
	for _, e := range effects {
		switch e.Kind {
		case store.EffectPutMember:
			p := st.ptrs[e.Member.UserID]
			if old, ok := st.members[e.Member.UserID]; ok {
				st.countRead(old, p, -1)
			}
			st.countRead(e.Member, p, 1)
			st.members[e.Member.UserID] = e.Member
			st.ids = nil
		case store.EffectRemoveMember:
			if old, ok := st.members[e.Member.UserID]; ok {
				st.countRead(old, st.ptrs[e.Member.UserID], -1)
			}
			delete(st.members, e.Member.UserID)
			st.ids = nil
		case store.EffectRename:
			st.conv.Title = e.Title
		}
	}
}
