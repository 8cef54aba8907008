// Package store owns persistence: the conversation logs (the truth of what
// was said), conversations, members, inboxes and receipt pointers.
//
// Backends live in sub-packages (store/pebble, store/cassandra) and all
// pass one conformance suite, storetest.Run.
package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

var (
	// ErrSeqTaken is returned by Append when a seq it would write is already
	// stored: another sequencer owns (or owned) the conversation. The caller
	// reloads the head and re-sequences.
	ErrSeqTaken = errors.New("seq already taken")
	// ErrNotFound is returned for a conversation that does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists is returned by CreateConversation for an id already taken.
	ErrExists = errors.New("already exists")
	// ErrNotStored is wrapped by Append errors when nothing of the append
	// can have been stored (the store refused it before writing: too few
	// replicas alive, a request it could not parse), so "retry later" is
	// the truth. Any other Append error but ErrSeqTaken leaves the outcome
	// unknown: the messages may be stored (issue 14).
	ErrNotStored = errors.New("not stored")
)

// Conversation kinds.
const (
	KindDM    = "dm"
	KindGroup = "group"
)

// Member roles. A group has one owner (the creator, then whom ownership
// passed to), any number of admins, and members; a DM's two members are
// RoleMember.
const (
	RoleOwner  = "owner"
	RoleAdmin  = "admin"
	RoleMember = "member"
)

// Conversation is a conversation's metadata.
type Conversation struct {
	ID         string
	Kind       string // KindDM or KindGroup
	Title      string
	HomeRegion string
	CreatedBy  string
	CreatedAt  time.Time
}

// Member is one current member of a conversation. The member sees messages
// with seq >= JoinedSeq.
type Member struct {
	UserID    string
	JoinedSeq uint64
	Role      string
}

// Receipt holds one member's pointers in one conversation. They only move
// forward.
type Receipt struct {
	UserID       string
	DeliveredSeq uint64
	ReadSeq      uint64
}

// ConversationReceipts is the receipt pointers of one conversation: one
// element of MessageStore.AdvanceReceiptsOf.
type ConversationReceipts struct {
	ConversationID string
	Receipts       []Receipt
}

// Page selects a page of a conversation log. At most one of Before and After
// is non-zero. Before: seq < Before, newest first. After (or Forward): seq >
// After, oldest first. Neither: the newest page, newest first. Limit is
// 1..MaxLimit.
type Page struct {
	Before uint64
	After  uint64
	// Forward pages oldest first from After even when After is 0 (the very
	// start of the log); After > 0 implies it.
	Forward bool
	Limit   int
	// MinSeq hides messages below it (a member's JoinedSeq). 0 hides nothing.
	MinSeq uint64
}

// MaxLimit bounds Page.Limit.
const MaxLimit = 1000

