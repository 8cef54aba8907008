package chat

import (
	"context"

	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

// setRole sequences a ROLE_CHANGED event (text: the role) giving a member
// of a group the admin or member role (issue 13), whose effect on the
// member's row (effects) store.Append persists, and answers with the
// event, pushed to every member but the requesting session.
//
// Rules, checked in this order, each with its code (nothing is stored on
// an error): rules.ValidateSetRole (invalid); the conversation is a group
// (not_found for one that does not exist, invalid for a DM, which has no
// roles); the caller is a member (not_member) and its owner (forbidden);
// user_id is a member (not_found); user_id is not the owner (invalid: the
// owner's role changes only when it leaves).
//
// Idempotency: giving a member the role it has (a retry) sequences
// nothing and answers a ROLE_CHANGED message with seq 0.
func (c *conversation) setRole(ctx context.Context, j *job, out *Batch) {
	caller := j.rec.GetOrigin().GetUserId()
	req := j.rec.GetSetRole()
	var noop *parleyv1.Message
	state, ev, err := c.appendOne(ctx, func(st *convState) (*parleyv1.Message, error) {
		if err := c.checkRecordID(req.GetConversationId()); err != nil {
			return nil, err
		}
		if err := rules.ValidateSetRole(req); err != nil {
			return nil, err
		}
		if err := c.checkGroupMember(st, caller, dmRoles); err != nil {
			return nil, err
		}
		if roleOf(st.members, caller) != store.RoleOwner {
			return nil, wire.Errorf(wire.CodeForbidden, "only the group's owner may make or unmake admins")
		}
		user, role := req.GetUserId(), req.GetRole()
		switch roleOf(st.members, user) {
		case "":
			return nil, wire.Errorf(wire.CodeNotFound, "%s is not a member of %s", user, c.id)
		case store.RoleOwner:
			return nil, errInvalid("the owner's role cannot change: ownership passes when the owner leaves")
		case role:
			noop = c.event(0, parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED, caller, []string{user})
			noop.Text, noop.MessageId = role, 0
			return nil, nil
		}
		ev := c.event(st.head+1, parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED, caller, []string{user})
		ev.Text = role
		return ev, nil
	})
	c.finishAdmin(ctx, j, out, state, ev, noop, err)
}

// rename sequences a RENAMED event (text: the new title) of a group
// (issue 13), whose effect on the conversation's title (effects)
// store.Append persists, and answers with the event, pushed to every
// member but the requesting session. The inbox and sync show the new
// title from then on.
//
// Rules, in order, each with its code (nothing is stored on an error):
// rules.ValidateRename (invalid, too_large); the conversation is a group
// (not_found, or invalid for a DM, which has no title); the caller is a
// member (not_member) and its owner or an admin (forbidden).
//
// Idempotency: renaming to the current title (a retry) sequences nothing
// and answers a RENAMED message with seq 0.
func (c *conversation) rename(ctx context.Context, j *job, out *Batch) {
	caller := j.rec.GetOrigin().GetUserId()
	req := j.rec.GetRename()
	var noop *parleyv1.Message
	state, ev, err := c.appendOne(ctx, func(st *convState) (*parleyv1.Message, error) {
		if err := c.checkRecordID(req.GetConversationId()); err != nil {
			return nil, err
		}
		if err := rules.ValidateRename(req); err != nil {
			return nil, err
		}
		if err := c.checkGroupMember(st, caller, dmRename); err != nil {
			return nil, err
		}
		if roleOf(st.members, caller) == store.RoleMember {
			return nil, wire.Errorf(wire.CodeForbidden, "only the group's owner and admins may rename it")
		}
		ev := c.event(st.head+1, parleyv1.MessageKind_MESSAGE_KIND_RENAMED, caller, nil)
		ev.Text = req.GetTitle()
		if st.conv.Title == ev.Text {
			ev.Seq, ev.MessageId, noop = 0, 0, ev
			return nil, nil
		}
		return ev, nil
	})
	c.finishAdmin(ctx, j, out, state, ev, noop, err)
}

// checkRecordID checks that a request's own conversation_id, when set,
// names the record's conversation.
func (c *conversation) checkRecordID(conv string) error {
	if conv != "" && conv != c.id {
		return errInvalid("conversation_id does not match the record")
	}
	return nil
}

// finishAdmin answers a role change or rename: the error, the no-op
// answer (seq 0, pushed to nobody), or the stored event (state has its
// effect: appendEvents), pushed to every member but the requesting session.
func (c *conversation) finishAdmin(ctx context.Context, j *job, out *Batch, state *convState, ev, noop *parleyv1.Message, err error) {
	switch {
	case err != nil:
		c.fail(ctx, j, out, err)
	case ev == nil:
		c.reply(j, out, &parleyv1.Reply{Event: noop})
	default:
		c.reply(j, out, &parleyv1.Reply{Event: ev})
		deliverMessage(out, state.memberIDs(), ev, j.rec.GetOrigin().GetSessionId())
	}
}
