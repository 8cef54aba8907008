package chat

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

// change sequences an edit or a delete of an earlier message as an EDITED
// or DELETED event (issue 13), which store.Append applies to the target, and
// answers with the event, pushed to every member but the requesting session.
//
// Rules, checked in this order, each with its code (nothing is stored on
// an error): the caller is a member (not_member; not_found for a group
// that does not exist); seq is a message the caller can see, at or below
// the head (not_found); it is a text or media message, not an event
// (invalid); the caller sent it, or for a delete owns or administers the
// group (forbidden); a deleted message cannot be edited (not_found); only
// text can be edited (invalid); the sender acts within Config.EditWindow
// of the message's created_at (edit_window_closed), while a group's owner
// and admins delete at any time.
//
// Idempotency (a request retried after a timeout): deleting a deleted
// message answers the event that deleted it, and editing a message to the
// text an earlier edit gave it answers that edit's event; neither
// sequences anything. Editing to the text the message was sent with is
// invalid (nothing would change).
func (c *conversation) change(ctx context.Context, j *job, out *Batch) {
	var earlier *parleyv1.Message
	state, ev, err := c.appendOne(ctx, func(st *convState) (*parleyv1.Message, error) {
		var err error
		var ev *parleyv1.Message
		ev, earlier, err = c.planChange(ctx, st, j.rec)
		return ev, err
	})
	if err != nil {
		c.fail(ctx, j, out, err)
		return
	}
	if ev == nil {
		ev = earlier
	}
	c.reply(j, out, &parleyv1.Reply{Event: ev})
	// A retry re-pushes the earlier event: its first push may have been
	// lost with its gateway, and devices drop seqs they have.
	deliverMessage(out, state.memberIDs(), ev, j.rec.GetOrigin().GetSessionId())
}

// planChange returns the event that j's edit or delete sequences, or, for
// a retry of one already applied, nil and the earlier event.
func (c *conversation) planChange(ctx context.Context, st *convState, rec *parleyv1.IngressRecord) (ev, earlier *parleyv1.Message, err error) {
	s := c.p.s
	caller := rec.GetOrigin().GetUserId()
	edit, del := rec.GetEdit(), rec.GetDelete()
	seq, kind, err := c.changeRequest(rec)
	if err != nil {
		return nil, nil, err
	}
	me, ok := st.members[caller]
	if !ok {
		return nil, nil, c.notMember(st)
	}
	if edit != nil {
		// A blocked user may still delete its own messages: taking back
		// is allowed, adding is not.
		if err := c.checkBlocked(ctx, caller); err != nil {
			return nil, nil, err
		}
	}
	target, err := c.visibleMessage(ctx, st, me, seq, "load message to change")
	if err != nil {
		return nil, nil, err
	}
	tk := target.GetKind()
	if tk != parleyv1.MessageKind_MESSAGE_KIND_TEXT && tk != parleyv1.MessageKind_MESSAGE_KIND_MEDIA {
		return nil, nil, errInvalid(fmt.Sprintf("seq %d is a %s event, not a message; only messages can be edited or deleted", seq, kindLabel(tk)))
	}
	sender := target.GetSenderId() == caller
	// The owner and admins moderate: they delete any message, at any time.
	moderator := st.conv.Kind == store.KindGroup && roleOf(st.members, caller) != store.RoleMember
	switch {
	case edit != nil && !sender:
		return nil, nil, wire.Errorf(wire.CodeForbidden, "only its sender may edit a message")
	case del != nil && !sender && !moderator:
		return nil, nil, wire.Errorf(wire.CodeForbidden, "only its sender or the group's owner or admins may delete a message")
	}
	if target.GetDeleted() {
		if edit != nil {
			return nil, nil, wire.Errorf(wire.CodeNotFound, "the message at seq %d was deleted", seq)
		}
		earlier, err := c.changeEvent(ctx, target)
		return nil, earlier, err
	}
	if edit != nil {
		if tk != parleyv1.MessageKind_MESSAGE_KIND_TEXT {
			return nil, nil, errInvalid("only text messages can be edited; delete a media message and send another")
		}
		if target.GetText() == edit.GetText() {
			if target.GetChangeSeq() == 0 {
				return nil, nil, errInvalid("the text is unchanged")
			}
			earlier, err := c.changeEvent(ctx, target)
			return nil, earlier, err
		}
	}
	if !(del != nil && moderator) {
		if age := time.Since(time.UnixMilli(target.GetCreatedAt())); age > s.cfg.EditWindow {
			return nil, nil, wire.Errorf(wire.CodeEditWindowClosed, "messages can be edited or deleted for %s after they are sent; seq %d was sent %s ago",
				s.cfg.EditWindow, seq, age.Truncate(time.Minute))
		}
	}
	ev = c.event(st.head+1, kind, caller, nil)
	ev.TargetSeq = seq
	if edit != nil {
		ev.Text = edit.GetText()
		// The edited text's mentions replace the message's (members now).
		ev.Mentions = Mentions(ev.Text, func(u string) bool { _, ok := st.members[u]; return ok })
	}
	return ev, nil, nil
}

