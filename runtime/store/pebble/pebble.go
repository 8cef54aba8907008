// Package pebble is the embedded MessageStore, on CockroachDB's Pebble
// (an LSM key-value store) in one local directory.
//
// Durability: Append, CreateConversation and membership changes are committed
// with a synced WAL write before they return. Concurrent synced commits share
// one fsync (Pebble's commit pipeline groups them), so appends of many
// conversations do not queue behind one another's disk flush. Receipt
// pointers are written without waiting for the WAL: a crash may lose the
// last instants of pointer moves (never messages), which the next ack or
// read raises again; they are written once a second per member anyway, and
// an fsync each would cost more than they are worth.
//
// Concurrency: conditional appends are serialised per conversation by a
// lock of that conversation alone, held across the "is any seq taken" check
// and the synced write, so two Appends of one conversation can never both
// succeed. Appends of different conversations commit concurrently.
//
// Reads: a block cache (DefaultCacheSize unless WithCacheSize) and Bloom
// filters on every level, so point reads (conversation and member rows) skip
// the tables that cannot hold their key. The "is any seq taken" check of an
// Append is answered from a head hint (the highest stored seq, kept for the
// conversations appended to recently) when the new seqs are all above it, which is every append of the
// conversation's owner; only a miss scans the table. This process is the
// database's only writer (Pebble locks the directory), so the hint is exact.
package pebble

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"os"
	"sync"
	"time"

	pebbledb "github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	"github.com/cockroachdb/pebble/vfs"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
)

// ErrClosed is returned by every method called after Close.
var ErrClosed = errors.New("pebble store closed")

// lockStripes is the number of per-conversation (and per-receipt) locks.
// Conversations hashing to one stripe serialise their appends; 256 keeps that
// rare at the concurrency one process sees while bounding memory.
const lockStripes = 256

// Option configures Open.
type Option func(*config)

type config struct {
	fs        vfs.FS
	logger    *slog.Logger
	cacheSize int64
}

// DefaultCacheSize is the block cache of a store opened without
// WithCacheSize: 64 MiB. Pebble's own default (8 MiB) is smaller than the
// index and filter blocks of a store of a few million messages, and every
// miss costs a read and a decompression (measured: 30% of the server's CPU
// in `parley bench dm`, docs/benchmarks.md).
const DefaultCacheSize = 64 << 20

// WithCacheSize sets the block cache size in bytes (default
// DefaultCacheSize). The cache is allocated as it fills, outside the Go heap.
func WithCacheSize(n int64) Option {
	return func(c *config) { c.cacheSize = n }
}

// headHintsPerStripe bounds the head hints of one lock stripe; past it an
// arbitrary hint is dropped (its next Append scans once). 256 stripes × 1024
// hints keep the hints of ~260,000 conversations, a few tens of MiB at most.
const headHintsPerStripe = 1024

// WithFS makes the store use fs instead of the operating system's file
// system, e.g. vfs.NewStrictMem() in crash tests.
func WithFS(fs vfs.FS) Option {
	return func(c *config) { c.fs = fs }
}

// WithLogger sends Pebble's own log lines to l (default slog.Default()):
// informational ones (WAL replay, ...) at debug level, background errors
// (failed flushes or compactions) at error level, slow disk operations at
// warn level, and fatal ones at error level before Pebble's fatal exit.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// Store is a store.MessageStore on a Pebble database. It is safe for
// concurrent use.
type Store struct {
	db *pebbledb.DB

	// mu guards closed: every operation holds it for reading, so Close waits
	// for in-flight operations instead of Pebble panicking under them.
	mu     sync.RWMutex
	closed bool

	seed         maphash.Seed
	convLocks    keyLocks                       // Append and CreateConversation, by conversation
	hintLocks    [lockStripes]sync.Mutex        // guard heads
	heads        [lockStripes]map[string]uint64 // head hints by stripe of the conversation
	receiptLocks [lockStripes]sync.Mutex        // AdvanceReceipt, by conversation and user
}

var _ store.MessageStore = (*Store)(nil)

