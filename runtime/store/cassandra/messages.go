package cassandra

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
)

const (
	// bucketBits: bucket = seq >> bucketBits, 4,096 seqs per partition.
	bucketBits = 12
	// maxSeq is the highest seq a bigint column holds.
	maxSeq = math.MaxInt64
	// mediaFormatProto tags the media column: the protobuf encoding of
	// parleyv1.Media follows.
	mediaFormatProto = 1
	// reactionsFormatProto tags the reactions column: the protobuf
	// encoding of a parleyv1.Message with only emoji, reaction_removed and
	// reactions set follows.
	reactionsFormatProto = 1
	// casAttempts bounds the conditional writes of one segment whose
	// outcome was unknown and then found not applied.
	casAttempts = 3
)

func bucketOf(seq uint64) int64 { return int64(seq >> bucketBits) }

// bucketFirst and bucketLast are the lowest and highest seq of bucket b
// (bucket 0 starts at 0, which no message uses).
func bucketFirst(b int64) uint64 { return uint64(b) << bucketBits }
func bucketLast(b int64) uint64  { return bucketFirst(b) | (1<<bucketBits - 1) }

// checkID rejects ids both backends refuse (the Pebble key layout cannot
// hold NUL) and ids Cassandra's text type cannot hold.
func checkID(what, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("empty %s id", what)
	case strings.IndexByte(id, 0) >= 0:
		return fmt.Errorf("%s id %q contains NUL", what, id)
	case !utf8.ValidString(id):
		return fmt.Errorf("%s id %q is not UTF-8", what, id)
	}
	return nil
}

// unsetIfEmpty binds "" as unset: no cell and no tombstone.
func unsetIfEmpty(s string) any {
	if s == "" {
		return gocql.UnsetValue
	}
	return s
}

// row is one message ready for the conditional insert.
type row struct {
	m    *parleyv1.Message
	args []any
	size int // rough encoded size, for splitting batches
}

func encodeRow(conv string, m *parleyv1.Message) (row, error) {
	for _, f := range []struct{ name, v string }{
		{"sender_id", m.GetSenderId()}, {"client_msg_id", m.GetClientMsgId()}, {"text", m.GetText()},
	} {
		if !utf8.ValidString(f.v) {
			return row{}, fmt.Errorf("%s is not UTF-8", f.name)
		}
	}
	var media any = gocql.UnsetValue
	size := 64 + len(conv) + len(m.GetSenderId()) + len(m.GetClientMsgId()) + len(m.GetText())
	if m.GetMedia() != nil {
		b, err := proto.Marshal(m.GetMedia())
		if err != nil {
			return row{}, fmt.Errorf("marshal media: %w", err)
		}
		media = append([]byte{mediaFormatProto}, b...)
		size += 1 + len(b)
	}
	members, n, err := idList("member", m.GetMembers())
	if err != nil {
		return row{}, err
	}
	size += n
	seq := m.GetSeq()
	if m.GetTargetSeq() > maxSeq || m.GetChangeSeq() > maxSeq {
		return row{}, fmt.Errorf("target_seq or change_seq above %d", uint64(maxSeq))
	}
	var deleted any = gocql.UnsetValue
	if m.GetDeleted() {
		deleted = true
	}
	var reply any = gocql.UnsetValue
	if m.GetReplyTo() != nil {
		b, err := proto.Marshal(m.GetReplyTo())
		if err != nil {
			return row{}, fmt.Errorf("marshal reply quote: %w", err)
		}
		reply = b
		size += len(b)
	}
	mentions, n, err := idList("mention", m.GetMentions())
	if err != nil {
		return row{}, err
	}
	size += n
	if m.GetReactionSeq() > maxSeq {
		return row{}, fmt.Errorf("reaction_seq above %d", uint64(maxSeq))
	}
	reactions, err := encodeReactions(m)
	if err != nil {
		return row{}, err
	}
	if b, ok := reactions.([]byte); ok {
		size += len(b)
	}
	return row{m: m, size: size, args: []any{
		conv, bucketOf(seq), int64(seq), m.GetMessageId(), unsetIfEmpty(m.GetSenderId()),
		unsetIfEmpty(m.GetClientMsgId()), int32(m.GetKind()), unsetIfEmpty(m.GetText()), media, members, unsetIfZero(m.GetCreatedAt()),
		unsetIfZero(int64(m.GetTargetSeq())), unsetIfZero(m.GetEditedAt()), deleted, unsetIfZero(int64(m.GetChangeSeq())), reply, mentions,
		reactions, unsetIfZero(int64(m.GetReactionSeq())),
	}}, nil
}