// MessageStore is what the chat role and the read paths need from storage.
// Every method honours ctx. Implementations are safe for concurrent use.
type MessageStore interface {
	// Append stores msgs, which carry consecutive seqs of conversation conv
	// starting at msgs[0].Seq, durably (synced) and only if none of those seqs
	// is stored yet; otherwise it stores nothing and returns ErrSeqTaken.
	//
	// effects are the member rows and title the append changes, as the chat
	// role decided them (issue 15: the rules of who joins, who owns, which
	// role a member keeps live in runtime/chat, not here). Append persists
	// them as given, in order, and derives nothing from the events' kinds: a
	// CONVERSATION_CREATED or MEMBER_ADDED stored without effects changes no
	// member. Each effect's Seq must be the seq of one of msgs and the Seqs
	// must not decrease (otherwise Append returns an error and stores
	// nothing). Pebble writes the effects in the append's one batch;
	// Cassandra right after the conditional batch that stores the messages
	// (the commit point), each write at USING TIMESTAMP = its Seq, so an
	// effect written again later never undoes a newer one; when the
	// messages were stored but an effect failed, Append returns an error.
	//
	// EDITED, DELETED and REACTION events apply too, as ApplyChange describes; their
	// target must be stored (ErrNotFound otherwise). Pebble applies every
	// effect in the append's one batch; Cassandra after the conditional
	// write that stores the messages (the commit point), so a failure
	// between the two leaves an effect for ApplyChange to repair.
	Append(ctx context.Context, conv string, msgs []*parleyv1.Message, effects ...Effect) error
	// ApplyChange applies the stored EDITED, DELETED or REACTION event ev to its
	// target message (seq ev.TargetSeq) as Changed describes, and keeps the
	// text of the target's versions in one place: the text of the EDITED
	// event ev supersedes (the target's previous change_seq), or of ev
	// itself when a later change already applied, is cleared. It is
	// idempotent: an event already applied changes nothing. A missing
	// target wraps ErrNotFound. Append calls it for the change events it
	// stores; the chat role calls it to repair an effect an earlier Append
	// could not apply.
	ApplyChange(ctx context.Context, conv string, ev *parleyv1.Message) error
	// Head returns the highest stored seq of conv, 0 when it has none.
	Head(ctx context.Context, conv string) (uint64, error)
	// Messages returns a page of conv's log and whether more messages exist
	// beyond the page in the paging direction.
	Messages(ctx context.Context, conv string, p Page) (msgs []*parleyv1.Message, hasMore bool, err error)
	// Message returns the message at seq, or ErrNotFound.
	Message(ctx context.Context, conv string, seq uint64) (*parleyv1.Message, error)

	// CreateConversation stores c, or returns ErrExists if c.ID is taken.
	// Members are added by the effects of the CONVERSATION_CREATED event's
	// Append.
	CreateConversation(ctx context.Context, c Conversation) error
	// Conversation returns conversation id, or ErrNotFound.
	Conversation(ctx context.Context, id string) (Conversation, error)
	// Members returns the current members of conv, by user id.
	Members(ctx context.Context, conv string) ([]Member, error)
	// Member returns one member; ok is false when user is not a current member.
	Member(ctx context.Context, conv, user string) (m Member, ok bool, err error)
	// Inbox returns the ids of every conversation user belongs or belonged to.
	Inbox(ctx context.Context, user string) ([]string, error)

	// AdvanceReceipt raises user's delivered or read pointer in conv to seq
	// (kind RECEIPT_KIND_DELIVERED or RECEIPT_KIND_READ); a lower or equal
	// seq changes nothing. A read pointer also raises the delivered pointer.
	AdvanceReceipt(ctx context.Context, conv, user string, kind parleyv1.ReceiptKind, seq uint64) error
	// AdvanceReceipts raises, for each r in rs, r.UserID's read pointer in
	// conv to r.ReadSeq and delivered pointer to r.DeliveredSeq, as
	// AdvanceReceipt would (lower seqs change nothing; 0 is no change), in
	// as few writes as the backend allows (Cassandra: one single-partition
	// batch per up to 100 users). An invalid id fails the call before
	// anything is written.
	AdvanceReceipts(ctx context.Context, conv string, rs []Receipt) error
	// AdvanceReceiptsOf does what AdvanceReceipts does for each element of
	// cs, in as few requests as the backend allows (Cassandra: unlogged
	// batches spanning up to 10 conversations and 100 users, several in
	// flight). It returns one error per element of cs, nil where all of
	// that conversation's pointers were written; an invalid id fails its
	// own element, before any of that element is written. A failed element
	// may be partly written: pointers only rise, so writing it again is
	// safe. The chat role persists the pointers it accumulated this way.
	AdvanceReceiptsOf(ctx context.Context, cs []ConversationReceipts) []error
	// Receipts returns every stored receipt pointer of conv.
	Receipts(ctx context.Context, conv string) ([]Receipt, error)
	// Receipt returns user's pointers in conv (zero when none).
	Receipt(ctx context.Context, conv, user string) (Receipt, error)

	Prefs

	// Close flushes and releases the store.
	Close() error
}

// Prefs are each user's own settings about conversations and other users
// (issue 13, mute and block). They are not sequenced events: they belong to
// one user, not to a conversation's log, and are written when asked. Both
// backends implement them; ids are checked like every other id (an empty
// one is an error and nothing is written).
type Prefs interface {
	// SetMute mutes conv for user until untilMs (Unix milliseconds; 0:
	// until unmuted), replacing any earlier mute of conv by user.
	SetMute(ctx context.Context, conv, user string, untilMs int64) error
	// Unmute removes user's mute of conv; none stored is not an error.
	Unmute(ctx context.Context, conv, user string) error
	// Mutes returns the mutes of conv, user id -> until (Unix ms, 0: no
	// end), expired ones included: the caller compares with its clock.
	Mutes(ctx context.Context, conv string) (map[string]int64, error)

	// SetBlock makes user block other (on) or stop blocking it (!on).
	// Repeating either changes nothing.
	SetBlock(ctx context.Context, user, other string, on bool) error
	// Blocks returns the users user blocks, sorted.
	Blocks(ctx context.Context, user string) ([]string, error)
	// BlockedBy returns the users who block user, sorted.
	BlockedBy(ctx context.Context, user string) ([]string, error)
}