// Open opens (creating if needed) the store in directory dir.
func Open(dir string, opts ...Option) (*Store, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.fs == nil {
		cfg.fs = vfs.Default
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if err := ensureDir(cfg.fs, dir); err != nil {
		return nil, fmt.Errorf("open pebble store %s: %w", dir, err)
	}
	log := cfg.logger
	if cfg.cacheSize <= 0 {
		cfg.cacheSize = DefaultCacheSize
	}
	cache := pebbledb.NewCache(cfg.cacheSize)
	defer cache.Unref() // the DB holds its own reference
	levels := make([]pebbledb.LevelOptions, 7)
	for i := range levels {
		levels[i].FilterPolicy = bloom.FilterPolicy(10) // ~1% false positives
	}
	db, err := pebbledb.Open(dir, &pebbledb.Options{
		FS:     cfg.fs,
		Cache:  cache,
		Levels: levels,
		Logger: slogLogger{log},
		EventListener: &pebbledb.EventListener{
			// Failed flushes and compactions (e.g. disk full) matter to an
			// operator; Pebble's default would log them as info.
			BackgroundError: func(err error) {
				log.Error("pebble background error", "component", "pebble", "err", err)
			},
			DiskSlow: func(info pebbledb.DiskSlowInfo) {
				log.Warn("pebble disk slow", "component", "pebble", "info", info.String())
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("open pebble store %s: %w", dir, err)
	}
	st := &Store{db: db, seed: maphash.MakeSeed()}
	for i := range st.heads {
		st.heads[i] = make(map[string]uint64)
	}
	return st, nil
}

// slogLogger adapts slog to pebble.Logger.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Infof(format string, args ...any) {
	s.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}

// Fatalf is only called on corruption or broken invariants, where Pebble
// cannot continue; it exits like Pebble's default logger.
func (s slogLogger) Fatalf(format string, args ...any) {
	s.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
	os.Exit(1)
}

// ensureDir creates dir and its missing parents, syncing each parent so the
// new entries survive a power failure. Pebble syncs the files inside dir,
// but not dir's own entry: without this, a crash soon after the first start
// could lose the whole store, acknowledged appends included.
func ensureDir(fs vfs.FS, dir string) error {
	if _, err := fs.Stat(dir); err == nil || !errors.Is(err, os.ErrNotExist) {
		return err
	}
	parent := fs.PathDir(dir)
	if parent != dir {
		if err := ensureDir(fs, parent); err != nil {
			return err
		}
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	d, err := fs.OpenDir(parent)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// Close flushes and closes the database. Later calls return nil; other
// methods called after Close return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close pebble store: %w", err)
	}
	return nil
}

// acquire starts an operation: it fails after Close and otherwise holds off
// Close until release.
func (s *Store) acquire(ctx context.Context) (release func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, ErrClosed
	}
	return s.mu.RUnlock, nil
}

func (s *Store) stripe(locks *[lockStripes]sync.Mutex, parts ...string) *sync.Mutex {
	return &locks[s.stripeOf(parts...)]
}

func (s *Store) stripeOf(parts ...string) int {
	var h maphash.Hash
	h.SetSeed(s.seed)
	for _, p := range parts {
		h.WriteString(p)
		h.WriteByte(0)
	}
	return int(h.Sum64() % lockStripes)
}

// Append implements store.MessageStore. msgs must carry conversation_id conv
// and consecutive seqs starting at msgs[0].Seq >= 1; an empty msgs is a
// no-op (effects included). The messages, effects and the change events'
// effects on their targets commit in one synced batch: all or nothing.
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
	if first > ^uint64(0)-uint64(len(msgs)) {
		return fmt.Errorf("append %s seq %d: seq overflows", conv, first)
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return fmt.Errorf("append %s seq %d: %w", conv, first, err)
	}
	defer release()
	// Marshal before taking the conversation lock, which only needs to
	// cover check + commit.
	b := s.db.NewBatch()
	defer func() { _ = b.Close() }() // releases the batch; Commit reported the write
	for i, m := range msgs {
		want := first + uint64(i)
		if m.GetSeq() != want {
			return fmt.Errorf("append %s seq %d: message %d has seq %d, want consecutive seqs", conv, first, i, m.GetSeq())
		}
		if m.GetConversationId() != conv {
			return fmt.Errorf("append %s seq %d: message has conversation_id %q", conv, want, m.GetConversationId())
		}
		data, err := proto.Marshal(m)
		if err != nil {
			return fmt.Errorf("append %s seq %d: marshal: %w", conv, want, err)
		}
		if err := b.Set(messageKey(conv, want), data, nil); err != nil {
			return fmt.Errorf("append %s seq %d: %w", conv, want, err)
		}
	}
	last := first + uint64(len(msgs)) - 1
	if err := store.CheckEffects(first, last, effects); err != nil {
		return fmt.Errorf("append %s seq %d: %w", conv, first, err)
	}
	for _, e := range effects {
		if e.Kind != store.EffectRename {
			if err := checkID("user", e.Member.UserID); err != nil {
				return fmt.Errorf("append %s seq %d: %w", conv, e.Seq, err)
			}
		}
	}

	defer s.convLocks.lock(conv)()

	// conv's lock is held, so its hint can change only here; the stripe's
	// lock guards the map the hint shares with other conversations.
	stripe := s.stripeOf(conv)
	s.hintLocks[stripe].Lock()
	head, known := s.heads[stripe][conv]
	s.hintLocks[stripe].Unlock()
	if !known {
		var err error
		if head, err = s.head(conv); err != nil {
			return fmt.Errorf("append %s seq %d: %w", conv, first, err)
		}
	}
	if first <= head {
		// Seqs at or below the head (a retry, or a competing owner): find
		// the lowest taken seq in range, if any (seqs may have gaps).
		taken, ok, err := s.firstMessageIn(conv, first, last)
		if err != nil {
			return fmt.Errorf("append %s seq %d: %w", conv, first, err)
		}
		if ok {
			return fmt.Errorf("append %s seq %d: %w", conv, taken, store.ErrSeqTaken)
		}
	}
	if err := s.applyEffects(b, conv, effects); err != nil {
		return fmt.Errorf("append %s seq %d: %w", conv, first, err)
	}
	if err := s.applyChanges(b, conv, msgs); err != nil {
		return fmt.Errorf("append %s seq %d: %w", conv, first, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("append %s seq %d: %w", conv, first, err)
	}
	if err := s.db.Apply(b, pebbledb.Sync); err != nil {
		// The batch may or may not be in: the next Append reads the head.
		s.setHint(stripe, conv, 0, false)
		return fmt.Errorf("append %s seq %d: commit: %w", conv, first, err)
	}
	s.setHint(stripe, conv, max(head, last), true)
	return nil
}

// setHint records conv's head hint (or forgets it, !ok), dropping an
// arbitrary hint of a full stripe.
func (s *Store) setHint(stripe int, conv string, head uint64, ok bool) {
	s.hintLocks[stripe].Lock()
	defer s.hintLocks[stripe].Unlock()
	heads := s.heads[stripe]
	if !ok {
		delete(heads, conv)
		return
	}
	if _, known := heads[conv]; !known && len(heads) >= headHintsPerStripe {
		for k := range heads {
			delete(heads, k)
			break
		}
	}
	heads[conv] = head
}

// firstMessageIn returns the lowest stored seq of conv in [lo, hi].
func (s *Store) firstMessageIn(conv string, lo, hi uint64) (uint64, bool, error) {
	upper := prefixEnd(prefix(tableMessage, conv))
	if hi < ^uint64(0) {
		upper = messageKey(conv, hi+1)
	}
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: messageKey(conv, lo), UpperBound: upper})
	if err != nil {
		return 0, false, err
	}
	defer func() { _ = it.Close() }() // it.Error() reported the read
	if !it.First() {
		return 0, false, it.Error()
	}
	seq, err := messageSeq(it.Key(), len(prefix(tableMessage, conv)))
	return seq, err == nil, err
}