// encodeReactions binds the reactions column of m: unset when m has no
// emoji, reaction_removed or reactions.
func encodeReactions(m *parleyv1.Message) (any, error) {
	if m.GetEmoji() == "" && !m.GetReactionRemoved() && len(m.GetReactions()) == 0 {
		return gocql.UnsetValue, nil
	}
	b, err := proto.Marshal(&parleyv1.Message{Emoji: m.GetEmoji(), ReactionRemoved: m.GetReactionRemoved(), Reactions: m.GetReactions()})
	if err != nil {
		return nil, fmt.Errorf("marshal reactions: %w", err)
	}
	return append([]byte{reactionsFormatProto}, b...), nil
}

// idList binds a frozen list of user ids (members, mentions), unset when
// empty, after checking each (what names them in an error); n is its rough
// encoded size.
func idList(what string, ids []string) (v any, n int, err error) {
	if len(ids) == 0 {
		return gocql.UnsetValue, 0, nil
	}
	for _, u := range ids {
		if err := checkID(what, u); err != nil {
			return nil, 0, err
		}
		n += 4 + len(u)
	}
	return ids, n, nil
}

// unsetIfZero binds 0 as unset: no cell and no tombstone.
func unsetIfZero(v int64) any {
	if v == 0 {
		return gocql.UnsetValue
	}
	return v
}

// scanMessage decodes one row of messageColumns.
func scanMessage(sc gocql.Scanner, conv string) (*parleyv1.Message, error) {
	var (
		seq, id, created int64
		sender, cmid     string
		body             string
		kind             int32
		media            []byte
		members          []string
		target, change   int64
		edited           int64
		deleted          bool
		reply            []byte
		mentions         []string
		reactions        []byte
		reactionSeq      int64
	)
	if err := sc.Scan(&seq, &id, &sender, &cmid, &kind, &body, &media, &members, &created, &target, &edited, &deleted, &change, &reply, &mentions,
		&reactions, &reactionSeq); err != nil {
		return nil, err
	}
	m := &parleyv1.Message{
		ConversationId: conv,
		Seq:            uint64(seq),
		MessageId:      id,
		SenderId:       sender,
		ClientMsgId:    cmid,
		Kind:           parleyv1.MessageKind(kind),
		Text:           body,
		CreatedAt:      created,
		Members:        members,
		TargetSeq:      uint64(target),
		EditedAt:       edited,
		Deleted:        deleted,
		ChangeSeq:      uint64(change),
		Mentions:       mentions,
		ReactionSeq:    uint64(reactionSeq),
	}
	if reactions != nil {
		if len(reactions) == 0 || reactions[0] != reactionsFormatProto {
			return nil, fmt.Errorf("seq %d: unknown reactions format", seq)
		}
		var r parleyv1.Message
		if err := proto.Unmarshal(reactions[1:], &r); err != nil {
			return nil, fmt.Errorf("seq %d: unmarshal reactions: %w", seq, err)
		}
		m.Emoji, m.ReactionRemoved, m.Reactions = r.GetEmoji(), r.GetReactionRemoved(), r.GetReactions()
	}
	if reply != nil {
		m.ReplyTo = new(parleyv1.Quote)
		if err := proto.Unmarshal(reply, m.ReplyTo); err != nil {
			return nil, fmt.Errorf("seq %d: unmarshal reply quote: %w", seq, err)
		}
	}
	if media != nil {
		if len(media) == 0 || media[0] != mediaFormatProto {
			return nil, fmt.Errorf("seq %d: unknown media format", seq)
		}
		m.Media = new(parleyv1.Media)
		if err := proto.Unmarshal(media[1:], m.Media); err != nil {
			return nil, fmt.Errorf("seq %d: unmarshal media: %w", seq, err)
		}
	}
	return m, nil
}

