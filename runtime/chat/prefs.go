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

// Mute and block (issue 13) are each user's own settings, stored by
// store.Prefs when asked (they are not events of any conversation's log):
// Queries writes and reads them; the sequencer refuses a blocked user's
// writes in the DM; presence and offline push consult them.

// MaxBlocksPerUser bounds the users one user blocks (too_many_blocks past
// it), so the block list GET /v1/blocks answers in one response stays small
// (an outside tryout stored 1,200 blocks of made-up ids at the send rate).
const MaxBlocksPerUser = 1000

// SetMute stores or removes user's mute of m's conversation and returns the
// setting as stored. To mute, user must be a current member (not_found,
// not_member); unmuting needs no membership, so a mute never outlives its
// owner's wish. Errors: invalid (rules.ValidateMute), unavailable.
func (q *Queries) SetMute(ctx context.Context, user string, m *parleyv1.Mute) (*parleyv1.Mute, error) {
	if err := rules.ValidateMute(m, time.Now().UnixMilli()); err != nil {
		return nil, err
	}
	conv := m.GetConversationId()
	if m.GetRemove() {
		if err := q.st.Unmute(ctx, conv, user); err != nil {
			return nil, storeErr(q.log, "unmute", conv, err)
		}
		return &parleyv1.Mute{ConversationId: conv, Remove: true}, nil
	}
	if _, err := q.CheckMember(ctx, user, conv); err != nil {
		return nil, err
	}
	if err := q.st.SetMute(ctx, conv, user, m.GetUntil()); err != nil {
		return nil, storeErr(q.log, "mute", conv, err)
	}
	return &parleyv1.Mute{ConversationId: conv, Until: m.GetUntil()}, nil
}

// SetBlock stores or removes user's block of b.UserId and returns the
// setting as stored. Errors: invalid (rules.ValidateBlock), unavailable.
func (q *Queries) SetBlock(ctx context.Context, user string, b *parleyv1.Block) (*parleyv1.Block, error) {
	if err := rules.ValidateBlock(user, b); err != nil {
		return nil, err
	}
	if !b.GetRemove() {
		blocks, err := q.st.Blocks(ctx, user)
		if err != nil {
			return nil, storeErr(q.log, "blocks", user, err)
		}
		if len(blocks) >= MaxBlocksPerUser && !slices.Contains(blocks, b.GetUserId()) {
			return nil, wire.Errorf(wire.CodeTooManyBlocks, "you block %d users, the most allowed; unblock one first", len(blocks))
		}
	}
	if err := q.st.SetBlock(ctx, user, b.GetUserId(), !b.GetRemove()); err != nil {
		return nil, storeErr(q.log, "block", user, err)
	}
	q.notifyBlocks(ctx, user, b.GetUserId())
	return &parleyv1.Block{UserId: b.GetUserId(), Remove: b.GetRemove()}, nil
}

// BlockNotifier delivers a record to its conversation's sequencer and waits
// for the answer (Client.Call).
type BlockNotifier interface {
	Call(ctx context.Context, rec *parleyv1.IngressRecord) (*parleyv1.Reply, error)
}

// NotifyBlocksTo makes SetBlock tell the sequencer of the DM between the
// two users of each block or unblock it stores (a BlocksChanged record),
// before it answers: the sequencer caches a DM's blocks, and the record,
// ordered before every later send of the DM, makes the change apply to the
// very next send. Without a notifier the sequencer sees a change within
// blockCacheTTL. Set it before use.
func (q *Queries) NotifyBlocksTo(n BlockNotifier) { q.blocks = n }

// notifyBlocks sends the BlocksChanged record of a block by user of other.
// The block is stored whatever happens to it: a record that cannot be
// delivered (the DM's home region unreachable, the bus down) leaves the
// sequencer's cache to expire, and is logged.
func (q *Queries) notifyBlocks(ctx context.Context, user, other string) {
	if q.blocks == nil {
		return
	}
	rec := &parleyv1.IngressRecord{
		Origin:         &parleyv1.Origin{UserId: user},
		ConversationId: rules.DMID(user, other),
		Op:             &parleyv1.IngressRecord_BlocksChanged{BlocksChanged: &parleyv1.BlocksChanged{}},
	}
	if _, err := q.blocks.Call(ctx, rec); err != nil {
		q.log.Warn("block stored, but the DM's sequencer was not told; it applies to the DM's sends within "+blockCacheTTL.String(),
			"user", user, "other", other, "err", err)
	}
}

// Blocks returns the users user blocks, sorted.
func (q *Queries) Blocks(ctx context.Context, user string) ([]string, error) {
	out, err := q.st.Blocks(ctx, user)
	if err != nil {
		return nil, storeErr(q.log, "blocks", user, err)
	}
	return out, nil
}

// Muted returns which of users have conv muted now (one store read): the
// offline-push path leaves them out (push.Publisher.SkipUsers).
func (q *Queries) Muted(ctx context.Context, conv string, users []string) (map[string]bool, error) {
	mutes, err := q.st.Mutes(ctx, conv)
	if err != nil {
		return nil, storeErr(q.log, "mutes", conv, err)
	}
	now := time.Now().UnixMilli()
	out := make(map[string]bool, len(mutes))
	for _, u := range users {
		if until, ok := mutes[u]; ok && store.Muted(until, now) {
			out[u] = true
		}
	}
	return out, nil
}

