package chat

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

// inboxWorkers bounds concurrent per-conversation loads of one inbox or sync.
const inboxWorkers = 8

// Queries serves the read paths straight from the store, with membership
// checks: not_found (*wire.Error) when the conversation does not exist,
// not_member when the caller is not a current member, invalid for bad
// arguments, unavailable when the store fails. Context errors are returned
// as they are. It is safe for concurrent use.
//
// Receipt pointers are read from the store, which the sequencer updates at
// most once per Config.ReceiptFlush: they may lag by that much.
type Queries struct {
	st     store.MessageStore
	log    *slog.Logger
	blocks BlockNotifier // nil: the sequencer sees blocks within blockCacheTTL
}

// NewQueries returns the read paths over st.
func NewQueries(st store.MessageStore) *Queries {
	return &Queries{st: st, log: slog.Default().With("component", "chat.queries")}
}

// CheckMember returns user's membership of conv: not_found if conv does not
// exist, not_member if user is not a current member. A DM whose id does not
// name userID is not_member whether it exists or not, so nobody learns who
// has a DM with whom (an outside tryout read it from not_found vs
// not_member).
func (q *Queries) CheckMember(ctx context.Context, userID, conv string) (store.Member, error) {
	if err := rules.CheckConversationID(conv); err != nil {
		return store.Member{}, err
	}
	if a, b, ok := rules.ParseDM(conv); ok && userID != a && userID != b {
		return store.Member{}, wire.Errorf(wire.CodeNotMember, "not a member of %s", conv)
	}
	if _, err := q.st.Conversation(ctx, conv); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return store.Member{}, wire.Errorf(wire.CodeNotFound, "conversation %s does not exist", conv)
		}
		return store.Member{}, storeErr(q.log, "conversation", conv, err)
	}
	m, ok, err := q.st.Member(ctx, conv, userID)
	if err != nil {
		return store.Member{}, storeErr(q.log, "member", conv, err)
	}
	if !ok {
		return store.Member{}, wire.Errorf(wire.CodeNotMember, "not a member of %s", conv)
	}
	return m, nil
}

// Members returns conv's current members for userID, who must be one,
// each with its role (roleOf: the owner, with ownership passed on once the
// creator left; admins; members; a DM's two are members): the owner first,
// then admins, then members, each by joined_seq.
func (q *Queries) Members(ctx context.Context, userID, conv string) ([]store.Member, error) {
	if _, err := q.CheckMember(ctx, userID, conv); err != nil {
		return nil, err
	}
	ms, err := q.st.Members(ctx, conv)
	if err != nil {
		return nil, storeErr(q.log, "members", conv, err)
	}
	byID := make(map[string]store.Member, len(ms))
	for _, m := range ms {
		byID[m.UserID] = m
	}
	owner := ""
	if rules.IsGroup(conv) {
		owner = ownerOf(byID)
	}
	for i := range ms {
		if rules.IsGroup(conv) {
			ms[i].Role = roleWith(ms[i], owner)
		} else {
			ms[i].Role = store.RoleMember
		}
	}
	rank := map[string]int{store.RoleOwner: 0, store.RoleAdmin: 1, store.RoleMember: 2}
	slices.SortFunc(ms, func(a, b store.Member) int {
		switch {
		case a.Role != b.Role:
			return cmp.Compare(rank[a.Role], rank[b.Role])
		case a.JoinedSeq != b.JoinedSeq:
			return cmp.Compare(a.JoinedSeq, b.JoinedSeq)
		}
		return strings.Compare(a.UserID, b.UserID)
	})
	return ms, nil
}

// MemberIDs returns the user ids of conv's current members, in the store's
// order, without checking the caller (the gateway's typing fan-out asks
// after CheckMember). A store failure is returned wrapped, not logged: the
// caller decides what a lost typing notice is worth.
func (q *Queries) MemberIDs(ctx context.Context, conv string) ([]string, error) {
	ms, err := q.st.Members(ctx, conv)
	if err != nil {
		return nil, fmt.Errorf("members of %s: %w", conv, err)
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.UserID
	}
	return ids, nil
}

// pageLimit maps a requested page size: 0 means 50, above 200 is invalid.
func pageLimit(limit uint32) (int, error) {
	switch {
	case limit == 0:
		return wire.DefaultPageSize, nil
	case limit > wire.MaxPageSize:
		return 0, wire.Errorf(wire.CodeInvalid, "limit %d is over the maximum of %d", limit, wire.MaxPageSize)
	}
	return int(limit), nil
}

