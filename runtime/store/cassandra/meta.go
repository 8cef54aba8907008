package cassandra

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
	"unicode/utf8"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
)

const (
	// memberBatch bounds the statements of one members batch (a single
	// partition, so the batch is atomic and cheap).
	memberBatch = 100
	// inboxWriters bounds the concurrent inbox inserts of one Append (each
	// user is its own partition).
	inboxWriters = 16
)

// CreateConversation implements store.MessageStore with a conditional insert
// (IF NOT EXISTS at LOCAL_SERIAL). c.CreatedAt is stored with millisecond
// precision; an id already taken wraps store.ErrExists. An attempt of
// unknown outcome is resolved like Append's: a serial read that finds
// exactly c means it was ours.
func (s *Store) CreateConversation(ctx context.Context, c store.Conversation) error {
	if err := checkID("conversation", c.ID); err != nil {
		return fmt.Errorf("create conversation %s: %w", c.ID, err)
	}
	for _, v := range []string{c.Kind, c.Title, c.HomeRegion, c.CreatedBy} {
		if !utf8.ValidString(v) {
			return fmt.Errorf("create conversation %s: field %q is not UTF-8", c.ID, v)
		}
	}
	if err := s.begin(ctx); err != nil {
		return fmt.Errorf("create conversation %s: %w", c.ID, err)
	}
	var created any = gocql.UnsetValue
	if !c.CreatedAt.IsZero() {
		created = c.CreatedAt.UnixMilli()
	}
	args := []any{c.ID, unsetIfEmpty(c.Kind), unsetIfEmpty(c.Title), unsetIfEmpty(c.HomeRegion), unsetIfEmpty(c.CreatedBy), created}
	uncertain := false
	for attempt := 1; ; attempt++ {
		existing := map[string]any{}
		applied, err := s.sess.Query(s.stmt.insertConv, args...).
			Consistency(gocql.LocalQuorum).SerialConsistency(gocql.LocalSerial).MapScanCASContext(ctx, existing)
		switch {
		case err == nil && applied:
			return nil
		case err == nil && !uncertain:
			return fmt.Errorf("create conversation %s: %w", c.ID, store.ErrExists)
		case err != nil && (!mayBeApplied(err) || ctx.Err() != nil):
			return fmt.Errorf("create conversation %s: %w", c.ID, err)
		}
		if err != nil {
			uncertain = true
		}
		got, rerr := s.conversation(ctx, c.ID, gocql.LocalSerial)
		switch {
		case errors.Is(rerr, store.ErrNotFound):
		case rerr != nil:
			return fmt.Errorf("create conversation %s: outcome unknown: %w", c.ID, errors.Join(err, rerr))
		case sameConversation(got, c):
			return nil
		default:
			return fmt.Errorf("create conversation %s: %w", c.ID, store.ErrExists)
		}
		if attempt >= casAttempts {
			return fmt.Errorf("create conversation %s: failed %d times: %w", c.ID, attempt, err)
		}
		if err := sleep(ctx, time.Duration(attempt)*(20*time.Millisecond+rand.N(20*time.Millisecond))); err != nil {
			return fmt.Errorf("create conversation %s: %w", c.ID, err)
		}
	}
}

func sameConversation(stored, c store.Conversation) bool {
	want := c
	if !c.CreatedAt.IsZero() {
		want.CreatedAt = time.UnixMilli(c.CreatedAt.UnixMilli()).UTC()
	}
	stored.CreatedAt, want.CreatedAt = stored.CreatedAt.UTC(), want.CreatedAt.UTC()
	return stored == want
}

// Conversation implements store.MessageStore; an unknown id wraps
// store.ErrNotFound. CreatedAt is in UTC, zero when it was not set.
func (s *Store) Conversation(ctx context.Context, id string) (store.Conversation, error) {
	if err := checkID("conversation", id); err != nil {
		return store.Conversation{}, fmt.Errorf("conversation %s: %w", id, err)
	}
	if err := s.begin(ctx); err != nil {
		return store.Conversation{}, fmt.Errorf("conversation %s: %w", id, err)
	}
	c, err := s.conversation(ctx, id, gocql.LocalQuorum)
	if err != nil {
		return store.Conversation{}, fmt.Errorf("conversation %s: %w", id, err)
	}
	return c, nil
}

