package chat

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

// createGroup creates a group with the caller as owner.
//
// Decision: the sequencer mints the id, "g:" + a snowflake id, because only
// the chat role mints snowflakes (docs/design.md). The request therefore carries
// an empty conversation_id and is keyed by the creator's user id (see
// Client.Do); it runs in the queue of the empty conversation id of whichever
// partition that key lands in, and needs no conversation state: a fresh id is
// known to nobody, so no other sequencer can write it. The id comes back in
// Reply.event.conversation_id. Creation is not idempotent: a retry after
// timeout may create a second group (the first is listed in the inbox).
func (c *conversation) createGroup(ctx context.Context, j *job, out *Batch) {
	s := c.p.s
	rec := j.rec
	creator := rec.GetOrigin().GetUserId()
	cg := rec.GetCreateGroup()
	if rec.GetConversationId() != "" {
		c.fail(ctx, j, out, errInvalid("create_group: conversation_id must be empty; the server assigns the group id"))
		return
	}
	if err := rules.CheckTitle(cg.GetTitle()); err != nil {
		c.fail(ctx, j, out, err)
		return
	}
	members := []string{creator}
	seen := map[string]bool{creator: true}
	for _, u := range cg.GetMembers() {
		if !rules.ValidUserID(u) {
			c.fail(ctx, j, out, errInvalid("invalid user id in members"))
			return
		}
		if !seen[u] {
			seen[u] = true
			members = append(members, u)
		}
		if len(members) > s.cfg.MaxGroupMembers {
			c.fail(ctx, j, out, wire.Errorf(wire.CodeGroupFull, "a group has at most %d members", s.cfg.MaxGroupMembers))
			return
		}
	}
	if err := s.checkNoBlockers(ctx, creator, members[1:]); err != nil {
		c.fail(ctx, j, out, err)
		return
	}
	id := rules.GroupPrefix + s.node.Generate().String()
	now := time.Now()
	err := s.st.CreateConversation(ctx, store.Conversation{
		ID: id, Kind: store.KindGroup, Title: cg.GetTitle(), HomeRegion: s.cfg.Region, CreatedBy: creator, CreatedAt: now,
	})
	if err != nil {
		c.fail(ctx, j, out, storeErr(s.log, "create group", id, err))
		return
	}
	ev := &parleyv1.Message{
		ConversationId: id,
		Seq:            1,
		MessageId:      s.node.Generate().Int64(),
		SenderId:       creator,
		Kind:           parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED,
		Text:           cg.GetTitle(),
		Members:        members,
		CreatedAt:      now.UnixMilli(),
	}
	creation := store.Conversation{Kind: store.KindGroup, CreatedBy: creator} // the creator becomes owner
	if err := s.st.Append(ctx, id, []*parleyv1.Message{ev}, effects(creation, nil, []*parleyv1.Message{ev})...); err != nil {
		// The conversation row stays without log or members: invisible,
		// since nobody has it in an inbox.
		c.fail(ctx, j, out, storeErr(s.log, "append group creation", id, err))
		return
	}
	s.countStored([]*parleyv1.Message{ev})
	c.reply(j, out, &parleyv1.Reply{Event: ev})
	deliverMessage(out, members, ev, rec.GetOrigin().GetSessionId())
}