// applyEffects adds effects (store.MessageStore.Append: the member rows
// and title the chat role decided) to b, in order, so they commit with the
// messages or not at all. Decision (issue 15): the store persists what it
// is given and reads nothing to decide it; the only read is the
// conversation record a rename rewrites, under conv's lock, so it cannot
// change before b commits.
func (s *Store) applyEffects(b *pebbledb.Batch, conv string, effects []store.Effect) error {
	var renamed *store.Conversation // the record as this batch renamed it
	for _, e := range effects {
		var err error
		switch e.Kind {
		case store.EffectPutMember:
			m := e.Member
			err = errors.Join(b.Set(memberKey(conv, m.UserID), encodeMember(m.JoinedSeq, m.Role), nil),
				b.Set(inboxKey(m.UserID, conv), nil, nil))
		case store.EffectRemoveMember:
			err = b.Delete(memberKey(conv, e.Member.UserID), nil)
		case store.EffectRename:
			if renamed == nil {
				c, cerr := s.conversation(conv)
				if cerr != nil {
					return fmt.Errorf("seq %d: rename: %w", e.Seq, cerr)
				}
				renamed = &c
			}
			renamed.Title = e.Title
		}
		if err != nil {
			return fmt.Errorf("seq %d: %w", e.Seq, err)
		}
	}
	if renamed == nil {
		return nil
	}
	data, err := encodeConversation(*renamed)
	if err != nil {
		return err
	}
	return b.Set(conversationKey(conv), data, nil)
}