// muteState fills cs.Muted and MutedUntil for user.
func (q *Queries) muteState(ctx context.Context, cs *parleyv1.ConversationState, user string) error {
	mutes, err := q.st.Mutes(ctx, cs.GetConversationId())
	if err != nil {
		return storeErr(q.log, "mutes", cs.GetConversationId(), err)
	}
	if until, ok := mutes[user]; ok && store.Muted(until, time.Now().UnixMilli()) {
		cs.Muted, cs.MutedUntil = true, until
	}
	return nil
}

// PresenceUnblocked returns which of targets viewer may see the presence of
// when presence is public (--presence-public): everyone but the users who
// block viewer.
func (q *Queries) PresenceUnblocked(ctx context.Context, viewer string, targets []string) (map[string]bool, error) {
	by, err := q.blockedBy(ctx, viewer)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(targets))
	for _, u := range targets {
		out[u] = !by[u]
	}
	return out, nil
}

// PresenceAudience returns whom the gateway pushes user's presence changes
// to besides explicit subscribers: user's DM peers except those user
// blocks; hidden is everyone user blocks, whose subscriptions (made before
// the block) get no pushes either.
func (q *Queries) PresenceAudience(ctx context.Context, user string) (peers []string, hidden map[string]bool, err error) {
	if peers, err = q.DMPeers(ctx, user); err != nil {
		return nil, nil, err
	}
	blocks, err := q.Blocks(ctx, user)
	if err != nil {
		return nil, nil, err
	}
	hidden = make(map[string]bool, len(blocks))
	for _, u := range blocks {
		hidden[u] = true
	}
	return slices.DeleteFunc(peers, func(p string) bool { return hidden[p] }), hidden, nil
}

// blockedBy returns the users who block user, as a set.
func (q *Queries) blockedBy(ctx context.Context, user string) (map[string]bool, error) {
	by, err := q.st.BlockedBy(ctx, user)
	if err != nil {
		return nil, storeErr(q.log, "blocked by", user, err)
	}
	out := make(map[string]bool, len(by))
	for _, u := range by {
		out[u] = true
	}
	return out, nil
}

// errBlocked is the answer to a write in a DM whose other user blocks the
// writer.
func errBlocked(conv string) error {
	return wire.Errorf(wire.CodeBlocked, "the other user of %s has blocked you", conv)
}

// checkNoBlockers refuses to put users in a group with caller when any of
// them blocks caller (blocked, naming them; one store read): a block keeps
// the blocked user from starting a DM, and a group made or grown for the
// purpose would be a way around it (found by an outside tryout). Groups the
// two already share are unaffected.
func (s *Sequencer) checkNoBlockers(ctx context.Context, caller string, users []string) error {
	by, err := s.st.BlockedBy(ctx, caller)
	if err != nil {
		return storeErr(s.log, "blocked by", caller, err)
	}
	var blockers []string
	for _, u := range users {
		if slices.Contains(by, u) {
			blockers = append(blockers, u)
		}
	}
	if len(blockers) > 0 {
		return wire.Errorf(wire.CodeBlocked, "%s cannot be added by you: blocked", strings.Join(blockers, ", "))
	}
	return nil
}

// blockCacheTTL bounds how long the sequencer trusts what it cached of a
// DM's blocks. A block or unblock reaches the DM's sequencer as a
// BlocksChanged record, ordered before every send published after it, so
// the cache is exact; the bound covers a BlocksChanged that could not be
// delivered (Queries.SetBlock stores the block whatever happens to it, e.g.
// while the DM's home region is unreachable).
const blockCacheTTL = time.Minute

// blockedSenders returns which of users the other user of DM c blocks (nil
// for a group, which blocks do not touch). What it reads is cached on c:
// one store read per user of the DM until the next BlocksChanged or
// blockCacheTTL, instead of one per batch of sends (a BlockedBy read per
// DM send was the most frequent Cassandra statement of the data path,
// issue 11).
func (c *conversation) blockedSenders(ctx context.Context, users []string) (map[string]bool, error) {
	if !rules.IsDM(c.id) {
		return nil, nil
	}
	if now := time.Now(); c.blockedBy == nil || now.Sub(c.blocksAt) > blockCacheTTL {
		c.blockedBy, c.blocksAt = make(map[string]bool, 2), now
	}
	var out map[string]bool
	for _, u := range users {
		peer := dmPeer(c.id, u)
		if peer == "" {
			continue // not a user of this DM: plan answers not_member
		}
		blocked, known := c.blockedBy[u]
		if !known {
			by, err := c.p.s.st.BlockedBy(ctx, u)
			if err != nil {
				return nil, storeErr(c.p.s.log, "blocked by", c.id, err)
			}
			blocked = slices.Contains(by, peer)
			c.blockedBy[u] = blocked
		}
		if blocked {
			if out == nil {
				out = map[string]bool{}
			}
			out[u] = true
		}
	}
	return out, nil
}

// blocksChanged applies a BlocksChanged record: the DM's cached blocks are
// dropped, so the next send reads them again. Only a user of the DM may
// send it (invalid otherwise).
func (c *conversation) blocksChanged(j *job, out *Batch) {
	if dmPeer(c.id, j.rec.GetOrigin().GetUserId()) == "" {
		c.fail(c.p.ctx, j, out, errInvalid("blocks_changed names a DM of other users, or a group"))
		return
	}
	c.blockedBy = nil
	c.reply(j, out, &parleyv1.Reply{})
}

// checkBlocked answers blocked when user may not write in DM c.
func (c *conversation) checkBlocked(ctx context.Context, user string) error {
	blocked, err := c.blockedSenders(ctx, []string{user})
	if err != nil {
		return err
	}
	if blocked[user] {
		return errBlocked(c.id)
	}
	return nil
}