// Append implements store.MessageStore. msgs must carry conversation_id conv
// and consecutive seqs from msgs[0].Seq >= 1 up to at most 2^63-1; an empty
// msgs is a no-op (effects included). effects are written after the
// conditional batch that stores their event (applyEffects), as given.
//
// See the package comment for how an append split into several conditional
// batches behaves when a later one is refused (an error wrapping
// store.ErrSeqTaken, with the earlier part stored) and how unknown outcomes
// are resolved. An error that wraps neither store.ErrSeqTaken nor a
// validation problem means the outcome is unknown.
func (s *Store) Append(ctx context.Context, conv string, msgs []*parleyv1.Message, effects ...store.Effect) error {
	if len(msgs) == 0 {
		return nil
	}
	if err := checkID("conversation", conv); err != nil {
		return fmt.Errorf("append %s: %w", conv, err)
	}
	first := msgs[0].GetSeq()
	if first == 0 {
		return fmt.Errorf("append %s seq 0: seqs start at 1", conv)
	}
	if first > maxSeq-uint64(len(msgs))+1 {
		return fmt.Errorf("append %s seq %d: seqs above %d do not fit", conv, first, uint64(maxSeq))
	}
	rows := make([]row, len(msgs))
	for i, m := range msgs {
		want := first + uint64(i)
		if m.GetSeq() != want {
			return fmt.Errorf("append %s seq %d: message %d has seq %d, want consecutive seqs", conv, first, i, m.GetSeq())
		}
		if m.GetConversationId() != conv {
			return fmt.Errorf("append %s seq %d: message has conversation_id %q", conv, want, m.GetConversationId())
		}
		r, err := encodeRow(conv, m)
		if err != nil {
			return fmt.Errorf("append %s seq %d: %w", conv, want, err)
		}
		rows[i] = r
	}
	if err := store.CheckEffects(first, msgs[len(msgs)-1].GetSeq(), effects); err != nil {
		return fmt.Errorf("append %s seq %d: %w", conv, first, err)
	}
	for _, e := range effects {
		if e.Kind == store.EffectRename {
			if !utf8.ValidString(e.Title) {
				return fmt.Errorf("append %s seq %d: title is not UTF-8", conv, e.Seq)
			}
		} else if err := errors.Join(checkID("user", e.Member.UserID), checkRole(e.Member.Role)); err != nil {
			return fmt.Errorf("append %s seq %d: %w", conv, e.Seq, err)
		}
	}
	if err := s.begin(ctx); err != nil {
		return fmt.Errorf("append %s seq %d: %w: %w", conv, first, store.ErrNotStored, err)
	}
	segs := s.segments(rows)
	for i, seg := range segs {
		err := s.appendSegment(ctx, conv, seg)
		if err == nil {
			continue
		}
		if i == 0 {
			return fmt.Errorf("append %s seq %d: %w", conv, first, err)
		}
		if errors.Is(err, store.ErrNotStored) {
			// Only this segment was not stored; the append as a whole was.
			err = errors.New(err.Error())
		}
		// A later segment failed after earlier ones were stored: those
		// are in the log for good, so their effects apply.
		stored := msgs[:seg[0].m.GetSeq()-first]
		last := stored[len(stored)-1].GetSeq()
		s.log.Warn("append stored only its first part: a later conditional batch failed",
			"component", "cassandra", "conversation", conv, "stored_from", first, "stored_to", last, "err", err)
		effErr := s.afterCommit(ctx, conv, stored, effectsUpTo(effects, last))
		rest := "not stored"
		if !errors.Is(err, store.ErrSeqTaken) {
			rest = "of unknown outcome"
		}
		return errors.Join(fmt.Errorf("append %s seq %d: seqs %d..%d stored, seqs %d..%d %s: %w",
			conv, first, first, last, last+1, msgs[len(msgs)-1].GetSeq(), rest, err), effErr)
	}
	return s.afterCommit(ctx, conv, msgs, effects)
}

// effectsUpTo returns the effects of the events at seqs up to last (effects
// are in seq order).
func effectsUpTo(effects []store.Effect, last uint64) []store.Effect {
	n := 0
	for n < len(effects) && effects[n].Seq <= last {
		n++
	}
	return effects[:n]
}

// checkRole rejects a role Cassandra's text type cannot hold.
func checkRole(role string) error {
	if !utf8.ValidString(role) {
		return fmt.Errorf("role %q is not UTF-8", role)
	}
	return nil
}

// segments splits rows (consecutive seqs) into runs that share a bucket and
// stay within maxBatch bytes.
func (s *Store) segments(rows []row) [][]row {
	var out [][]row
	start, size := 0, 0
	for i, r := range rows {
		if i > start && (bucketOf(r.m.GetSeq()) != bucketOf(rows[start].m.GetSeq()) || size+r.size > s.maxBatch) {
			out = append(out, rows[start:i])
			start, size = i, 0
		}
		size += r.size
	}
	return append(out, rows[start:])
}

// casHook, set only by tests, wraps each attempt of a conditional batch, to
// lose its request or its reply.
var casHook func(attempt int, exec func() (applied bool, err error)) (bool, error)