func (s *Store) conversation(ctx context.Context, id string, cl gocql.Consistency) (store.Conversation, error) {
	c := store.Conversation{ID: id}
	var renamed string
	err := s.query(ctx, true, s.stmt.conversation, id).Consistency(cl).
		Scan(&c.Kind, &c.Title, &c.HomeRegion, &c.CreatedBy, &c.CreatedAt, &renamed)
	if errors.Is(err, gocql.ErrNotFound) {
		return store.Conversation{}, store.ErrNotFound
	}
	if err != nil {
		return store.Conversation{}, err
	}
	if renamed != "" {
		c.Title = renamed
	}
	if !c.CreatedAt.IsZero() {
		c.CreatedAt = c.CreatedAt.UTC()
	}
	return c, nil
}

// Members implements store.MessageStore: current members sorted by user id
// (the clustering order), empty for an unknown conversation.
func (s *Store) Members(ctx context.Context, conv string) ([]store.Member, error) {
	if err := checkID("conversation", conv); err != nil {
		return nil, fmt.Errorf("members %s: %w", conv, err)
	}
	if err := s.begin(ctx); err != nil {
		return nil, fmt.Errorf("members %s: %w", conv, err)
	}
	ms, err := s.members(ctx, conv)
	if err != nil {
		return nil, fmt.Errorf("members %s: %w", conv, err)
	}
	return ms, nil
}

func (s *Store) members(ctx context.Context, conv string) ([]store.Member, error) {
	var out []store.Member
	err := scanAll(s.query(ctx, true, s.stmt.members, conv).Iter(), func(sc gocql.Scanner) error {
		var m store.Member
		var joined int64
		if err := sc.Scan(&m.UserID, &joined, &m.Role); err != nil {
			return err
		}
		m.JoinedSeq = uint64(joined)
		out = append(out, m)
		return nil
	})
	return out, err
}

// Member implements store.MessageStore.
func (s *Store) Member(ctx context.Context, conv, user string) (store.Member, bool, error) {
	if err := errors.Join(checkID("conversation", conv), checkID("user", user)); err != nil {
		return store.Member{}, false, fmt.Errorf("member %s of %s: %w", user, conv, err)
	}
	if err := s.begin(ctx); err != nil {
		return store.Member{}, false, fmt.Errorf("member %s of %s: %w", user, conv, err)
	}
	m := store.Member{UserID: user}
	var joined int64
	err := s.query(ctx, true, s.stmt.member, conv, user).Scan(&joined, &m.Role)
	if errors.Is(err, gocql.ErrNotFound) {
		return store.Member{}, false, nil
	}
	if err != nil {
		return store.Member{}, false, fmt.Errorf("member %s of %s: %w", user, conv, err)
	}
	m.JoinedSeq = uint64(joined)
	return m, true, nil
}

