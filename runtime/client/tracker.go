package client

import (
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// tracker decides which messages the application sees, in order and exactly
// once. Per conversation it keeps a cursor: the highest seq such that every
// message the user may see up to it has been handed to the application. A
// message is handed over only when its seq is cursor+1, so (conversation,
// seq) can never be emitted twice, whatever mix of pushes, retried pushes,
// sync pages and history pages brings it.
//
// Messages that arrive ahead of the cursor wait in a small per-conversation
// buffer while the gap below them is pulled with History(after=cursor). When
// the application's queue is full or the buffer is, messages are not kept at
// all: the conversation's head remembers that they exist and they are pulled
// again later. So memory stays bounded and nothing is lost.
//
// tracker is not safe for concurrent use; the Client guards it with its mutex.
type tracker struct {
	convs      map[string]*convState
	maxPending int
	// lagging holds conversations that may be behind their head; the filler
	// walks it instead of every conversation.
	lagging map[string]struct{}
}

type convState struct {
	// cursor: every visible message with seq <= cursor was handed over.
	cursor uint64
	// head: the highest seq known to exist.
	head uint64
	// pending: messages with seq > cursor+1 that arrived early.
	pending map[uint64]*parleyv1.Message
	// gone: the user may no longer read the conversation (not_member or
	// not_found on a pull); heads are ignored until a message arrives again.
	gone bool
	// acked: the delivered pointer last sent to the server.
	acked uint64
}

func newTracker(maxPending int) *tracker {
	return &tracker{convs: map[string]*convState{}, maxPending: maxPending, lagging: map[string]struct{}{}}
}

func (t *tracker) known(conv string) bool {
	_, ok := t.convs[conv]
	return ok
}

// state returns conv's state, creating it at cursor 0. A conversation the
// client did not know at its baseline (the inbox at Dial) is new to it, so
// all of its visible messages are new: a pull from 0 returns them starting at
// the seq the user joined at.
func (t *tracker) state(conv string) *convState {
	s := t.convs[conv]
	if s == nil {
		s = &convState{}
		t.convs[conv] = s
	}
	return s
}

// setCursor starts tracking conv at cursor (a baseline or a resumed cursor).
// It never moves an existing cursor backwards.
func (t *tracker) setCursor(conv string, cursor uint64) {
	s := t.state(conv)
	if cursor > s.cursor {
		s.cursor = cursor
		t.prune(s)
	}
	if s.head < s.cursor {
		s.head = s.cursor
	}
	if s.acked < s.cursor {
		// A baseline or a resumed cursor is something the server already
		// knows about (or the application acked before): no ack needed.
		s.acked = s.cursor
	}
}

// observeHead records that conv has messages up to head.
func (t *tracker) observeHead(conv string, head uint64) {
	s := t.state(conv)
	if s.gone {
		return
	}
	if head > s.head {
		s.head = head
	}
	t.markLag(conv, s)
}

// push offers a message that arrived by push (or that the client sent
// itself). It returns the messages that may now be handed over, in order, at
// most room of them.
func (t *tracker) push(m *parleyv1.Message, room int) (out []*parleyv1.Message, dup bool) {
	s := t.state(m.GetConversationId())
	s.gone = false
	if m.GetSeq() <= s.cursor {
		return nil, true
	}
	if m.GetSeq() > s.head {
		s.head = m.GetSeq()
	}
	if m.GetSeq() == s.cursor+1 && room > 0 {
		s.cursor++
		out = append(out, m)
		out = t.drain(s, out, room-1)
	} else if _, ok := s.pending[m.GetSeq()]; !ok && len(s.pending) < t.maxPending {
		if s.pending == nil {
			s.pending = map[uint64]*parleyv1.Message{}
		}
		s.pending[m.GetSeq()] = m
	}
	t.markLag(m.GetConversationId(), s)
	return out, false
}

// page applies a page of conv's log: the visible messages with seq > after,
// oldest first, as History(after) or Sync return them. A page is
// authoritative about what the user can see: seqs it skips (before the seq
// the user joined at, or in a period the user was not a member) are not
// waited for. hasMore reports whether the server has more after the page.
// It returns the messages to hand over (at most room) and the number of
// page messages discarded as already seen.
//
// A page that ends below a head announced earlier does not move the cursor
// to the head: the page may have been read just before a pushed message was
// committed, and the next pull shows it (see skip for the last resort).
//
// joined is the seq the user joined at, when the server says (0 otherwise):
// every seq from it on is visible, so a hole at or above it is not skipped:
// the page came from a datacenter that has not received those messages yet
// (a multi-region read lags its home), and a later pull shows them.
func (t *tracker) page(conv string, after uint64, msgs []*parleyv1.Message, hasMore bool, joined uint64, room int) (out []*parleyv1.Message, dups int) {
	s := t.state(conv)
	if n := len(msgs); n > 0 {
		// Everything in the page exists, taken now or not (no room); with
		// hasMore, more exists beyond it.
		last := msgs[n-1].GetSeq()
		if hasMore {
			last++
		}
		s.head = max(s.head, last)
	}
	prev := after
	for _, m := range msgs {
		if m.GetSeq() <= s.cursor {
			dups++
			prev = m.GetSeq()
			continue
		}
		if room <= 0 {
			break
		}
		if m.GetSeq() > s.cursor+1 && prev >= s.cursor && (joined == 0 || m.GetSeq() <= joined) {
			// Nothing the user can see lies between prev and m: skip the
			// hole. (prev < cursor cannot happen here: a page message above
			// the cursor that was not handed over stops the loop.)
			s.cursor = m.GetSeq() - 1
			t.prune(s)
		}
		if m.GetSeq() != s.cursor+1 {
			break // not contiguous after all; pull again from the cursor
		}
		s.cursor++
		out = append(out, m)
		room--
		prev = m.GetSeq()
		out = t.drainInto(s, &out, &room)
	}
	t.markLag(conv, s)
	return out, dups
}

// skip gives up waiting for what lies between conv's cursor and its next
// early message (or its head): used after pulls repeatedly showed nothing
// there, so a server that announced a head it cannot show does not keep the
// client pulling forever. It returns the messages that may now be handed over.
func (t *tracker) skip(conv string, room int) []*parleyv1.Message {
	s := t.state(conv)
	next := s.head
	for seq := range s.pending {
		if seq-1 < next {
			next = seq - 1
		}
	}
	if next > s.cursor {
		s.cursor = next
		t.prune(s)
	}
	out := t.drain(s, nil, room)
	t.markLag(conv, s)
	return out
}

// drainInto hands over the buffered messages that follow the cursor.
func (t *tracker) drainInto(s *convState, out *[]*parleyv1.Message, room *int) []*parleyv1.Message {
	before := len(*out)
	*out = t.drain(s, *out, *room)
	*room -= len(*out) - before
	return *out
}

func (t *tracker) drain(s *convState, out []*parleyv1.Message, room int) []*parleyv1.Message {
	for room > 0 {
		m, ok := s.pending[s.cursor+1]
		if !ok {
			break
		}
		delete(s.pending, s.cursor+1)
		s.cursor++
		out = append(out, m)
		room--
	}
	return out
}

// prune drops buffered messages the cursor has passed.
func (t *tracker) prune(s *convState) {
	for seq := range s.pending {
		if seq <= s.cursor {
			delete(s.pending, seq)
		}
	}
}

// giveUp stops waiting for conv's missing messages: the user may not read it.
func (t *tracker) giveUp(conv string) {
	s := t.state(conv)
	s.gone = true
	if s.head > s.cursor {
		s.cursor = s.head
	}
	s.pending = nil
	delete(t.lagging, conv)
}

func (t *tracker) markLag(conv string, s *convState) {
	if s.cursor < s.head && !s.gone {
		t.lagging[conv] = struct{}{}
	} else {
		delete(t.lagging, conv)
	}
}

// fillWork names the next conversation that needs a pull, first handing
// over (up to room) buffered messages that no longer wait for anything. It
// returns the conversation, the cursor to pull after, and its head.
func (t *tracker) fillWork(room int) (released []*parleyv1.Message, conv string, after, head uint64, ok bool) {
	for c := range t.lagging {
		s := t.convs[c]
		if s == nil || s.gone || s.cursor >= s.head {
			delete(t.lagging, c)
			continue
		}
		if room > 0 {
			n := len(released)
			released = t.drain(s, released, room)
			room -= len(released) - n
		}
		if s.cursor >= s.head {
			delete(t.lagging, c)
			continue
		}
		if _, waiting := s.pending[s.cursor+1]; waiting {
			continue // only room is missing
		}
		return released, c, s.cursor, s.head, true
	}
	return released, "", 0, 0, false
}

// behind reports whether any conversation still lags its head.
func (t *tracker) behind() bool {
	for c := range t.lagging {
		s := t.convs[c]
		if s != nil && !s.gone && s.cursor < s.head {
			return true
		}
	}
	return false
}

// cursors returns the cursors of the conversations the user may still read.
func (t *tracker) cursors() []*parleyv1.Cursor {
	out := make([]*parleyv1.Cursor, 0, len(t.convs))
	for c, s := range t.convs {
		if !s.gone {
			out = append(out, &parleyv1.Cursor{ConversationId: c, Seq: s.cursor})
		}
	}
	return out
}

// toAck returns conv's cursor when it is ahead of what was acked.
func (t *tracker) toAck(conv string) (uint64, bool) {
	s := t.convs[conv]
	if s == nil || s.cursor <= s.acked {
		return 0, false
	}
	return s.cursor, true
}

func (t *tracker) acked(conv string, seq uint64) {
	if s := t.convs[conv]; s != nil && seq > s.acked {
		s.acked = seq
	}
}