// appendSegment stores rows, all in one bucket, with one conditional batch.
// It returns nil once they are stored, an error wrapping store.ErrSeqTaken
// when another writer holds one of their seqs, and any other error when the
// outcome could not be determined.
func (s *Store) appendSegment(ctx context.Context, conv string, rows []row) error {
	uncertain := false // an earlier attempt may have been applied
	for attempt := 1; ; attempt++ {
		b := s.sess.Batch(gocql.UnloggedBatch)
		b.Consistency(gocql.LocalQuorum)
		b.SerialConsistency(gocql.LocalSerial)
		for _, r := range rows {
			b.Query(s.stmt.insertMessage, r.args...)
		}
		existing := map[string]any{}
		exec := func() (bool, error) {
			applied, iter, err := b.MapExecCASContext(ctx, existing)
			if iter != nil {
				if cerr := iter.Close(); err == nil {
					err = cerr
				}
			}
			return applied, err
		}
		var (
			applied bool
			err     error
		)
		if casHook != nil {
			applied, err = casHook(attempt, exec)
		} else {
			applied, err = exec()
		}
		switch {
		case err == nil && applied:
			return nil
		case err == nil && !uncertain:
			return fmt.Errorf("seq %v is stored: %w", existing["seq"], store.ErrSeqTaken)
		case err != nil && !mayBeApplied(err) && !uncertain:
			return fmt.Errorf("%w: %w", store.ErrNotStored, err)
		case err != nil && !mayBeApplied(err):
			return fmt.Errorf("conditional write outcome unknown (an earlier attempt may have been applied): %w", err)
		case err != nil && ctx.Err() != nil:
			return fmt.Errorf("conditional write outcome unknown: %w", err)
		}
		// Refused after an attempt of unknown outcome (perhaps by that
		// very attempt), or this one's outcome is unknown: look.
		if err != nil {
			uncertain = true
		}
		st, rerr := s.segmentState(ctx, conv, rows)
		if rerr != nil {
			return fmt.Errorf("conditional write outcome unknown: %w", errors.Join(err, rerr))
		}
		switch st {
		case segmentOurs:
			s.log.Info("conditional write of unknown outcome was applied", "component", "cassandra",
				"conversation", conv, "seq", rows[0].m.GetSeq(), "err", err)
			return nil
		case segmentForeign:
			return fmt.Errorf("seqs %d..%d hold another writer's messages: %w", rows[0].m.GetSeq(), rows[len(rows)-1].m.GetSeq(), store.ErrSeqTaken)
		}
		if attempt >= casAttempts {
			return fmt.Errorf("conditional write failed %d times: %w", attempt, err)
		}
		if err := sleep(ctx, time.Duration(attempt)*(20*time.Millisecond+rand.N(20*time.Millisecond))); err != nil {
			return err
		}
	}
}