// addMembers adds users to a group through a MEMBER_ADDED event. The owner
// and admins may add (forbidden for a member). Sequenced in the
// conversation's queue, so concurrent adds cannot pass the cap: if the
// members plus the new ones exceed MaxGroupMembers, nothing is added
// (group_full). Users already members are skipped; with none left the reply
// is empty (no event).
func (c *conversation) addMembers(ctx context.Context, j *job, out *Batch) {
	s := c.p.s
	caller := j.rec.GetOrigin().GetUserId()
	req := j.rec.GetAddMembers()
	var added []string
	state, ev, err := c.appendOne(ctx, func(st *convState) (*parleyv1.Message, error) {
		if err := c.checkGroupMember(st, caller, dmMembers); err != nil {
			return nil, err
		}
		users, err := changeList(req)
		if err != nil {
			return nil, err
		}
		if roleOf(st.members, caller) == store.RoleMember {
			return nil, wire.Errorf(wire.CodeForbidden, "only the group's owner and admins may add members")
		}
		added = added[:0]
		for _, u := range users {
			if _, ok := st.members[u]; !ok {
				added = append(added, u)
			}
		}
		if len(added) == 0 {
			return nil, nil
		}
		if len(st.members)+len(added) > s.cfg.MaxGroupMembers {
			return nil, wire.Errorf(wire.CodeGroupFull, "the group has %d members; adding %d would pass the limit of %d",
				len(st.members), len(added), s.cfg.MaxGroupMembers)
		}
		if err := s.checkNoBlockers(ctx, caller, added); err != nil {
			return nil, err
		}
		return c.event(st.head+1, parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED, caller, added), nil
	})
	if err != nil {
		c.fail(ctx, j, out, err)
		return
	}
	if ev == nil {
		c.reply(j, out, &parleyv1.Reply{})
		return
	}
	c.reply(j, out, &parleyv1.Reply{Event: ev})
	deliverMessage(out, state.memberIDs(), ev, j.rec.GetOrigin().GetSessionId())
}

// removeMembers removes users from a group through a MEMBER_REMOVED event.
// A member may remove itself (leave). Removing others takes the owner
// role, or the admin role for removing members who are neither the owner
// nor admins (forbidden otherwise; roleOf: when the owner has left,
// ownership has passed on). The event goes to the remaining and the
// removed members, and nothing sequenced after it reaches the removed
// ones. Users who are not members are skipped; with none left the reply is
// not_found.
//
// When the owner leaves, an OWNER_CHANGED event naming the member
// ownerOf picks among those who remain follows in the same append (none
// when nobody remains: the group is left empty and read-only, since every
// operation needs a member).
func (c *conversation) removeMembers(ctx context.Context, j *job, out *Batch) {
	caller := j.rec.GetOrigin().GetUserId()
	req := j.rec.GetRemoveMembers()
	var removed []string
	state, evs, err := c.appendEvents(ctx, func(st *convState) ([]*parleyv1.Message, error) {
		if err := c.checkGroupMember(st, caller, dmMembers); err != nil {
			return nil, err
		}
		users, err := changeList(req)
		if err != nil {
			return nil, err
		}
		removed = removed[:0]
		callerRole := roleOf(st.members, caller)
		for _, u := range users {
			if _, ok := st.members[u]; !ok {
				continue
			}
			if u != caller {
				if err := mayRemove(callerRole, roleOf(st.members, u)); err != nil {
					return nil, err
				}
			}
			removed = append(removed, u)
		}
		if len(removed) == 0 {
			// Decision: removing only non-members is an error a person can
			// act on, not a silent success (a DELETE retried after its
			// success gets it too, which REST clients expect of DELETE).
			return nil, wire.Errorf(wire.CodeNotFound, "%s is not a member of %s; nobody was removed", strings.Join(users, ", "), c.id)
		}
		evs := []*parleyv1.Message{c.event(st.head+1, parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED, caller, removed)}
		if next := nextOwner(st.members, removed); next != "" {
			evs = append(evs, c.event(st.head+2, parleyv1.MessageKind_MESSAGE_KIND_OWNER_CHANGED, caller, []string{next}))
		}
		return evs, nil
	})
	if err != nil {
		c.fail(ctx, j, out, err)
		return
	}
	if len(evs) == 0 {
		c.reply(j, out, &parleyv1.Reply{})
		return
	}
	// The removed learn it too: state already has them gone.
	before := append(slices.Clone(state.memberIDs()), removed...)
	c.reply(j, out, &parleyv1.Reply{Event: evs[0]})
	deliverMessage(out, before, evs[0], j.rec.GetOrigin().GetSessionId())
	if len(evs) > 1 {
		deliverMessage(out, state.memberIDs(), evs[1], j.rec.GetOrigin().GetSessionId())
	}
	// A member who had not read everything may have been holding back the
	// read-by-all pointer.
	c.readByAll(ctx, state, out)
}