// MaxPageBytes bounds the messages of one reply: a history page, or all the
// pages of one sync together, stop taking messages once their size (see
// messageSize) reaches it, and say has_more, so that a client paging through
// large messages gets several modest replies instead of one of megabytes.
// A history page still holds at least one message, so paging always moves.
const MaxPageBytes = 1 << 20

// messageSize estimates m's encoded size in either subprotocol: its
// Protobuf size plus what protojson adds for the escapes of its text (a
// control byte becomes \u00XX, six bytes; a quote or backslash two), which
// can make the JSON of a message of control bytes six times its Protobuf.
// Field names add a bounded overhead per message in JSON and are ignored.
func messageSize(m *parleyv1.Message) int {
	n := proto.Size(m)
	for i := 0; i < len(m.GetText()); i++ {
		switch c := m.GetText()[i]; {
		case c < ' ':
			n += 5
		case c == '"' || c == '\\':
			n++
		}
	}
	return n
}

// pageBudget is the byte budget (MaxPageBytes) shared by the pages of one
// reply. It is safe for concurrent use (sync loads pages in parallel).
type pageBudget struct {
	mu   sync.Mutex
	left int
}

func newPageBudget() *pageBudget { return &pageBudget{left: MaxPageBytes} }

// exhausted reports whether nothing more fits.
func (b *pageBudget) exhausted() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.left <= 0
}

// take returns the longest prefix of msgs that fits the budget and charges
// it. A message is taken while any budget is left, so the reply passes the
// budget by at most one message, and a fresh budget always takes one.
func (b *pageBudget) take(msgs []*parleyv1.Message) []*parleyv1.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, m := range msgs {
		if b.left <= 0 {
			return msgs[:i]
		}
		b.left -= messageSize(m)
	}
	return msgs
}

// History returns a page of conv's log as the caller may see it: from the
// seq at which it joined. before (> 0): seq < before, newest first; after
// (present, even 0): seq > after, oldest first, so after = 0 pages from the
// very start; neither: the newest page, newest first. before > 0 with after
// present is invalid. The page ends early with has_more when its messages
// pass MaxPageBytes.
func (q *Queries) History(ctx context.Context, userID string, h *parleyv1.History) (*parleyv1.HistoryResult, error) {
	if h.GetBefore() != 0 && h.After != nil {
		return nil, errInvalid("before and after are exclusive")
	}
	limit, err := pageLimit(h.GetLimit())
	if err != nil {
		return nil, err
	}
	m, err := q.CheckMember(ctx, userID, h.GetConversationId())
	if err != nil {
		return nil, err
	}
	msgs, more, err := q.st.Messages(ctx, h.GetConversationId(), store.Page{
		Before: h.GetBefore(), After: h.GetAfter(), Forward: h.After != nil, Limit: limit, MinSeq: m.JoinedSeq,
	})
	if err != nil {
		return nil, storeErr(q.log, "history", h.GetConversationId(), err)
	}
	if kept := newPageBudget().take(msgs); len(kept) < len(msgs) {
		clear(msgs[len(kept):])
		msgs, more = kept, true
	}
	if err := q.fillQuotes(ctx, h.GetConversationId(), msgs, m.JoinedSeq); err != nil {
		return nil, err
	}
	viewReactions(msgs, userID)
	return &parleyv1.HistoryResult{ConversationId: h.GetConversationId(), Messages: msgs, HasMore: more, JoinedSeq: m.JoinedSeq}, nil
}