// Inbox implements store.MessageStore: conversation ids sorted bytewise.
func (s *Store) Inbox(ctx context.Context, user string) ([]string, error) {
	if err := checkID("user", user); err != nil {
		return nil, fmt.Errorf("inbox %s: %w", user, err)
	}
	if err := s.begin(ctx); err != nil {
		return nil, fmt.Errorf("inbox %s: %w", user, err)
	}
	var out []string
	err := scanAll(s.query(ctx, true, s.stmt.inbox, user).Iter(), func(sc gocql.Scanner) error {
		var conv string
		err := sc.Scan(&conv)
		out = append(out, conv)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("inbox %s: %w", user, err)
	}
	return out, nil
}

// applyEffects writes effects (store.MessageStore.Append: the member rows
// and title the chat role decided for stored messages) as given, in order:
// inbox entries first, so whoever is a member has the conversation in its
// inbox, then the member rows in single-partition batches, then the
// title. Decision (issue 15): it reads nothing and decides nothing; the
// rules are the chat role's. Every member and title write carries USING
// TIMESTAMP = the effect's seq, so writing the effects again later, or an
// older one after a newer one, never undoes the newer one. (The title has
// its own column, renamed_title, because the conversation row is written
// by a conditional insert, whose timestamp is the wall clock: a seq would
// never beat it.)
func (s *Store) applyEffects(ctx context.Context, conv string, effects []store.Effect) error {
	var (
		memberStmts []gocql.BatchEntry
		inbox       []string
		inInbox     = map[string]bool{}
		renames     []store.Effect
	)
	for _, e := range effects {
		seq, u := int64(e.Seq), e.Member.UserID
		switch e.Kind {
		case store.EffectPutMember:
			memberStmts = append(memberStmts, gocql.BatchEntry{Stmt: s.stmt.addMember,
				Args: []any{conv, u, int64(e.Member.JoinedSeq), e.Member.Role, seq}, Idempotent: true})
			if !inInbox[u] {
				inInbox[u] = true
				inbox = append(inbox, u)
			}
		case store.EffectRemoveMember:
			memberStmts = append(memberStmts, gocql.BatchEntry{Stmt: s.stmt.removeMember, Args: []any{seq, conv, u}, Idempotent: true})
		case store.EffectRename:
			renames = append(renames, e)
		}
	}
	if len(inbox) > 0 {
		if err := parallel(ctx, len(inbox), inboxWriters, func(i int) error {
			return s.query(ctx, true, s.stmt.addInbox, inbox[i], conv).Exec()
		}); err != nil {
			return fmt.Errorf("inbox: %w", err)
		}
	}
	for lo := 0; lo < len(memberStmts); lo += memberBatch {
		b := s.sess.Batch(gocql.UnloggedBatch)
		b.Consistency(gocql.LocalQuorum)
		b.Entries = append(b.Entries, memberStmts[lo:min(lo+memberBatch, len(memberStmts))]...)
		if err := b.ExecContext(ctx); err != nil {
			return fmt.Errorf("members: %w", err)
		}
	}
	for _, e := range renames {
		if err := s.query(ctx, true, s.stmt.rename, int64(e.Seq), e.Title, conv).Exec(); err != nil {
			return fmt.Errorf("rename: %w", err)
		}
	}
	return nil
}

// parallel runs fn(0..n-1) with at most limit running at once and returns
// the errors joined.
func parallel(ctx context.Context, n, limit int, fn func(i int) error) error {
	if n == 1 {
		return fn(0)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		sem  = make(chan struct{}, limit)
	)
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return errors.Join(append(errs, ctx.Err())...)
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(i); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// AdvanceReceipt implements store.MessageStore with one write: USING
// TIMESTAMP = seq makes the highest pointer win on every replica without
// reading first, so a lower seq changes nothing. kind must be
// RECEIPT_KIND_DELIVERED or RECEIPT_KIND_READ; seq 0 is a no-op and seq
// above 2^63-1 an error.
func (s *Store) AdvanceReceipt(ctx context.Context, conv, user string, kind parleyv1.ReceiptKind, seq uint64) error {
	if err := errors.Join(checkID("conversation", conv), checkID("user", user)); err != nil {
		return fmt.Errorf("receipt %s of %s: %w", user, conv, err)
	}
	if kind != parleyv1.ReceiptKind_RECEIPT_KIND_DELIVERED && kind != parleyv1.ReceiptKind_RECEIPT_KIND_READ {
		return fmt.Errorf("receipt %s of %s: unsupported kind %v", user, conv, kind)
	}
	if seq > maxSeq {
		return fmt.Errorf("receipt %s of %s: seq %d above %d", user, conv, seq, uint64(maxSeq))
	}
	if err := s.begin(ctx); err != nil {
		return fmt.Errorf("receipt %s of %s: %w", user, conv, err)
	}
	r := store.Receipt{UserID: user, DeliveredSeq: seq}
	if kind == parleyv1.ReceiptKind_RECEIPT_KIND_READ {
		r = store.Receipt{UserID: user, ReadSeq: seq}
	}
	for _, w := range s.receiptWrites(conv, r) {
		if err := s.query(ctx, w.Idempotent, w.Stmt, w.Args...).Exec(); err != nil {
			return fmt.Errorf("receipt %s of %s: %w", user, conv, err)
		}
	}
	return nil
}

// receiptWrites returns the statements that raise r's pointers in conv: the
// read pointer (which raises delivered with it) when set, and the delivered
// pointer when above it, each at USING TIMESTAMP = its seq, so the highest
// value wins on every replica without a read; idempotent, hence retried.
// None for zero pointers.
func (s *Store) receiptWrites(conv string, r store.Receipt) []gocql.BatchEntry {
	var ws []gocql.BatchEntry
	if r.ReadSeq > 0 {
		ts := int64(r.ReadSeq)
		ws = append(ws, gocql.BatchEntry{Stmt: s.stmt.advanceRead, Args: []any{ts, ts, ts, conv, r.UserID}, Idempotent: true})
	}
	if r.DeliveredSeq > r.ReadSeq {
		ts := int64(r.DeliveredSeq)
		ws = append(ws, gocql.BatchEntry{Stmt: s.stmt.advanceDeliver, Args: []any{ts, ts, conv, r.UserID}, Idempotent: true})
	}
	return ws
}

const (
	// receiptsPerBatch bounds the users of one receipts batch, keeping it
	// under Cassandra's batch_size_warn_threshold (64 KiB by default).
	receiptsPerBatch = 100
	// receiptConvsPerBatch bounds the conversations (partitions) of one
	// receipts batch at Cassandra's
	// unlogged_batch_across_partitions_warn_threshold (10 by default),
	// above which every batch is logged as a warning. Each partition is
	// still one mutation; the batch saves requests: on a 2-core node a
	// request, not a row, is most of what a write costs (docs/benchmarks.md,
	// "Receipts of many conversations in one batch").
	receiptConvsPerBatch = 10
	// receiptBatchesInFlight bounds the batches of one AdvanceReceiptsOf
	// running at once.
	receiptBatchesInFlight = 8
)

// AdvanceReceipts implements store.MessageStore: AdvanceReceiptsOf for one
// conversation.
func (s *Store) AdvanceReceipts(ctx context.Context, conv string, rs []store.Receipt) error {
	return s.AdvanceReceiptsOf(ctx, []store.ConversationReceipts{{ConversationID: conv, Receipts: rs}})[0]
}

// receiptBatch is one unlogged batch of AdvanceReceiptsOf and the elements
// of cs it writes (some of their pointers, or all).
type receiptBatch struct {
	entries []gocql.BatchEntry
	elems   []int
	users   int
}

// AdvanceReceiptsOf implements store.MessageStore with unlogged batches of up
// to receiptConvsPerBatch conversations and receiptsPerBatch users, at most
// receiptBatchesInFlight at a time. Every pointer keeps its own USING
// TIMESTAMP = seq as in AdvanceReceipt, so batches may land in any order.
func (s *Store) AdvanceReceiptsOf(ctx context.Context, cs []store.ConversationReceipts) []error {
	batches, errs := packReceipts(cs, s.receiptWrites)
	if len(batches) == 0 {
		return errs
	}
	if err := s.begin(ctx); err != nil {
		for _, b := range batches {
			failReceipts(cs, errs, b, err)
		}
		return errs
	}
	var mu sync.Mutex // errs, once the batches run
	var wg sync.WaitGroup
	sem := make(chan struct{}, receiptBatchesInFlight)
	for _, rb := range batches {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			b := s.sess.Batch(gocql.UnloggedBatch)
			b.Consistency(gocql.LocalQuorum)
			b.Entries = rb.entries
			if err := b.ExecContext(ctx); err != nil {
				mu.Lock()
				failReceipts(cs, errs, rb, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

// packReceipts validates each element of cs and packs the writes of the valid
// ones (writes: the statements of one pointer, Store.receiptWrites) into
// batches of at most receiptConvsPerBatch conversations and receiptsPerBatch
// users. A conversation of more than receiptsPerBatch users spans batches.
// errs holds one entry per element: the invalid ones' errors, nil otherwise.
// Elements without a non-zero pointer are in no batch.
func packReceipts(cs []store.ConversationReceipts, writes func(conv string, r store.Receipt) []gocql.BatchEntry) (batches []*receiptBatch, errs []error) {
	errs = make([]error, len(cs))
	cur := &receiptBatch{}
	for i, c := range cs {
		if errs[i] = checkReceipts(c); errs[i] != nil {
			continue
		}
		for rs := c.Receipts; len(rs) > 0; {
			chunk := rs[:min(len(rs), receiptsPerBatch)]
			rs = rs[len(chunk):]
			var ws []gocql.BatchEntry
			for _, r := range chunk {
				ws = append(ws, writes(c.ConversationID, r)...)
			}
			if len(ws) == 0 {
				continue
			}
			if cur.users+len(chunk) > receiptsPerBatch || len(cur.elems) == receiptConvsPerBatch {
				batches, cur = append(batches, cur), &receiptBatch{}
			}
			cur.entries = append(cur.entries, ws...)
			cur.elems = append(cur.elems, i)
			cur.users += len(chunk)
		}
	}
	if len(cur.entries) > 0 {
		batches = append(batches, cur)
	}
	return batches, errs
}

// checkReceipts validates one element of AdvanceReceiptsOf.
func checkReceipts(c store.ConversationReceipts) error {
	conv := c.ConversationID
	if err := checkID("conversation", conv); err != nil {
		return fmt.Errorf("receipts of %s: %w", conv, err)
	}
	for _, r := range c.Receipts {
		if err := checkID("user", r.UserID); err != nil {
			return fmt.Errorf("receipt %s of %s: %w", r.UserID, conv, err)
		}
		if r.DeliveredSeq > maxSeq || r.ReadSeq > maxSeq {
			return fmt.Errorf("receipt %s of %s: seq above %d", r.UserID, conv, uint64(maxSeq))
		}
	}
	return nil
}

// failReceipts records err for every element b wrote. An element spanning
// batches that ran concurrently keeps whichever error was recorded first.
func failReceipts(cs []store.ConversationReceipts, errs []error, b *receiptBatch, err error) {
	for _, i := range b.elems {
		if errs[i] == nil {
			errs[i] = fmt.Errorf("receipts of %s: %w", cs[i].ConversationID, err)
		}
	}
}

// Receipts implements store.MessageStore: sorted by user id.
func (s *Store) Receipts(ctx context.Context, conv string) ([]store.Receipt, error) {
	if err := checkID("conversation", conv); err != nil {
		return nil, fmt.Errorf("receipts %s: %w", conv, err)
	}
	if err := s.begin(ctx); err != nil {
		return nil, fmt.Errorf("receipts %s: %w", conv, err)
	}
	var out []store.Receipt
	err := scanAll(s.query(ctx, true, s.stmt.receipts, conv).Iter(), func(sc gocql.Scanner) error {
		var r store.Receipt
		var delivered, read int64
		if err := sc.Scan(&r.UserID, &delivered, &read); err != nil {
			return err
		}
		r.DeliveredSeq, r.ReadSeq = uint64(delivered), uint64(read)
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("receipts %s: %w", conv, err)
	}
	return out, nil
}

// Receipt implements store.MessageStore: Receipt{UserID: user} when none is
// stored.
func (s *Store) Receipt(ctx context.Context, conv, user string) (store.Receipt, error) {
	if err := errors.Join(checkID("conversation", conv), checkID("user", user)); err != nil {
		return store.Receipt{}, fmt.Errorf("receipt %s of %s: %w", user, conv, err)
	}
	if err := s.begin(ctx); err != nil {
		return store.Receipt{}, fmt.Errorf("receipt %s of %s: %w", user, conv, err)
	}
	var delivered, read int64
	err := s.query(ctx, true, s.stmt.receipt, conv, user).Scan(&delivered, &read)
	if err != nil && !errors.Is(err, gocql.ErrNotFound) {
		return store.Receipt{}, fmt.Errorf("receipt %s of %s: %w", user, conv, err)
	}
	return store.Receipt{UserID: user, DeliveredSeq: uint64(delivered), ReadSeq: uint64(read)}, nil
}