// applyChanges adds the effects of msgs' change events (EDITED, DELETED,
// REACTION) to b, in the same batch as the events themselves, so a change
// and its effect commit together. It runs under conv's lock.
func (s *Store) applyChanges(b *pebbledb.Batch, conv string, msgs []*parleyv1.Message) error {
	var overlay map[uint64]*parleyv1.Message
	for _, m := range msgs {
		if !store.IsChange(m.GetKind()) {
			continue
		}
		if overlay == nil {
			// The batch's own rows, which an effect may read or rewrite.
			overlay = make(map[uint64]*parleyv1.Message, len(msgs))
			for _, x := range msgs {
				overlay[x.GetSeq()] = x
			}
		}
		if err := s.applyChange(b, conv, m, overlay); err != nil {
			return fmt.Errorf("seq %d: %w", m.GetSeq(), err)
		}
	}
	return nil
}

// applyChange adds change event ev's effect to b (store.MessageStore.
// ApplyChange). overlay maps seqs to the rows b writes, which it reads
// before the database and updates with what it writes.
func (s *Store) applyChange(b *pebbledb.Batch, conv string, ev *parleyv1.Message, overlay map[uint64]*parleyv1.Message) error {
	load := func(seq uint64) (*parleyv1.Message, error) {
		if m := overlay[seq]; m != nil {
			return m, nil
		}
		return s.message(conv, seq)
	}
	put := func(m *parleyv1.Message) error {
		data, err := proto.Marshal(m)
		if err != nil {
			return fmt.Errorf("marshal seq %d: %w", m.GetSeq(), err)
		}
		overlay[m.GetSeq()] = m
		return b.Set(messageKey(conv, m.GetSeq()), data, nil)
	}
	// clearText drops the text of a superseded EDITED event: a message's
	// text lives in its own row and in its newest EDITED event only.
	clearText := func(seq uint64) error {
		m, err := load(seq)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil || m.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_EDITED || m.GetText() == "" {
			return err
		}
		c := proto.CloneOf(m)
		c.Text = ""
		return put(c)
	}
	target, err := load(ev.GetTargetSeq())
	if err != nil {
		return fmt.Errorf("target seq %d: %w", ev.GetTargetSeq(), err)
	}
	upd := store.Changed(target, ev)
	if upd != nil {
		if err := put(upd); err != nil {
			return err
		}
	}
	if ev.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_REACTION {
		return nil // reactions keep no text to clear
	}
	if upd != nil {
		if prev := target.GetChangeSeq(); prev != 0 {
			return clearText(prev)
		}
		return nil
	}
	if target.GetChangeSeq() > ev.GetSeq() {
		return clearText(ev.GetSeq())
	}
	return nil
}