// mayBeApplied reports whether a conditional write that failed with err may
// still have been applied (or be applied by a later Paxos round): true for
// everything but requests the server refused outright — unparsable or
// unauthorized ones, and Unavailable, which the coordinator raises when it
// counts too few live replicas for the Paxos round, before it proposes
// anything (Cassandra's StorageProxy.cas and Paxos v2 both check first).
func mayBeApplied(err error) bool {
	var re gocql.RequestError
	if errors.As(err, &re) {
		switch re.Code() {
		case gocql.ErrCodeSyntax, gocql.ErrCodeInvalid, gocql.ErrCodeUnauthorized, gocql.ErrCodeConfig,
			gocql.ErrCodeCredentials, gocql.ErrCodeProtocol, gocql.ErrCodeUnavailable:
			return false
		}
	}
	return true
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type segmentState int

const (
	segmentEmpty   segmentState = iota // none of the seqs is stored
	segmentOurs                        // all are, with exactly our messages
	segmentForeign                     // some are, with other messages
)

// segmentState reads rows' seqs at LOCAL_SERIAL. A serial read finishes (or,
// with its higher ballot, fences) any Paxos round still in flight on the
// partition, so what it sees is final: an attempt that is not visible now
// can no longer be applied.
func (s *Store) segmentState(ctx context.Context, conv string, rows []row) (segmentState, error) {
	first, last := rows[0].m.GetSeq(), rows[len(rows)-1].m.GetSeq()
	iter := s.sess.Query(s.stmt.messagesSerial, conv, bucketOf(first), int64(first), int64(last)).
		Consistency(gocql.LocalSerial).Idempotent(true).IterContext(ctx)
	n, ours := 0, true
	err := scanAll(iter, func(sc gocql.Scanner) error {
		m, err := scanMessage(sc, conv)
		if err != nil {
			return err
		}
		n++
		i := m.GetSeq() - first
		if i >= uint64(len(rows)) || !proto.Equal(m, rows[i].m) {
			ours = false
		}
		return nil
	})
	switch {
	case err != nil:
		return 0, err
	case n == 0:
		return segmentEmpty, nil
	case ours && n == len(rows):
		return segmentOurs, nil
	}
	return segmentForeign, nil
}

// scanAll calls fn for every row of iter, then releases it.
func scanAll(iter *gocql.Iter, fn func(sc gocql.Scanner) error) error {
	sc := iter.Scanner()
	var err error
	for err == nil && sc.Next() {
		err = fn(sc)
	}
	return errors.Join(err, sc.Err())
}

// afterCommit applies what follows a stored run of msgs: the head hint when
// it opened a bucket, then effects (the run's own), then the change events'
// effects on their targets.
func (s *Store) afterCommit(ctx context.Context, conv string, msgs []*parleyv1.Message, effects []store.Effect) error {
	if b := bucketOf(msgs[len(msgs)-1].GetSeq()); b > 0 && bucketFirst(b) >= msgs[0].GetSeq() {
		// Best effort: Head finds a newer bucket without it, and repairs it.
		if err := s.setHeadBucket(ctx, conv, b); err != nil {
			s.log.Warn("head_bucket hint not written", "component", "cassandra", "conversation", conv, "bucket", b, "err", err)
		}
	}
	if err := s.applyEffects(ctx, conv, effects); err != nil {
		return fmt.Errorf("append %s seq %d: stored, but membership effects failed (they apply again when the event is replayed): %w",
			conv, msgs[0].GetSeq(), err)
	}
	for _, m := range msgs {
		if !store.IsChange(m.GetKind()) {
			continue
		}
		if err := s.applyChange(ctx, conv, m); err != nil {
			return fmt.Errorf("append %s seq %d: stored, but its effect on seq %d failed (ApplyChange repairs it): %w",
				conv, m.GetSeq(), m.GetTargetSeq(), err)
		}
	}
	return nil
}

// ApplyChange implements store.MessageStore. Each write is a conditional
// update of one row, so it is ordered after the conditional insert that
// stored the row (Paxos), and the target's update is a compare-and-set on
// its change_seq, so two appliers of changes to one message cannot
// interleave.
func (s *Store) ApplyChange(ctx context.Context, conv string, ev *parleyv1.Message) error {
	if err := checkID("conversation", conv); err != nil {
		return fmt.Errorf("apply change %s: %w", conv, err)
	}
	if !store.IsChange(ev.GetKind()) {
		return fmt.Errorf("apply change %s seq %d: kind %v is not a change", conv, ev.GetSeq(), ev.GetKind())
	}
	if err := s.begin(ctx); err != nil {
		return fmt.Errorf("apply change %s seq %d: %w", conv, ev.GetSeq(), err)
	}
	if err := s.applyChange(ctx, conv, ev); err != nil {
		return fmt.Errorf("apply change %s seq %d: %w", conv, ev.GetSeq(), err)
	}
	return nil
}

// applyChange applies ev's effect: the target row first (the version the
// log's readers see), then the text of the EDITED event ev supersedes is
// cleared. A failure between the two leaves that text for the next
// ApplyChange of ev to clear.
func (s *Store) applyChange(ctx context.Context, conv string, ev *parleyv1.Message) error {
	if ev.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_REACTION {
		return s.applyReaction(ctx, conv, ev)
	}
	for attempt := 1; ; attempt++ {
		target, err := s.serialMessage(ctx, conv, ev.GetTargetSeq())
		if err != nil {
			return fmt.Errorf("target seq %d: %w", ev.GetTargetSeq(), err)
		}
		upd := store.Changed(target, ev)
		if upd == nil {
			if target.GetChangeSeq() > ev.GetSeq() {
				return s.clearText(ctx, conv, ev.GetSeq())
			}
			return nil
		}
		var media any // null: the tombstone of a deleted media message
		if upd.GetMedia() != nil {
			b, err := proto.Marshal(upd.GetMedia())
			if err != nil {
				return fmt.Errorf("marshal media: %w", err)
			}
			media = append([]byte{mediaFormatProto}, b...)
		}
		var prev any // null: no change applied yet
		if p := target.GetChangeSeq(); p != 0 {
			prev = int64(p)
		}
		// A delete clears a reply's quote (a null cell); an edit leaves it
		// (unset). Mentions become the updated message's: the edited
		// text's, none after a delete.
		var reply, mentions any = gocql.UnsetValue, gocql.UnsetValue
		if upd.GetDeleted() && target.GetReplyTo() != nil {
			reply = nil
		}
		switch {
		case len(upd.GetMentions()) > 0:
			mentions = upd.GetMentions()
		case len(target.GetMentions()) > 0:
			mentions = nil
		}
		// A delete clears the reactions (a null cell); reaction_seq stays.
		var reactions any = gocql.UnsetValue
		if upd.GetDeleted() && len(target.GetReactions()) > 0 {
			reactions = nil
		}
		seq := upd.GetSeq()
		q := s.sess.Query(s.stmt.changeMessage, upd.GetText(), media, unsetIfZero(upd.GetEditedAt()), upd.GetDeleted(),
			int64(upd.GetChangeSeq()), reply, mentions, reactions, conv, bucketOf(seq), int64(seq), prev).
			Consistency(gocql.LocalQuorum).SerialConsistency(gocql.LocalSerial)
		applied, err := q.MapScanCASContext(ctx, map[string]any{})
		if err != nil {
			// Unknown outcome; the next read (serial) settles it.
			return fmt.Errorf("update seq %d: %w", seq, err)
		}
		if !applied {
			if attempt < casAttempts {
				continue // another applier moved change_seq: decide again
			}
			return fmt.Errorf("update seq %d: change_seq kept moving", seq)
		}
		if p := target.GetChangeSeq(); p != 0 {
			return s.clearText(ctx, conv, p)
		}
		return nil
	}
}

// applyReaction applies REACTION event ev to its target: a compare-and-set
// of the target's reactions on its reaction_seq (so reactions apply one at
// a time, in seq order, and a replay changes nothing) and its change_seq
// (so a delete applied in between is not undone).
func (s *Store) applyReaction(ctx context.Context, conv string, ev *parleyv1.Message) error {
	nullIfZero := func(v uint64) any {
		if v == 0 {
			return nil
		}
		return int64(v)
	}
	for attempt := 1; ; attempt++ {
		target, err := s.serialMessage(ctx, conv, ev.GetTargetSeq())
		if err != nil {
			return fmt.Errorf("target seq %d: %w", ev.GetTargetSeq(), err)
		}
		upd := store.Changed(target, ev)
		if upd == nil {
			return nil
		}
		var reactions any // null: no reactions left
		if len(upd.GetReactions()) > 0 {
			if reactions, err = encodeReactions(&parleyv1.Message{Reactions: upd.GetReactions()}); err != nil {
				return err
			}
		}
		seq := upd.GetSeq()
		q := s.sess.Query(s.stmt.reactMessage, reactions, int64(upd.GetReactionSeq()), conv, bucketOf(seq), int64(seq),
			nullIfZero(target.GetChangeSeq()), nullIfZero(target.GetReactionSeq())).
			Consistency(gocql.LocalQuorum).SerialConsistency(gocql.LocalSerial)
		applied, err := q.MapScanCASContext(ctx, map[string]any{})
		if err != nil {
			return fmt.Errorf("update reactions of seq %d: %w", seq, err)
		}
		if applied {
			return nil
		}
		if attempt >= casAttempts {
			return fmt.Errorf("update reactions of seq %d: change_seq or reaction_seq kept moving", seq)
		}
	}
}

// clearText clears the text of the EDITED event at seq, if it is one and
// has text: a message's text lives in its row and its newest EDITED event
// only, so a delete leaves none of it in the log.
func (s *Store) clearText(ctx context.Context, conv string, seq uint64) error {
	m, err := s.serialMessage(ctx, conv, seq)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil || m.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_EDITED || m.GetText() == "" {
		return err
	}
	q := s.sess.Query(s.stmt.clearBody, conv, bucketOf(seq), int64(seq)).
		Consistency(gocql.LocalQuorum).SerialConsistency(gocql.LocalSerial)
	if _, err := q.MapScanCASContext(ctx, map[string]any{}); err != nil {
		return fmt.Errorf("clear text of seq %d: %w", seq, err)
	}
	return nil
}

// serialMessage reads the message at seq at LOCAL_SERIAL, which completes
// any conditional write in flight on it; a missing one is store.ErrNotFound.
func (s *Store) serialMessage(ctx context.Context, conv string, seq uint64) (*parleyv1.Message, error) {
	if seq == 0 || seq > maxSeq {
		return nil, store.ErrNotFound
	}
	iter := s.sess.Query(s.stmt.message, conv, bucketOf(seq), int64(seq)).
		Consistency(gocql.LocalSerial).Idempotent(true).IterContext(ctx)
	var m *parleyv1.Message
	err := scanAll(iter, func(sc gocql.Scanner) error {
		var err error
		m, err = scanMessage(sc, conv)
		return err
	})
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, store.ErrNotFound
	}
	return m, nil
}