// Inbox returns the state of every conversation userID belongs or belonged
// to, most recently active first (see state for the fields).
func (q *Queries) Inbox(ctx context.Context, userID string) ([]*parleyv1.ConversationState, error) {
	ids, err := q.st.Inbox(ctx, userID)
	if err != nil {
		return nil, storeErr(q.log, "inbox", userID, err)
	}
	states, err := q.states(ctx, userID, ids, nil, 0, nil)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(states, func(a, b *parleyv1.ConversationState) int {
		// Newest activity first; conversations without a visible message last.
		return cmpInt64(b.GetLastMessage().GetCreatedAt(), a.GetLastMessage().GetCreatedAt())
	})
	return states, nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Sync answers a device catching up. With no cursors: the inbox heads (as
// Inbox). With cursors (at most 1000): for each cursor's conversation in the
// user's inbox, its state plus the first page of messages after the cursor
// (oldest first, limit 1..200, 0 means 50) and has_more; cursors naming
// conversations outside the inbox are left out.
func (q *Queries) Sync(ctx context.Context, userID string, s *parleyv1.Sync) (*parleyv1.SyncResult, error) {
	limit, err := pageLimit(s.GetLimit())
	if err != nil {
		return nil, err
	}
	if len(s.GetCursors()) > MaxSyncCursors {
		return nil, wire.Errorf(wire.CodeInvalid, "%d cursors; at most %d", len(s.GetCursors()), MaxSyncCursors)
	}
	if len(s.GetCursors()) == 0 {
		states, err := q.Inbox(ctx, userID)
		if err != nil {
			return nil, err
		}
		return &parleyv1.SyncResult{Conversations: states}, nil
	}
	ids, err := q.st.Inbox(ctx, userID)
	if err != nil {
		return nil, storeErr(q.log, "inbox", userID, err)
	}
	inbox := make(map[string]bool, len(ids))
	for _, id := range ids {
		inbox[id] = true
	}
	cursors := make(map[string]uint64, len(s.GetCursors()))
	var want []string
	for _, c := range s.GetCursors() {
		id := c.GetConversationId()
		if !inbox[id] {
			continue
		}
		if _, dup := cursors[id]; !dup {
			want = append(want, id)
		}
		cursors[id] = max(cursors[id], c.GetSeq())
	}
	states, err := q.states(ctx, userID, want, cursors, limit, newPageBudget())
	if err != nil {
		return nil, err
	}
	return &parleyv1.SyncResult{Conversations: states}, nil
}

// states loads the ConversationState of each id (bounded parallelism). With
// cursors, each also gets the page after its cursor, all pages within
// budget.
func (q *Queries) states(ctx context.Context, userID string, ids []string, cursors map[string]uint64, limit int, budget *pageBudget) ([]*parleyv1.ConversationState, error) {
	out := make([]*parleyv1.ConversationState, len(ids))
	errs := make([]error, len(ids))
	sem := make(chan struct{}, inboxWorkers)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			cur, withPage := cursors[id]
			out[i], errs[i] = q.state(ctx, userID, id, withPage, cur, limit, budget)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(out, func(s *parleyv1.ConversationState) bool { return s == nil }), nil
}

// state is one conversation as userID sees it. For a current member: kind,
// title, head, pointers, joined_seq, unread and the last message, plus with
// withPage the messages after cursor. For a former member (the inbox keeps
// the conversations a user left) only id, kind, title and pointers, with
// joined_seq 0 — the sign that the user is no longer a member — and no head
// or messages, since nothing sequenced after its removal is its business.
//
// unread counts the text and media messages of other members above
// max(read, joined_seq-1): not system events, not edits or deletes, not
// deleted messages, not the member's own messages (issue 13, honest
// inbox). It reads at most unreadScan messages
// below the head; when more seqs than that are unread, those beyond are
// counted as unread messages (an upper bound, where clients show "99+").
//
// The page takes what budget allows: once it is spent, the page is cut (or
// not read at all) and has_more tells the client to pull the rest.
func (q *Queries) state(ctx context.Context, userID, id string, withPage bool, cursor uint64, limit int, budget *pageBudget) (*parleyv1.ConversationState, error) {
	conv, err := q.st.Conversation(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, storeErr(q.log, "conversation", id, err)
	}
	cs := &parleyv1.ConversationState{ConversationId: id, Kind: conv.Kind, Title: conv.Title}
	r, err := q.st.Receipt(ctx, id, userID)
	if err != nil {
		return nil, storeErr(q.log, "receipt", id, err)
	}
	cs.ReadSeq, cs.DeliveredSeq = r.ReadSeq, r.DeliveredSeq
	m, ok, err := q.st.Member(ctx, id, userID)
	if err != nil {
		return nil, storeErr(q.log, "member", id, err)
	}
	if !ok {
		return cs, nil
	}
	cs.JoinedSeq = m.JoinedSeq
	if err := q.muteState(ctx, cs, userID); err != nil {
		return nil, err
	}
	head, err := q.st.Head(ctx, id)
	if err != nil {
		return nil, storeErr(q.log, "head", id, err)
	}
	cs.HeadSeq = head
	seen := max(r.ReadSeq, m.JoinedSeq-min(m.JoinedSeq, 1))
	if cs.Unread, cs.Mentions, err = q.unread(ctx, id, userID, seen, head); err != nil {
		return nil, err
	}
	if head >= m.JoinedSeq && head > 0 {
		last, err := q.st.Message(ctx, id, head)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, storeErr(q.log, "last message", id, err)
		}
		if store.IsChange(last.GetKind()) {
			// An edit, delete or reaction of an earlier message is not new
			// activity: the inbox shows (and sorts by) the newest message
			// before it, or none past the look-back (a burst of reactions
			// must not bring a conversation to the top).
			if last, err = q.lastBefore(ctx, id, head, m.JoinedSeq); err != nil {
				return nil, err
			}
		}
		if last != nil {
			if err := q.fillQuotes(ctx, id, []*parleyv1.Message{last}, m.JoinedSeq); err != nil {
				return nil, err
			}
			viewReactions([]*parleyv1.Message{last}, userID)
			cs.LastMessage = last
		}
	}
	if withPage && head > cursor {
		if budget.exhausted() {
			// Other pages spent the reply's budget: the client pulls this
			// conversation's messages itself (it knows the head).
			cs.HasMore = true
			return cs, nil
		}
		after := max(cursor, m.JoinedSeq-min(m.JoinedSeq, 1))
		page := store.Page{After: after, Forward: true, Limit: limit, MinSeq: m.JoinedSeq}
		msgs, more, err := q.st.Messages(ctx, id, page)
		if err != nil {
			return nil, storeErr(q.log, "sync page", id, err)
		}
		if kept := budget.take(msgs); len(kept) < len(msgs) {
			clear(msgs[len(kept):])
			msgs, more = kept, true
		}
		if err := q.fillQuotes(ctx, id, msgs, m.JoinedSeq); err != nil {
			return nil, err
		}
		viewReactions(msgs, userID)
		cs.Messages, cs.HasMore = msgs, more
	}
	return cs, nil
}

// fillQuotes gives each reply among msgs (nil entries are skipped) the text
// of the message it quotes as that message is now: a stored reply keeps only
// the seq, sender and media flag of its original (chat.StoredQuote), so an
// edit of the original shows in its quotes and a delete leaves no copy of
// the text anywhere. Cut to MaxQuoteRunes; deleted set for a deleted
// original; no text for an original from before the reader joined (joined:
// the reader's joined_seq; it never saw it). Originals among msgs are used
// as they are, the others read once each.
func (q *Queries) fillQuotes(ctx context.Context, conv string, msgs []*parleyv1.Message, joined uint64) error {
	var bySeq, read map[uint64]*parleyv1.Message
	for _, m := range msgs {
		qt := m.GetReplyTo()
		if qt == nil || qt.GetText() != "" {
			continue
		}
		if qt.GetSeq() < joined {
			continue
		}
		if bySeq == nil {
			bySeq, read = make(map[uint64]*parleyv1.Message, len(msgs)), map[uint64]*parleyv1.Message{}
			for _, o := range msgs {
				if o != nil {
					bySeq[o.GetSeq()] = o
				}
			}
		}
		orig := bySeq[qt.GetSeq()]
		if orig == nil {
			orig = read[qt.GetSeq()]
		}
		if orig == nil {
			o, err := q.st.Message(ctx, conv, qt.GetSeq())
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return storeErr(q.log, "quoted message", conv, err)
			}
			orig, read[qt.GetSeq()] = o, o
		}
		FillQuote(qt, orig)
	}
	return nil
}