// ApplyChange implements store.MessageStore: the effect of ev, in one
// synced batch under conv's lock. Append already applies it with the event;
// this repairs nothing on Pebble, but keeps the contract of every backend.
func (s *Store) ApplyChange(ctx context.Context, conv string, ev *parleyv1.Message) error {
	if err := checkID("conversation", conv); err != nil {
		return fmt.Errorf("apply change %s: %w", conv, err)
	}
	if !store.IsChange(ev.GetKind()) {
		return fmt.Errorf("apply change %s seq %d: kind %v is not a change", conv, ev.GetSeq(), ev.GetKind())
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return fmt.Errorf("apply change %s seq %d: %w", conv, ev.GetSeq(), err)
	}
	defer release()
	defer s.convLocks.lock(conv)()
	b := s.db.NewBatch()
	defer func() { _ = b.Close() }() // releases the batch; Commit reported the write
	if err := s.applyChange(b, conv, ev, map[uint64]*parleyv1.Message{}); err != nil {
		return fmt.Errorf("apply change %s seq %d: %w", conv, ev.GetSeq(), err)
	}
	if b.Empty() {
		return nil
	}
	if err := s.db.Apply(b, pebbledb.Sync); err != nil {
		return fmt.Errorf("apply change %s seq %d: commit: %w", conv, ev.GetSeq(), err)
	}
	return nil
}

// get returns a copy of key's value.
func (s *Store) get(key []byte) ([]byte, bool, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := append([]byte(nil), v...)
	return out, true, closer.Close()
}

// Head implements store.MessageStore: one seek to the last key of conv's
// message range. A conversation with no messages (or none at all) has head 0.
func (s *Store) Head(ctx context.Context, conv string) (uint64, error) {
	if err := checkID("conversation", conv); err != nil {
		return 0, fmt.Errorf("head %s: %w", conv, err)
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("head %s: %w", conv, err)
	}
	defer release()
	seq, err := s.head(conv)
	if err != nil {
		return 0, fmt.Errorf("head %s: %w", conv, err)
	}
	return seq, nil
}

// head returns the highest stored seq of conv, 0 when it has none.
func (s *Store) head(conv string) (uint64, error) {
	p := prefix(tableMessage, conv)
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return 0, err
	}
	defer func() { _ = it.Close() }() // it.Error() reported the read
	if !it.Last() {
		return 0, it.Error()
	}
	return messageSeq(it.Key(), len(p))
}

// Messages implements store.MessageStore. p.Limit outside 1..store.MaxLimit,
// or both p.Before and p.After set, is an error (not clamped): it is a caller
// bug, and the read paths map their own defaults first. A conversation that
// does not exist reads as empty.
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
	// The page lies in seqs [lo, hi); hi == 0 means unbounded.
	lo := max(p.MinSeq, 1)
	if p.After != 0 {
		if p.After == ^uint64(0) {
			return nil, false, nil
		}
		lo = max(lo, p.After+1)
	}
	hi := p.Before
	if hi != 0 && hi <= lo {
		return nil, false, nil
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("messages %s: %w", conv, err)
	}
	defer release()

	pre := prefix(tableMessage, conv)
	upper := prefixEnd(pre)
	if hi != 0 {
		upper = messageKey(conv, hi)
	}
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: messageKey(conv, lo), UpperBound: upper})
	if err != nil {
		return nil, false, fmt.Errorf("messages %s: %w", conv, err)
	}
	defer func() { _ = it.Close() }() // it.Error() reported the read
	// Newest first unless paging forward.
	valid, step := it.Last(), it.Prev
	if forward {
		valid, step = it.First(), it.Next
	}
	msgs := make([]*parleyv1.Message, 0, min(p.Limit, 64))
	for ; valid && len(msgs) < p.Limit; valid = step() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, false, fmt.Errorf("messages %s: %w", conv, err)
		}
		m := new(parleyv1.Message)
		if err := proto.Unmarshal(v, m); err != nil {
			seq, _ := messageSeq(it.Key(), len(pre))
			return nil, false, fmt.Errorf("messages %s seq %d: unmarshal: %w", conv, seq, err)
		}
		msgs = append(msgs, m)
	}
	if err := it.Error(); err != nil {
		return nil, false, fmt.Errorf("messages %s: %w", conv, err)
	}
	return msgs, valid, nil
}

