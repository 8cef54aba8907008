package chat

import (
	"context"
	"fmt"
	"slices"

	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

// react sequences a reaction added or removed on an earlier message as a
// REACTION event (issue 13), which store.Append applies to the target, and
// answers with the event, pushed to every member but the requesting
// session. Reactions are not unread and not pushed to offline devices
// (push.notification sends text and media only).
//
// Rules, checked in this order, each with its code (nothing is stored on an
// error): the caller is a member (not_member; not_found for a group that
// does not exist); the emoji passes rules.CheckEmoji (invalid, too_large); seq is
// a message the caller can see, at or below the head (not_found); it is a
// text or media message, not an event (invalid); it is not deleted
// (not_found, as for an edit); an added emoji is the caller's
// MaxReactionsPerUser-th at most and the message's MaxReactionsPerMessage-th
// distinct emoji at most (too_many_reactions).
//
// Idempotency: adding a reaction the caller already has, or removing one
// it does not have (a retry, a second device), sequences nothing and
// answers a REACTION message with seq 0 carrying the message's current
// reactions; the limits are not checked then.
func (c *conversation) react(ctx context.Context, j *job, out *Batch) {
	var noop *parleyv1.Message
	state, ev, err := c.appendOne(ctx, func(st *convState) (*parleyv1.Message, error) {
		var err error
		var ev *parleyv1.Message
		ev, noop, err = c.planReaction(ctx, st, j.rec)
		return ev, err
	})
	if err != nil {
		c.fail(ctx, j, out, err)
		return
	}
	if ev == nil {
		c.reply(j, out, &parleyv1.Reply{Event: noop})
		return
	}
	c.reply(j, out, &parleyv1.Reply{Event: ev})
	deliverMessage(out, state.memberIDs(), ev, j.rec.GetOrigin().GetSessionId())
}

// planReaction returns the REACTION event j's reaction sequences, or, when
// it changes nothing, nil and the answer that says so.
func (c *conversation) planReaction(ctx context.Context, st *convState, rec *parleyv1.IngressRecord) (ev, noop *parleyv1.Message, err error) {
	caller := rec.GetOrigin().GetUserId()
	r := rec.GetReact()
	if r.GetConversationId() != "" && r.GetConversationId() != c.id {
		return nil, nil, errInvalid("react.conversation_id does not match the record")
	}
	me, ok := st.members[caller]
	if !ok {
		return nil, nil, c.notMember(st)
	}
	if err := rules.ValidateReact(r); err != nil {
		return nil, nil, err
	}
	seq, emoji, add := r.GetSeq(), r.GetEmoji(), !r.GetRemove()
	if add {
		// Removing one's reaction stays allowed, as deleting one's message.
		if err := c.checkBlocked(ctx, caller); err != nil {
			return nil, nil, err
		}
	}
	target, err := c.visibleMessage(ctx, st, me, seq, "load message to react to")
	if err != nil {
		return nil, nil, err
	}
	if tk := target.GetKind(); tk != parleyv1.MessageKind_MESSAGE_KIND_TEXT && tk != parleyv1.MessageKind_MESSAGE_KIND_MEDIA {
		return nil, nil, errInvalid(fmt.Sprintf("seq %d is a %s event, not a message; only messages take reactions", seq, kindLabel(tk)))
	}
	if target.GetDeleted() {
		return nil, nil, wire.Errorf(wire.CodeNotFound, "the message at seq %d was deleted", seq)
	}
	rs := target.GetReactions()
	has, mine := false, 0
	for _, x := range rs {
		if slices.Contains(x.GetUserIds(), caller) {
			mine++
			has = has || x.GetEmoji() == emoji
		}
	}
	if has == add {
		return nil, &parleyv1.Message{
			ConversationId: c.id, SenderId: caller, Kind: parleyv1.MessageKind_MESSAGE_KIND_REACTION,
			TargetSeq: seq, Emoji: emoji, ReactionRemoved: !add,
			Reactions: counts(rs), ReactionSeq: target.GetReactionSeq(),
		}, nil
	}
	if add {
		switch {
		case mine >= MaxReactionsPerUser:
			return nil, nil, wire.Errorf(wire.CodeTooManyReactions, "you already reacted to seq %d with %d emoji, the most one person may; remove one first", seq, mine)
		case len(rs) >= MaxReactionsPerMessage && !slices.ContainsFunc(rs, func(x *parleyv1.Reaction) bool { return x.GetEmoji() == emoji }):
			return nil, nil, wire.Errorf(wire.CodeTooManyReactions, "seq %d already has %d different reactions, the most a message may; add one of those", seq, len(rs))
		}
	}
	ev = c.event(st.head+1, parleyv1.MessageKind_MESSAGE_KIND_REACTION, caller, nil)
	ev.TargetSeq, ev.Emoji, ev.ReactionRemoved = seq, emoji, !add
	ev.Reactions = counts(store.React(rs, emoji, caller, add))
	return ev, nil, nil
}

// counts returns stored reactions rs as a REACTION event carries them:
// emoji and count, no users and no me.
func counts(rs []*parleyv1.Reaction) []*parleyv1.Reaction {
	if len(rs) == 0 {
		return nil
	}
	out := make([]*parleyv1.Reaction, len(rs))
	for i, r := range rs {
		out[i] = &parleyv1.Reaction{Emoji: r.GetEmoji(), Count: uint32(len(r.GetUserIds()))}
	}
	return out
}

// viewReactions turns the stored reactions of msgs (nil entries are
// skipped) into what viewer reads: per emoji its count and whether viewer
// is among its users, whom it drops. viewer "" is a push, the same for
// every reader: no me. A REACTION event's counts pass as they are.
func viewReactions(msgs []*parleyv1.Message, viewer string) {
	for _, m := range msgs {
		for _, r := range m.GetReactions() {
			if users := r.GetUserIds(); users != nil {
				r.Count, r.Me, r.UserIds = uint32(len(users)), viewer != "" && slices.Contains(users, viewer), nil
			}
		}
	}
}
