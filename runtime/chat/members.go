package chat

import (
	"context"
	"strings"
	"time"

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
	if err := CheckTitle(cg.GetTitle()); err != nil {
		c.fail(ctx, j, out, err)
		return
	}
	members := []string{creator}
	seen := map[string]bool{creator: true}
	for _, u := range cg.GetMembers() {
		if !ValidUserID(u) {
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
	id := groupPrefix + s.node.Generate().String()
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
	if err := s.st.Append(ctx, id, []*parleyv1.Message{ev}); err != nil {
		// The conversation row stays without log or members: invisible,
		// since nobody has it in an inbox.
		c.fail(ctx, j, out, storeErr(s.log, "append group creation", id, err))
		return
	}
	s.countStored([]*parleyv1.Message{ev})
	c.reply(j, out, &parleyv1.Reply{Event: ev})
	deliverMessage(out, members, ev, rec.GetOrigin().GetSessionId())
}

// addMembers adds users to a group through a MEMBER_ADDED event. Sequenced
// in the conversation's queue, so concurrent adds cannot pass the cap: if the
// members plus the new ones exceed MaxGroupMembers, nothing is added
// (group_full). Users already members are skipped; with none left the reply
// is empty (no event).
func (c *conversation) addMembers(ctx context.Context, j *job, out *Batch) {
	s := c.p.s
	caller := j.rec.GetOrigin().GetUserId()
	req := j.rec.GetAddMembers()
	var added []string
	state, ev, err := c.appendOne(ctx, func(st *convState) (*parleyv1.Message, error) {
		if err := c.checkGroupMember(st, caller); err != nil {
			return nil, err
		}
		users, err := changeList(req)
		if err != nil {
			return nil, err
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
	state.addMembers(added, ev.GetSeq(), store.RoleMember)
	c.reply(j, out, &parleyv1.Reply{Event: ev})
	deliverMessage(out, state.memberIDs(), ev, j.rec.GetOrigin().GetSessionId())
}

// removeMembers removes users from a group through a MEMBER_REMOVED event. A
// member may remove itself; removing others takes the owner role (forbidden
// otherwise; see convState.isOwner: when the owner has left, ownership has
// passed on). The event goes to the remaining and the removed members, and
// nothing sequenced after it reaches the removed ones. Users who are not
// members are skipped; with none left the reply is empty.
func (c *conversation) removeMembers(ctx context.Context, j *job, out *Batch) {
	caller := j.rec.GetOrigin().GetUserId()
	req := j.rec.GetRemoveMembers()
	var removed []string
	state, ev, err := c.appendOne(ctx, func(st *convState) (*parleyv1.Message, error) {
		if err := c.checkGroupMember(st, caller); err != nil {
			return nil, err
		}
		users, err := changeList(req)
		if err != nil {
			return nil, err
		}
		removed = removed[:0]
		for _, u := range users {
			if _, ok := st.members[u]; !ok {
				continue
			}
			if u != caller && !st.isOwner(caller) {
				return nil, wire.Errorf(wire.CodeForbidden, "only the group's owner may remove other members")
			}
			removed = append(removed, u)
		}
		if len(removed) == 0 {
			// Decision: removing only non-members is an error a person can
			// act on, not a silent success (a DELETE retried after its
			// success gets it too, which REST clients expect of DELETE).
			return nil, wire.Errorf(wire.CodeNotFound, "%s is not a member of %s; nobody was removed", strings.Join(users, ", "), c.id)
		}
		return c.event(st.head+1, parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED, caller, removed), nil
	})
	if err != nil {
		c.fail(ctx, j, out, err)
		return
	}
	if ev == nil {
		c.reply(j, out, &parleyv1.Reply{})
		return
	}
	before := state.memberIDs() // still includes the removed: they learn it too
	state.removeMembers(removed)
	c.reply(j, out, &parleyv1.Reply{Event: ev})
	deliverMessage(out, before, ev, j.rec.GetOrigin().GetSessionId())
	// A member who had not read everything may have been holding back the
	// read-by-all pointer.
	c.readByAll(ctx, state, out)
}

// checkGroupMember checks that the conversation is a group user belongs to.
func (c *conversation) checkGroupMember(st *convState, user string) error {
	if !st.exists {
		if IsDM(c.id) {
			return errInvalid("the members of a direct conversation cannot change")
		}
		return wire.Errorf(wire.CodeNotFound, "conversation %s does not exist", c.id)
	}
	if st.conv.Kind != store.KindGroup {
		return errInvalid("the members of a direct conversation cannot change")
	}
	if _, ok := st.members[user]; !ok {
		return wire.Errorf(wire.CodeNotMember, "not a member of %s", c.id)
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
		if !ValidUserID(u) {
			return nil, errInvalid("invalid user id in user_ids")
		}
		if !seen[u] {
			seen[u] = true
			out = append(out, u)
		}
	}
	return out, nil
}

// isOwner reports whether user owns the group: the member stored with
// store.RoleOwner (its creator) while it is a member; once it has left, the
// longest-standing member (lowest joined_seq, then the smaller user id), so
// a group whose owner left can still be administered (issue 13: nobody could
// remove a member again). Ownership passes on by this rule, computed from
// the membership every sequencer has, with no event of its own yet.
func (st *convState) isOwner(user string) bool {
	if _, ok := st.members[user]; !ok {
		return false
	}
	return ownerOf(st.members) == user
}

// ownerOf is the owner of a group with members (isOwner's rule): the member
// stored with store.RoleOwner, else the longest-standing one; "" without
// members.
func ownerOf(members map[string]store.Member) string {
	var oldest string
	for id, m := range members {
		if m.Role == store.RoleOwner {
			return id
		}
		if o, ok := members[oldest]; oldest == "" || !ok || m.JoinedSeq < o.JoinedSeq || m.JoinedSeq == o.JoinedSeq && id < oldest {
			oldest = id
		}
	}
	return oldest
}