// unreadScan bounds the messages one conversation's unread count reads.
const unreadScan = 200

// unread counts userID's unread messages in conv: text and media from other
// senders with seq in (seen, head], reading at most the newest unreadScan;
// seqs below those count as unread messages (see state). mentions counts
// those of the messages read that mention userID (Message.mentions).
func (q *Queries) unread(ctx context.Context, conv, userID string, seen, head uint64) (count, mentions uint64, err error) {
	if head <= seen {
		return 0, 0, nil
	}
	span := head - seen
	n := min(span, unreadScan)
	msgs, _, err := q.st.Messages(ctx, conv, store.Page{After: head - n, Forward: true, Limit: int(n)})
	if err != nil {
		return 0, 0, storeErr(q.log, "unread messages", conv, err)
	}
	count = span - n
	for _, m := range msgs {
		if m.GetSenderId() != userID && countsAsUnread(m.GetKind()) && !m.GetDeleted() {
			count++
			if slices.Contains(m.GetMentions(), userID) {
				mentions++
			}
		}
	}
	return count, mentions, nil
}

// countsAsUnread reports whether a message of kind k is one a person wrote
// (text, media), as opposed to a system event.
func countsAsUnread(k parleyv1.MessageKind) bool {
	return k == parleyv1.MessageKind_MESSAGE_KIND_TEXT || k == parleyv1.MessageKind_MESSAGE_KIND_MEDIA
}