// mayRemove says whether a member with role by may remove another member
// with role target: the owner removes anyone, an admin removes members
// (not the owner, not another admin), a member nobody (forbidden).
func mayRemove(by, target string) error {
	switch {
	case by == store.RoleOwner:
		return nil
	case by == store.RoleAdmin && target == store.RoleMember:
		return nil
	case by == store.RoleAdmin:
		return wire.Errorf(wire.CodeForbidden, "an admin may remove members, not the owner or another admin; only the owner removes admins")
	}
	return wire.Errorf(wire.CodeForbidden, "only the group's owner and admins may remove other members")
}

// What a direct conversation cannot do, in checkGroupMember's invalid.
const (
	dmMembers = "the members of a direct conversation cannot change"
	dmRoles   = "a direct conversation has no roles"
	dmRename  = "a direct conversation has no title to rename"
)

// checkGroupMember checks that the conversation is a group user belongs
// to: not_found for a group that does not exist, invalid (dmProblem) for
// a DM, not_member.
func (c *conversation) checkGroupMember(st *convState, user, dmProblem string) error {
	if !st.exists {
		if rules.IsDM(c.id) {
			return errInvalid(dmProblem)
		}
		return wire.Errorf(wire.CodeNotFound, "conversation %s does not exist", c.id)
	}
	if st.conv.Kind != store.KindGroup {
		return errInvalid(dmProblem)
	}
	if _, ok := st.members[user]; !ok {
		return c.notMember(st)
	}
	return nil
}

// changeList validates and dedupes the user ids of a membership change.
func changeList(req *parleyv1.ChangeMembers) ([]string, error) {
	ids := req.GetUserIds()
	if len(ids) == 0 {
		return nil, errInvalid("user_ids is empty")
	}
	seen := make(map[string]bool, len(ids))
	out := make([]string, 0, len(ids))
	for _, u := range ids {
		if !rules.ValidUserID(u) {
			return nil, errInvalid("invalid user id in user_ids")
		}
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out, nil
}

// roleOf is user's role in a group with members, the one rule every
// permission check and the members list use: store.RoleOwner for the
// member ownerOf picks, store.RoleAdmin for a member stored as admin, else
// store.RoleMember ("" for a non-member).
func roleOf(members map[string]store.Member, user string) string {
	m, ok := members[user]
	if !ok {
		return ""
	}
	return roleWith(m, ownerOf(members))
}

// roleWith is m's role in a group owned by owner (roleOf's rule).
func roleWith(m store.Member, owner string) string {
	switch {
	case m.UserID == owner:
		return store.RoleOwner
	case m.Role == store.RoleAdmin:
		return store.RoleAdmin
	}
	return store.RoleMember
}

// ownerOf is the owner of a group with members: the member stored with
// store.RoleOwner (the creator, or whom an OWNER_CHANGED event named);
// else, in a group whose owner left before OWNER_CHANGED existed, the
// successor nextOwner would have named: the longest-standing admin, else
// the longest-standing member (lowest joined_seq, then the smaller user
// id). "" without members. Issue 13: a group whose owner left could never
// remove a member again.
func ownerOf(members map[string]store.Member) string {
	var best string
	for id, m := range members {
		if m.Role == store.RoleOwner {
			return id
		}
		if best == "" || succeeds(id, m, best, members[best]) {
			best = id
		}
	}
	return best
}

// succeeds orders candidates for ownership: admins first, then by
// joined_seq, then by user id.
func succeeds(id string, m store.Member, than string, o store.Member) bool {
	if a, b := m.Role == store.RoleAdmin, o.Role == store.RoleAdmin; a != b {
		return a
	}
	if m.JoinedSeq != o.JoinedSeq {
		return m.JoinedSeq < o.JoinedSeq
	}
	return id < than
}

// nextOwner returns who owns the group once removed leave it, when the
// owner is among them and someone remains (ownerOf over the rest); ""
// otherwise.
func nextOwner(members map[string]store.Member, removed []string) string {
	owner := ownerOf(members)
	if !slices.Contains(removed, owner) {
		return ""
	}
	rest := make(map[string]store.Member, len(members))
	for id, m := range members {
		if !slices.Contains(removed, id) {
			rest[id] = m
		}
	}
	return ownerOf(rest)
}