// changeRequest checks an edit or delete record on its own (the record's
// conversation, rules.ValidateEdit, rules.ValidateDelete) and returns the seq it
// changes and the kind of event it makes.
func (c *conversation) changeRequest(rec *parleyv1.IngressRecord) (uint64, parleyv1.MessageKind, error) {
	if edit := rec.GetEdit(); edit != nil {
		if edit.GetConversationId() != "" && edit.GetConversationId() != c.id {
			return 0, 0, errInvalid("edit.conversation_id does not match the record")
		}
		if err := rules.ValidateEdit(edit, c.p.s.cfg.MaxMessageBytes); err != nil {
			return 0, 0, err
		}
		return edit.GetSeq(), parleyv1.MessageKind_MESSAGE_KIND_EDITED, nil
	}
	del := rec.GetDelete()
	if del.GetConversationId() != "" && del.GetConversationId() != c.id {
		return 0, 0, errInvalid("delete.conversation_id does not match the record")
	}
	if err := rules.ValidateDelete(del); err != nil {
		return 0, 0, err
	}
	return del.GetSeq(), parleyv1.MessageKind_MESSAGE_KIND_DELETED, nil
}

// visibleMessage loads the message at seq that member me can see: at or
// below the head and not before it joined (not_found otherwise, as for a
// message that does not exist). what names the read in a store error.
func (c *conversation) visibleMessage(ctx context.Context, st *convState, me store.Member, seq uint64, what string) (*parleyv1.Message, error) {
	s := c.p.s
	if seq > st.head || seq < me.JoinedSeq {
		return nil, wire.Errorf(wire.CodeNotFound, "%s has no message at seq %d", c.id, seq)
	}
	m, err := s.st.Message(ctx, c.id, seq)
	if errors.Is(err, store.ErrNotFound) {
		return nil, wire.Errorf(wire.CodeNotFound, "%s has no message at seq %d", c.id, seq)
	}
	if err != nil {
		return nil, storeErr(s.log, what, c.id, err)
	}
	return m, nil
}

// changeEvent loads the event that last changed target (its change_seq).
func (c *conversation) changeEvent(ctx context.Context, target *parleyv1.Message) (*parleyv1.Message, error) {
	s := c.p.s
	ev, err := s.st.Message(ctx, c.id, target.GetChangeSeq())
	if err != nil {
		return nil, storeErr(s.log, "load change event", c.id, err)
	}
	if !store.IsChange(ev.GetKind()) || ev.GetTargetSeq() != target.GetSeq() {
		s.log.Error("change_seq names no change of the message", "conversation", c.id, "seq", target.GetSeq(), "change_seq", target.GetChangeSeq())
		return nil, &wire.Error{Code: wire.CodeInternal, Message: "the message's change history is inconsistent"}
	}
	if ev.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_EDITED {
		ev.Text = target.GetText()
	}
	return ev, nil
}

// healChanges re-applies the edits and deletes among recent (newest
// first) whose effect on their target is missing or incomplete. Pebble
// stores an event and its effect in one batch; Cassandra applies the
// effect after storing the event, so a crash or a failed write between
// the two leaves the event in the log with the target unchanged (or a
// superseded edit's text uncleared). The failed Append made the sequencer
// drop its state, and any later owner loads it afresh, so this runs
// before the conversation's next request: the log heals before anyone
// builds on it. It reads the targets the window does not hold.
func (c *conversation) healChanges(ctx context.Context, recent []*parleyv1.Message) error {
	s := c.p.s
	var bySeq map[uint64]*parleyv1.Message
	for i := len(recent) - 1; i >= 0; i-- {
		ev := recent[i]
		if !store.IsChange(ev.GetKind()) {
			continue
		}
		if bySeq == nil {
			bySeq = make(map[uint64]*parleyv1.Message, len(recent))
			for _, m := range recent {
				bySeq[m.GetSeq()] = m
			}
		}
		target := bySeq[ev.GetTargetSeq()]
		if target == nil {
			var err error
			target, err = s.st.Message(ctx, c.id, ev.GetTargetSeq())
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return storeErr(s.log, "load changed message", c.id, err)
			}
			bySeq[target.GetSeq()] = target
		}
		if changeApplied(target, ev) {
			continue
		}
		s.log.Info("applying an edit or delete whose effect is missing", "conversation", c.id, "seq", ev.GetSeq(), "target", ev.GetTargetSeq())
		if err := s.st.ApplyChange(ctx, c.id, ev); err != nil {
			return storeErr(s.log, "apply change", c.id, err)
		}
		// The window's copy of the target is stale now.
		delete(bySeq, target.GetSeq())
	}
	return nil
}

// changeApplied reports whether ev's effect on target is complete: target
// carries ev or a later change, and if ev is an edit a later change
// superseded, ev keeps no text.
func changeApplied(target, ev *parleyv1.Message) bool {
	if store.Changed(target, ev) != nil {
		return false
	}
	return target.GetChangeSeq() <= ev.GetSeq() || ev.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_EDITED || ev.GetText() == ""
}