func (s *Store) setHeadBucket(ctx context.Context, conv string, b int64) error {
	return s.query(ctx, true, s.stmt.setHeadBucket, b, b, conv).Exec()
}

// Head implements store.MessageStore: one query for a conversation of up to
// 4,095 messages, two beyond (see the package comment).
func (s *Store) Head(ctx context.Context, conv string) (uint64, error) {
	if err := checkID("conversation", conv); err != nil {
		return 0, fmt.Errorf("head %s: %w", conv, err)
	}
	if err := s.begin(ctx); err != nil {
		return 0, fmt.Errorf("head %s: %w", conv, err)
	}
	h, err := s.head(ctx, conv)
	if err != nil {
		return 0, fmt.Errorf("head %s: %w", conv, err)
	}
	return h, nil
}

func (s *Store) head(ctx context.Context, conv string) (uint64, error) {
	var newest0, hint int64
	err := s.query(ctx, true, s.stmt.headProbe, conv).Scan(&newest0, &hint)
	if errors.Is(err, gocql.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if hint > 0 {
		newest, err := s.newestIn(ctx, conv, hint)
		if err != nil {
			return 0, err
		}
		if newest > 0 {
			if newest < bucketLast(hint) {
				return newest, nil
			}
			return s.walkUp(ctx, conv, hint, newest, hint)
		}
		// A hint beyond the log cannot happen with dense seqs; trust the
		// log, not the hint.
	}
	if uint64(newest0) < bucketLast(0) {
		return uint64(newest0), nil
	}
	return s.walkUp(ctx, conv, 0, uint64(newest0), hint)
}

// newestIn returns the highest seq stored in bucket b, 0 when it is empty.
func (s *Store) newestIn(ctx context.Context, conv string, b int64) (uint64, error) {
	var seq int64
	err := s.query(ctx, true, s.stmt.newestSeq, conv, b).Scan(&seq)
	if errors.Is(err, gocql.ErrNotFound) {
		return 0, nil
	}
	return uint64(seq), err
}

// walkUp finds the newest non-empty bucket above bucket from, which is full
// and whose newest seq is newest, and returns its newest seq. Non-empty
// buckets form a prefix (dense seqs), so it gallops up and then bisects:
// O(log n) queries even when the hint is missing. It raises the hint when it
// ends above it.
func (s *Store) walkUp(ctx context.Context, conv string, from int64, newest uint64, hint int64) (uint64, error) {
	const maxBucket = int64(maxSeq >> bucketBits)
	lo, loNewest := from, newest // lo: a non-empty bucket
	hi := int64(-1)              // hi: an empty bucket above lo, once known
	done := false
	for step := int64(1); hi < 0; step *= 2 {
		c := min(lo+step, maxBucket+1)
		n := uint64(0)
		if c <= maxBucket {
			var err error
			if n, err = s.newestIn(ctx, conv, c); err != nil {
				return 0, err
			}
		}
		if n == 0 {
			hi = c
			break
		}
		lo, loNewest = c, n
		if n < bucketLast(c) {
			done = true
			break
		}
	}
	for !done && hi-lo > 1 {
		mid := lo + (hi-lo)/2
		n, err := s.newestIn(ctx, conv, mid)
		if err != nil {
			return 0, err
		}
		if n == 0 {
			hi = mid
			continue
		}
		lo, loNewest = mid, n
		done = n < bucketLast(mid)
	}
	if lo > hint {
		if err := s.setHeadBucket(ctx, conv, lo); err != nil {
			s.log.Warn("head_bucket hint not repaired", "component", "cassandra", "conversation", conv, "bucket", lo, "err", err)
		}
	}
	return loNewest, nil
}

// Messages implements store.MessageStore with the Pebble store's semantics:
// p.Limit outside 1..store.MaxLimit, or Before together with After or
// Forward, is an error; an unknown conversation reads as empty. A page
// reads one partition per bucket it spans, asking each for what is still
// missing (plus one row, to answer hasMore).
func (s *Store) Messages(ctx context.Context, conv string, p store.Page) ([]*parleyv1.Message, bool, error) {
	if err := checkID("conversation", conv); err != nil {
		return nil, false, fmt.Errorf("messages %s: %w", conv, err)
	}
	if p.Limit < 1 || p.Limit > store.MaxLimit {
		return nil, false, fmt.Errorf("messages %s: limit %d outside 1..%d", conv, p.Limit, store.MaxLimit)
	}
	forward := p.Forward || p.After != 0
	if p.Before != 0 && forward {
		return nil, false, fmt.Errorf("messages %s: both before %d and after %d set", conv, p.Before, p.After)
	}
	if err := s.begin(ctx); err != nil {
		return nil, false, fmt.Errorf("messages %s: %w", conv, err)
	}
	// The page lies in seqs [lo, top].
	lo := max(p.MinSeq, 1)
	if p.After != 0 {
		if p.After >= maxSeq {
			return nil, false, nil
		}
		lo = max(lo, p.After+1)
	}
	top := uint64(maxSeq)
	if p.Before != 0 {
		top = min(top, p.Before-1)
	}
	if lo > top {
		return nil, false, nil
	}
	var (
		msgs []*parleyv1.Message
		err  error
	)
	if forward {
		msgs, err = s.pageForward(ctx, conv, lo, top, p.Limit+1)
	} else {
		msgs, err = s.pageBackward(ctx, conv, lo, top, p.Before == 0, p.Limit+1)
	}
	if err != nil {
		return nil, false, fmt.Errorf("messages %s: %w", conv, err)
	}
	if len(msgs) > p.Limit {
		return msgs[:p.Limit], true, nil
	}
	return msgs, false, nil
}

// pageBackward returns up to n messages in [lo, top], newest first. With
// newest set (no Before), top is unbounded and the walk starts at the head.
func (s *Store) pageBackward(ctx context.Context, conv string, lo, top uint64, newest bool, n int) ([]*parleyv1.Message, error) {
	headKnown := false
	if newest {
		h, err := s.head(ctx, conv)
		if err != nil {
			return nil, err
		}
		top, headKnown = min(top, h), true
		if top < lo {
			return nil, nil
		}
	}
	var out []*parleyv1.Message
	for b := bucketOf(top); ; b-- {
		from := max(lo, bucketFirst(b))
		page, err := s.readBucket(ctx, conv, b, from, min(top, bucketLast(b)), n-len(out), false)
		if err != nil {
			return nil, err
		}
		if len(page) == 0 && len(out) == 0 && !headKnown && from > lo {
			// Nothing at or below top in this bucket: top lies beyond the
			// head (dense seqs). Continue from the head's bucket.
			h, err := s.head(ctx, conv)
			if err != nil {
				return nil, err
			}
			headKnown = true
			if h < lo || bucketOf(h) >= b {
				return nil, nil
			}
			top = h
			b = bucketOf(h) + 1
			continue
		}
		out = append(out, page...)
		if len(out) >= n || from == lo || b == 0 {
			return out, nil
		}
	}
}

// pageForward returns up to n messages in [lo, top], oldest first. It moves
// to the next bucket only through a full one: with dense seqs a bucket that
// ends early is the last.
func (s *Store) pageForward(ctx context.Context, conv string, lo, top uint64, n int) ([]*parleyv1.Message, error) {
	var out []*parleyv1.Message
	for b := bucketOf(lo); ; b++ {
		last := bucketLast(b)
		page, err := s.readBucket(ctx, conv, b, max(lo, bucketFirst(b)), min(top, last), n-len(out), true)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(out) >= n || top <= last || len(page) == 0 || page[len(page)-1].GetSeq() != last {
			return out, nil
		}
	}
}

// readBucket returns up to n messages of bucket b with seq in [from, to].
func (s *Store) readBucket(ctx context.Context, conv string, b int64, from, to uint64, n int, asc bool) ([]*parleyv1.Message, error) {
	stmt := s.stmt.messagesDesc
	if asc {
		stmt = s.stmt.messagesAsc
	}
	iter := s.query(ctx, true, stmt, conv, b, int64(from), int64(to), n).PageSize(n).Iter()
	out := make([]*parleyv1.Message, 0, min(n, 64))
	err := scanAll(iter, func(sc gocql.Scanner) error {
		m, err := scanMessage(sc, conv)
		if err == nil {
			out = append(out, m)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bucket %d: %w", b, err)
	}
	return out, nil
}

// Message implements store.MessageStore; a missing seq wraps
// store.ErrNotFound.
func (s *Store) Message(ctx context.Context, conv string, seq uint64) (*parleyv1.Message, error) {
	if err := checkID("conversation", conv); err != nil {
		return nil, fmt.Errorf("message %s seq %d: %w", conv, seq, err)
	}
	if err := s.begin(ctx); err != nil {
		return nil, fmt.Errorf("message %s seq %d: %w", conv, seq, err)
	}
	if seq == 0 || seq > maxSeq {
		return nil, fmt.Errorf("message %s seq %d: %w", conv, seq, store.ErrNotFound)
	}
	iter := s.query(ctx, true, s.stmt.message, conv, bucketOf(seq), int64(seq)).Iter()
	var m *parleyv1.Message
	err := scanAll(iter, func(sc gocql.Scanner) error {
		var err error
		m, err = scanMessage(sc, conv)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("message %s seq %d: %w", conv, seq, err)
	}
	if m == nil {
		return nil, fmt.Errorf("message %s seq %d: %w", conv, seq, store.ErrNotFound)
	}
	return m, nil
}