// ReadBy returns the receipts of conv's current members who have read seq
// (read_seq >= seq). The caller must be a member; seq must be positive.
func (q *Queries) ReadBy(ctx context.Context, userID, conv string, seq uint64) ([]store.Receipt, error) {
	if seq == 0 {
		return nil, errInvalid("seq must be positive")
	}
	if _, err := q.CheckMember(ctx, userID, conv); err != nil {
		return nil, err
	}
	members, err := q.st.Members(ctx, conv)
	if err != nil {
		return nil, storeErr(q.log, "members", conv, err)
	}
	current := make(map[string]bool, len(members))
	for _, m := range members {
		current[m.UserID] = true
	}
	rs, err := q.st.Receipts(ctx, conv)
	if err != nil {
		return nil, storeErr(q.log, "receipts", conv, err)
	}
	out := make([]store.Receipt, 0, len(rs))
	for _, r := range rs {
		if current[r.UserID] && r.ReadSeq >= seq {
			out = append(out, r)
		}
	}
	return out, nil
}

// PresenceVisible returns which of targets viewer may see the presence and
// last-seen time of (issue 13, presence privacy): viewer itself, and users
// who share a conversation with viewer now — a DM (DMs are never left), or
// a group both are current members of — unless they block viewer (mute and
// block). It reads who blocks viewer and viewer's inbox once, and
// for each target not settled by a DM, the target's inbox and the
// memberships of the groups both have been in.
func (q *Queries) PresenceVisible(ctx context.Context, viewer string, targets []string) (map[string]bool, error) {
	by, err := q.blockedBy(ctx, viewer)
	if err != nil {
		return nil, err
	}
	mine, err := q.st.Inbox(ctx, viewer)
	if err != nil {
		return nil, storeErr(q.log, "inbox", viewer, err)
	}
	in := make(map[string]bool, len(mine))
	for _, id := range mine {
		in[id] = true
	}
	member := func(conv, user string) (bool, error) {
		_, ok, err := q.st.Member(ctx, conv, user)
		if err != nil {
			return false, storeErr(q.log, "member", conv, err)
		}
		return ok, nil
	}
	out := make(map[string]bool, len(targets))
	for _, u := range targets {
		if _, done := out[u]; done {
			continue
		}
		out[u] = false
		if by[u] {
			continue // u blocks viewer: unknown, as for a stranger
		}
		if u == viewer || in[rules.DMID(viewer, u)] {
			out[u] = true
			continue
		}
		theirs, err := q.st.Inbox(ctx, u)
		if err != nil {
			return nil, storeErr(q.log, "inbox", u, err)
		}
		for _, id := range theirs {
			if !in[id] || rules.IsDM(id) {
				continue
			}
			both, err := member(id, viewer)
			if err == nil && both {
				both, err = member(id, u)
			}
			if err != nil {
				return nil, err
			}
			if both {
				out[u] = true
				break
			}
		}
	}
	return out, nil
}

// DMPeers returns the users userID has a DM with (from its inbox).
func (q *Queries) DMPeers(ctx context.Context, userID string) ([]string, error) {
	ids, err := q.st.Inbox(ctx, userID)
	if err != nil {
		return nil, storeErr(q.log, "inbox", userID, err)
	}
	var peers []string
	for _, id := range ids {
		if p := dmPeer(id, userID); p != "" {
			peers = append(peers, p)
		}
	}
	return peers, nil
}

// lastChangeLookback bounds how far back the inbox looks past edit, delete
// and reaction events for a conversation's last message: pages of
// lastChangePage, at most this many messages in all.
const (
	lastChangeLookback = 1000
	lastChangePage     = 100
)

// lastBefore returns the newest message of conv below seq (and at or above
// minSeq) that is not an edit, delete or reaction event, looking back at most
// lastChangeLookback messages; nil when there is none.
func (q *Queries) lastBefore(ctx context.Context, conv string, seq, minSeq uint64) (*parleyv1.Message, error) {
	for looked := 0; looked < lastChangeLookback && seq > max(minSeq, 1); looked += lastChangePage {
		msgs, _, err := q.st.Messages(ctx, conv, store.Page{Before: seq, Limit: lastChangePage, MinSeq: minSeq})
		if err != nil {
			return nil, storeErr(q.log, "last message", conv, err)
		}
		for _, m := range msgs {
			if !store.IsChange(m.GetKind()) {
				return m, nil
			}
			seq = m.GetSeq()
		}
		if len(msgs) < lastChangePage {
			return nil, nil
		}
	}
	return nil, nil
}