// Muted reports whether a mute until untilMs (Prefs.Mutes; 0: no end) is
// in effect at nowMs.
func Muted(untilMs, nowMs int64) bool { return untilMs == 0 || untilMs > nowMs }

// UserHomes stores each user's home region: the region whose sequencers
// home the groups that user creates and, by the rule in runtime/region, the
// DMs they are the lower user id of (docs/multi-region.md). Both backends
// implement it.
type UserHomes interface {
	// UserHome returns user's stored home region, or an error wrapping
	// ErrNotFound when none is stored.
	UserHome(ctx context.Context, user string) (string, error)
	// SetUserHome stores region as user's home. With onlyIfAbsent it keeps
	// a home that is already stored (the first connection's region wins).
	// It returns the home stored afterwards.
	SetUserHome(ctx context.Context, user, region string, onlyIfAbsent bool) (string, error)
}

// CrossRegionReads are reads at a quorum of every datacenter's replicas
// instead of the local one: for the rare lookups where a row another region
// wrote moments ago must be seen (is this DM already homed elsewhere? where
// is that user homed?). They cost a round trip to another region and fail
// when it is unreachable; callers fall back to what the local datacenter
// knows. With one replica per datacenter a quorum read sees every write
// acknowledged anywhere; with more it narrows, not closes, the window of
// replication lag. Only the Cassandra backend implements it (one region
// has nothing to cross).
type CrossRegionReads interface {
	// ConversationAnyRegion is Conversation at a cross-region quorum.
	ConversationAnyRegion(ctx context.Context, id string) (Conversation, error)
	// UserHomeAnyRegion is UserHomes.UserHome at a cross-region quorum.
	UserHomeAnyRegion(ctx context.Context, user string) (string, error)
}

// EffectKind says what an Effect changes.
type EffectKind uint8

// Effect kinds.
const (
	// EffectPutMember writes Member's row (JoinedSeq and Role as given,
	// replacing any row of Member.UserID) and adds the conversation to
	// Member.UserID's inbox: a join, a role change, an ownership transfer.
	EffectPutMember EffectKind = iota + 1
	// EffectRemoveMember deletes Member.UserID's row (the inbox entry
	// stays: a removed user still lists the conversation it left). Removing
	// a user who is not a member changes nothing.
	EffectRemoveMember
	// EffectRename sets the conversation's Title (nothing else of it).
	EffectRename
)

// Effect is one change an Append persists beside its messages: a member
// row written or deleted, or the title set. The chat role decides them
// (runtime/chat/effects.go); the backends only persist them. Build one with
// PutMember, RemoveMember or Rename.
type Effect struct {
	Kind EffectKind
	// Seq is the seq of the event (one of the append's messages) that
	// causes the effect. Cassandra writes the effect at USING TIMESTAMP =
	// Seq, so a late or repeated write never undoes a newer one.
	Seq uint64
	// Member is the row EffectPutMember writes; EffectRemoveMember uses
	// its UserID only.
	Member Member
	// Title is the title EffectRename sets (may be empty).
	Title string
}

// PutMember is the effect of the event at seq that leaves m as m's row.
func PutMember(seq uint64, m Member) Effect {
	return Effect{Kind: EffectPutMember, Seq: seq, Member: m}
}

// RemoveMember is the effect of the event at seq that removes user.
func RemoveMember(seq uint64, user string) Effect {
	return Effect{Kind: EffectRemoveMember, Seq: seq, Member: Member{UserID: user}}
}

// Rename is the effect of the RENAMED event at seq that sets title.
func Rename(seq uint64, title string) Effect {
	return Effect{Kind: EffectRename, Seq: seq, Title: title}
}

// CheckEffects checks effects against an append of seqs first..last: each
// of a known kind, its Seq in first..last and not below the one before,
// a member effect naming a user (a non-empty id; the backends check the
// id's bytes), a written row a role and a JoinedSeq of 1..Seq. It returns
// nil or an error saying which effect is wrong; both backends call it
// before they write anything.
func CheckEffects(first, last uint64, effects []Effect) error {
	prev := first
	for i, e := range effects {
		switch {
		case e.Seq < first || e.Seq > last:
			return fmt.Errorf("effect %d: seq %d is not one of the append's seqs %d..%d", i, e.Seq, first, last)
		case e.Seq < prev:
			return fmt.Errorf("effect %d: seq %d is below the seq %d of the effect before it", i, e.Seq, prev)
		case e.Kind == EffectRename:
		case e.Kind != EffectPutMember && e.Kind != EffectRemoveMember:
			return fmt.Errorf("effect %d (seq %d): unknown kind %d", i, e.Seq, e.Kind)
		case e.Member.UserID == "":
			return fmt.Errorf("effect %d (seq %d): empty user id", i, e.Seq)
		case e.Kind == EffectPutMember && (e.Member.Role == "" || e.Member.JoinedSeq == 0 || e.Member.JoinedSeq > e.Seq):
			return fmt.Errorf("effect %d (seq %d): member %s needs a role and a joined seq of 1..%d, has %q and %d",
				i, e.Seq, e.Member.UserID, e.Seq, e.Member.Role, e.Member.JoinedSeq)
		}
		prev = e.Seq
	}
	return nil
}