// Message implements store.MessageStore; a missing seq wraps store.ErrNotFound.
func (s *Store) Message(ctx context.Context, conv string, seq uint64) (*parleyv1.Message, error) {
	if err := checkID("conversation", conv); err != nil {
		return nil, fmt.Errorf("message %s seq %d: %w", conv, seq, err)
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("message %s seq %d: %w", conv, seq, err)
	}
	defer release()
	m, err := s.message(conv, seq)
	if err != nil {
		return nil, fmt.Errorf("message %s seq %d: %w", conv, seq, err)
	}
	return m, nil
}

// message reads the message at seq; a missing one is store.ErrNotFound.
func (s *Store) message(conv string, seq uint64) (*parleyv1.Message, error) {
	v, ok, err := s.get(messageKey(conv, seq))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, store.ErrNotFound
	}
	m := new(parleyv1.Message)
	if err := proto.Unmarshal(v, m); err != nil {
		return nil, fmt.Errorf("unmarshal: %w", err)
	}
	return m, nil
}

// conversationRecord is the stored form of a store.Conversation (its id is
// the key). CreatedAt is kept in Unix milliseconds, the precision of the
// Cassandra backend, so both backends return the same value.
type conversationRecord struct {
	Kind        string `json:"kind"`
	Title       string `json:"title,omitempty"`
	HomeRegion  string `json:"home_region,omitempty"`
	CreatedBy   string `json:"created_by,omitempty"`
	CreatedAtMs *int64 `json:"created_at_ms,omitempty"`
}

// encodeConversation returns the stored form of c.
func encodeConversation(c store.Conversation) ([]byte, error) {
	rec := conversationRecord{Kind: c.Kind, Title: c.Title, HomeRegion: c.HomeRegion, CreatedBy: c.CreatedBy}
	if !c.CreatedAt.IsZero() {
		ms := c.CreatedAt.UnixMilli()
		rec.CreatedAtMs = &ms
	}
	return json.Marshal(rec)
}

// CreateConversation implements store.MessageStore. c.CreatedAt is stored
// with millisecond precision; an id already taken wraps store.ErrExists.
func (s *Store) CreateConversation(ctx context.Context, c store.Conversation) error {
	if err := checkID("conversation", c.ID); err != nil {
		return fmt.Errorf("create conversation %s: %w", c.ID, err)
	}
	data, err := encodeConversation(c)
	if err != nil {
		return fmt.Errorf("create conversation %s: %w", c.ID, err)
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return fmt.Errorf("create conversation %s: %w", c.ID, err)
	}
	defer release()
	defer s.convLocks.lock(c.ID)()
	key := conversationKey(c.ID)
	_, found, err := s.get(key)
	if err != nil {
		return fmt.Errorf("create conversation %s: %w", c.ID, err)
	}
	if found {
		return fmt.Errorf("create conversation %s: %w", c.ID, store.ErrExists)
	}
	if err := s.db.Set(key, data, pebbledb.Sync); err != nil {
		return fmt.Errorf("create conversation %s: %w", c.ID, err)
	}
	return nil
}

// Conversation implements store.MessageStore; an unknown id wraps
// store.ErrNotFound. CreatedAt is in UTC.
func (s *Store) Conversation(ctx context.Context, id string) (store.Conversation, error) {
	if err := checkID("conversation", id); err != nil {
		return store.Conversation{}, fmt.Errorf("conversation %s: %w", id, err)
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return store.Conversation{}, fmt.Errorf("conversation %s: %w", id, err)
	}
	defer release()
	c, err := s.conversation(id)
	if err != nil {
		return store.Conversation{}, fmt.Errorf("conversation %s: %w", id, err)
	}
	return c, nil
}