// IsChange reports whether k is a change to an earlier message (EDITED,
// DELETED or REACTION), whose effect Append and ApplyChange apply to its
// target.
func IsChange(k parleyv1.MessageKind) bool {
	switch k {
	case parleyv1.MessageKind_MESSAGE_KIND_EDITED, parleyv1.MessageKind_MESSAGE_KIND_DELETED,
		parleyv1.MessageKind_MESSAGE_KIND_REACTION:
		return true
	}
	return false
}

// Changed returns target as change event ev leaves it, or nil when ev
// changes nothing: target is not a text or media message, ev is not a
// change of it, or a change at ev's seq or later already applied (so a
// replay never undoes a later change). EDITED sets the text, the mentions
// and edited_at (ev's created_at) of a text message that is not deleted;
// DELETED clears text, media, a reply's quote, the mentions and the
// reactions and sets deleted. Both set change_seq to ev's seq and apply
// only when target.ChangeSeq < ev.Seq.
//
// REACTION adds ev's sender to the users of ev's emoji (a new emoji goes
// last), or with reaction_removed takes it out (an emoji nobody has left
// disappears), on a message that is not deleted; it sets reaction_seq to
// ev's seq and applies only when target.ReactionSeq < ev.Seq. The limits
// on reactions are the sequencer's: Changed applies what it is given.
// target is not modified.
func Changed(target, ev *parleyv1.Message) *parleyv1.Message {
	k := target.GetKind()
	if k != parleyv1.MessageKind_MESSAGE_KIND_TEXT && k != parleyv1.MessageKind_MESSAGE_KIND_MEDIA {
		return nil
	}
	if ev.GetTargetSeq() != target.GetSeq() {
		return nil
	}
	if ev.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_REACTION {
		if target.GetDeleted() || target.GetReactionSeq() >= ev.GetSeq() {
			return nil
		}
		out := proto.CloneOf(target)
		out.Reactions = React(target.GetReactions(), ev.GetEmoji(), ev.GetSenderId(), !ev.GetReactionRemoved())
		out.ReactionSeq = ev.GetSeq()
		return out
	}
	if target.GetChangeSeq() >= ev.GetSeq() {
		return nil
	}
	out := proto.CloneOf(target)
	switch ev.GetKind() {
	case parleyv1.MessageKind_MESSAGE_KIND_EDITED:
		if target.GetDeleted() || k != parleyv1.MessageKind_MESSAGE_KIND_TEXT {
			return nil
		}
		out.Text, out.EditedAt, out.Mentions = ev.GetText(), ev.GetCreatedAt(), ev.GetMentions()
	case parleyv1.MessageKind_MESSAGE_KIND_DELETED:
		out.Text, out.Media, out.ReplyTo, out.Mentions, out.Reactions, out.Deleted = "", nil, nil, nil, nil, true
	default:
		return nil
	}
	out.ChangeSeq = ev.GetSeq()
	return out
}

// React returns the stored reactions rs (Reaction.user_ids filled) with
// user added to emoji's users (add) or taken out of them, each count set to
// its number of users; an emoji with no users left is dropped, a new one
// goes last. Adding a user already there, or removing one who is not,
// changes nothing. rs is not modified.
func React(rs []*parleyv1.Reaction, emoji, user string, add bool) []*parleyv1.Reaction {
	out := make([]*parleyv1.Reaction, 0, len(rs)+1)
	found := false
	for _, r := range rs {
		users := r.GetUserIds()
		if r.GetEmoji() == emoji {
			found = true
			switch has := slices.Contains(users, user); {
			case add && !has:
				users = append(slices.Clone(users), user)
			case !add && has:
				users = slices.DeleteFunc(slices.Clone(users), func(u string) bool { return u == user })
			}
		}
		if len(users) == 0 {
			continue
		}
		out = append(out, &parleyv1.Reaction{Emoji: r.GetEmoji(), Count: uint32(len(users)), UserIds: users})
	}
	if add && !found {
		out = append(out, &parleyv1.Reaction{Emoji: emoji, Count: 1, UserIds: []string{user}})
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