func (s *Store) conversation(id string) (store.Conversation, error) {
	v, ok, err := s.get(conversationKey(id))
	if err != nil {
		return store.Conversation{}, err
	}
	if !ok {
		return store.Conversation{}, store.ErrNotFound
	}
	var rec conversationRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return store.Conversation{}, fmt.Errorf("decode: %w", err)
	}
	c := store.Conversation{ID: id, Kind: rec.Kind, Title: rec.Title, HomeRegion: rec.HomeRegion, CreatedBy: rec.CreatedBy}
	if rec.CreatedAtMs != nil {
		c.CreatedAt = time.UnixMilli(*rec.CreatedAtMs).UTC()
	}
	return c, nil
}

// scan calls fn with the suffix after p and the value of every key starting
// with p, in key order. Both slices are valid only during the call.
func (s *Store) scan(p []byte, fn func(suffix, value []byte) error) error {
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return err
	}
	defer func() { _ = it.Close() }() // it.Error() reported the read
	for valid := it.First(); valid; valid = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		if err := fn(it.Key()[len(p):], v); err != nil {
			return err
		}
	}
	return it.Error()
}

// Members implements store.MessageStore: current members sorted by user id,
// empty for an unknown conversation.
func (s *Store) Members(ctx context.Context, conv string) ([]store.Member, error) {
	if err := checkID("conversation", conv); err != nil {
		return nil, fmt.Errorf("members %s: %w", conv, err)
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("members %s: %w", conv, err)
	}
	defer release()
	var out []store.Member
	err = s.scan(prefix(tableMember, conv), func(user, v []byte) error {
		joined, role, err := decodeMember(string(user), v)
		if err != nil {
			return err
		}
		out = append(out, store.Member{UserID: string(user), JoinedSeq: joined, Role: role})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("members %s: %w", conv, err)
	}
	return out, nil
}

// Member implements store.MessageStore.
func (s *Store) Member(ctx context.Context, conv, user string) (store.Member, bool, error) {
	if err := errors.Join(checkID("conversation", conv), checkID("user", user)); err != nil {
		return store.Member{}, false, fmt.Errorf("member %s of %s: %w", user, conv, err)
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return store.Member{}, false, fmt.Errorf("member %s of %s: %w", user, conv, err)
	}
	defer release()
	v, ok, err := s.get(memberKey(conv, user))
	if err != nil || !ok {
		if err != nil {
			err = fmt.Errorf("member %s of %s: %w", user, conv, err)
		}
		return store.Member{}, false, err
	}
	joined, role, err := decodeMember(user, v)
	if err != nil {
		return store.Member{}, false, fmt.Errorf("member %s of %s: %w", user, conv, err)
	}
	return store.Member{UserID: user, JoinedSeq: joined, Role: role}, true, nil
}

// Inbox implements store.MessageStore: conversation ids sorted bytewise.
func (s *Store) Inbox(ctx context.Context, user string) ([]string, error) {
	if err := checkID("user", user); err != nil {
		return nil, fmt.Errorf("inbox %s: %w", user, err)
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("inbox %s: %w", user, err)
	}
	defer release()
	var out []string
	err = s.scan(prefix(tableInbox, user), func(conv, _ []byte) error {
		out = append(out, string(conv))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("inbox %s: %w", user, err)
	}
	return out, nil
}

// AdvanceReceipt implements store.MessageStore. kind must be
// RECEIPT_KIND_DELIVERED or RECEIPT_KIND_READ. The write is not fsynced (see
// the package comment).
func (s *Store) AdvanceReceipt(ctx context.Context, conv, user string, kind parleyv1.ReceiptKind, seq uint64) error {
	if err := errors.Join(checkID("conversation", conv), checkID("user", user)); err != nil {
		return fmt.Errorf("receipt %s of %s: %w", user, conv, err)
	}
	if kind != parleyv1.ReceiptKind_RECEIPT_KIND_DELIVERED && kind != parleyv1.ReceiptKind_RECEIPT_KIND_READ {
		return fmt.Errorf("receipt %s of %s: unsupported kind %v", user, conv, kind)
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return fmt.Errorf("receipt %s of %s: %w", user, conv, err)
	}
	defer release()
	lock := s.stripe(&s.receiptLocks, conv, user)
	lock.Lock()
	defer lock.Unlock()
	key := receiptKey(conv, user)
	var delivered, read uint64
	v, ok, err := s.get(key)
	if err == nil && ok {
		delivered, read, err = decodeReceipt(user, v)
	}
	if err != nil {
		return fmt.Errorf("receipt %s of %s: %w", user, conv, err)
	}
	newDelivered, newRead := max(delivered, seq), read
	if kind == parleyv1.ReceiptKind_RECEIPT_KIND_READ {
		newRead = max(read, seq)
	}
	if newDelivered == delivered && newRead == read {
		return nil
	}
	if err := s.db.Set(key, encodeReceipt(newDelivered, newRead), pebbledb.NoSync); err != nil {
		return fmt.Errorf("receipt %s of %s: %w", user, conv, err)
	}
	return nil
}

// AdvanceReceipts implements store.MessageStore: AdvanceReceipt for each
// pointer (a local write each; Pebble has no per-statement cost to save).
func (s *Store) AdvanceReceipts(ctx context.Context, conv string, rs []store.Receipt) error {
	for _, r := range rs {
		if err := errors.Join(checkID("conversation", conv), checkID("user", r.UserID)); err != nil {
			return fmt.Errorf("receipt %s of %s: %w", r.UserID, conv, err)
		}
	}
	for _, r := range rs {
		if r.ReadSeq > 0 {
			if err := s.AdvanceReceipt(ctx, conv, r.UserID, parleyv1.ReceiptKind_RECEIPT_KIND_READ, r.ReadSeq); err != nil {
				return err
			}
		}
		if r.DeliveredSeq > r.ReadSeq {
			if err := s.AdvanceReceipt(ctx, conv, r.UserID, parleyv1.ReceiptKind_RECEIPT_KIND_DELIVERED, r.DeliveredSeq); err != nil {
				return err
			}
		}
	}
	return nil
}

// AdvanceReceiptsOf implements store.MessageStore: AdvanceReceipts for each
// conversation.
func (s *Store) AdvanceReceiptsOf(ctx context.Context, cs []store.ConversationReceipts) []error {
	errs := make([]error, len(cs))
	for i, c := range cs {
		errs[i] = s.AdvanceReceipts(ctx, c.ConversationID, c.Receipts)
	}
	return errs
}

// Receipts implements store.MessageStore: sorted by user id.
func (s *Store) Receipts(ctx context.Context, conv string) ([]store.Receipt, error) {
	if err := checkID("conversation", conv); err != nil {
		return nil, fmt.Errorf("receipts %s: %w", conv, err)
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("receipts %s: %w", conv, err)
	}
	defer release()
	var out []store.Receipt
	err = s.scan(prefix(tableReceipt, conv), func(user, v []byte) error {
		delivered, read, err := decodeReceipt(string(user), v)
		if err != nil {
			return err
		}
		out = append(out, store.Receipt{UserID: string(user), DeliveredSeq: delivered, ReadSeq: read})
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
	release, err := s.acquire(ctx)
	if err != nil {
		return store.Receipt{}, fmt.Errorf("receipt %s of %s: %w", user, conv, err)
	}
	defer release()
	r := store.Receipt{UserID: user}
	v, ok, err := s.get(receiptKey(conv, user))
	if err == nil && ok {
		r.DeliveredSeq, r.ReadSeq, err = decodeReceipt(user, v)
	}
	if err != nil {
		return store.Receipt{}, fmt.Errorf("receipt %s of %s: %w", user, conv, err)
	}
	return r, nil
}
