package pebble_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/vfs"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/store/pebble"
	"github.com/parleychat/parley/runtime/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.MessageStore {
		return open(t, t.TempDir())
	})
}

func open(t testing.TB, dir string, opts ...pebble.Option) *pebble.Store {
	t.Helper()
	s, err := pebble.Open(dir, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// msg is the message every test here writes at (conv, seq), so a read can
// be compared against it.
func msg(conv string, seq uint64) *parleyv1.Message {
	return &parleyv1.Message{
		ConversationId: conv,
		Seq:            seq,
		MessageId:      int64(len(conv))<<32 | int64(seq),
		SenderId:       "writer",
		ClientMsgId:    conv + "/" + strconv.FormatUint(seq, 10),
		Kind:           parleyv1.MessageKind_MESSAGE_KIND_TEXT,
		Text:           fmt.Sprintf("%s says %d %s", conv, seq, strings.Repeat("x", int(seq%64))),
		CreatedAt:      1_700_000_000_000 + int64(seq),
	}
}

func msgs(conv string, from, to uint64) []*parleyv1.Message {
	var out []*parleyv1.Message
	for seq := from; seq <= to; seq++ {
		out = append(out, msg(conv, seq))
	}
	return out
}

// checkLog asserts conv holds exactly msg(conv, 1..head) and that head is at
// least minHead.
func checkLog(t *testing.T, s *pebble.Store, conv string, minHead uint64) {
	t.Helper()
	ctx := context.Background()
	head, err := s.Head(ctx, conv)
	if err != nil {
		t.Fatalf("Head(%s): %v", conv, err)
	}
	if head < minHead {
		t.Fatalf("Head(%s) = %d, but Append acknowledged seq %d", conv, head, minHead)
	}
	// Page forward from seq 1 (After 0 would select the newest page).
	var got []*parleyv1.Message
	if head > 0 {
		m, err := s.Message(ctx, conv, 1)
		if err != nil {
			t.Fatalf("Message(%s, 1): %v", conv, err)
		}
		got = append(got, m)
	}
	for after, more := uint64(1), head > 1; more; after = got[len(got)-1].GetSeq() {
		var page []*parleyv1.Message
		page, more, err = s.Messages(ctx, conv, store.Page{After: after, Limit: store.MaxLimit})
		if err != nil {
			t.Fatalf("Messages(%s, after %d): %v", conv, after, err)
		}
		got = append(got, page...)
	}
	if uint64(len(got)) != head {
		t.Fatalf("%s: read %d messages, head %d", conv, len(got), head)
	}
	for i, m := range got {
		if want := msg(conv, uint64(i)+1); !proto.Equal(m, want) {
			t.Fatalf("%s: message %d = %v, want %v", conv, i+1, m, want)
		}
	}
}

// TestCrashKeepsAcknowledgedAppends cuts power (drops every unsynced write)
// while writers append concurrently, and checks that each Append that
// returned nil before the cut survived intact.
func TestCrashKeepsAcknowledgedAppends(t *testing.T) {
	const (
		writers      = 6
		beforeCrash  = 25 // appends each writer completes before the cut
		maxBatchSize = 3
	)
	fs := vfs.NewStrictMem()
	s, err := pebble.Open("db", pebble.WithFS(fs))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}

	var (
		mu      sync.Mutex
		cut     bool
		acked   = make(map[string]uint64) // highest seq acknowledged before the cut
		errs    = make([]error, writers)
		ready   sync.WaitGroup
		stopped sync.WaitGroup
	)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	convs := make([]string, writers)
	for w := range writers {
		convs[w] = fmt.Sprintf("g:crash-%d", w)
		ready.Add(1)
		stopped.Go(func() {
			conv := convs[w]
			next := uint64(1)
			for i := 0; ; i++ {
				if i == beforeCrash {
					ready.Done()
				}
				n := uint64(i%maxBatchSize) + 1
				err := s.Append(ctx, conv, msgs(conv, next, next+n-1))
				if err != nil {
					if ctx.Err() == nil {
						errs[w] = err
					}
					if i < beforeCrash {
						ready.Done()
					}
					return
				}
				next += n
				mu.Lock()
				if !cut {
					acked[conv] = next - 1
				}
				mu.Unlock()
			}
		})
	}
	ready.Wait()
	// Everything acknowledged so far was synced; from here on syncs are
	// no-ops, so the writers keep going into state the cut will drop.
	mu.Lock()
	cut = true
	fs.SetIgnoreSyncs(true)
	mu.Unlock()
	stop()
	stopped.Wait()
	for w, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", w, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	fs.ResetToSyncedState()
	fs.SetIgnoreSyncs(false)

	s = open(t, "db", pebble.WithFS(fs))
	for _, conv := range convs {
		if acked[conv] < beforeCrash {
			t.Fatalf("%s: only seq %d acknowledged", conv, acked[conv])
		}
		checkLog(t, s, conv, acked[conv])
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	const conv = "g:reopen"
	s, err := pebble.Open(dir)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	c := store.Conversation{ID: conv, Kind: store.KindGroup, Title: "t", CreatedBy: "alice"}
	if err := s.CreateConversation(ctx, c); err != nil {
		t.Fatalf("CreateConversation: %v", err)
	}
	created := &parleyv1.Message{ConversationId: conv, Seq: 1, Kind: parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED,
		SenderId: "alice", Members: []string{"alice", "bob"}}
	err = s.Append(ctx, conv, []*parleyv1.Message{created},
		store.PutMember(1, store.Member{UserID: "alice", JoinedSeq: 1, Role: store.RoleOwner}),
		store.PutMember(1, store.Member{UserID: "bob", JoinedSeq: 1, Role: store.RoleMember}))
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := s.Append(ctx, conv, msgs(conv, 2, 40)); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := s.AdvanceReceipt(ctx, conv, "bob", parleyv1.ReceiptKind_RECEIPT_KIND_READ, 30); err != nil {
		t.Fatalf("AdvanceReceipt: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, dir)
	if h, err := s.Head(ctx, conv); err != nil || h != 40 {
		t.Fatalf("Head = %d, %v; want 40", h, err)
	}
	page, _, err := s.Messages(ctx, conv, store.Page{After: 1, Limit: 100})
	if err != nil || len(page) != 39 {
		t.Fatalf("Messages = %d messages, %v; want 39", len(page), err)
	}
	for _, m := range page {
		if !proto.Equal(m, msg(conv, m.GetSeq())) {
			t.Fatalf("message %d = %v", m.GetSeq(), m)
		}
	}
	if got, err := s.Conversation(ctx, conv); err != nil || got != c {
		t.Errorf("Conversation = %+v, %v; want %+v", got, err, c)
	}
	if m, ok, err := s.Member(ctx, conv, "alice"); err != nil || !ok || m.Role != store.RoleOwner || m.JoinedSeq != 1 {
		t.Errorf("Member(alice) = %+v, %v, %v; want owner since seq 1", m, ok, err)
	}
	if inbox, err := s.Inbox(ctx, "bob"); err != nil || len(inbox) != 1 || inbox[0] != conv {
		t.Errorf("Inbox(bob) = %v, %v; want [%s]", inbox, err, conv)
	}
	if r, err := s.Receipt(ctx, conv, "bob"); err != nil || r.ReadSeq != 30 || r.DeliveredSeq != 30 {
		t.Errorf("Receipt(bob) = %+v, %v; want read and delivered 30", r, err)
	}
	if err := s.Append(ctx, conv, msgs(conv, 40, 41)); !errors.Is(err, store.ErrSeqTaken) {
		t.Errorf("Append over the reopened head: error = %v, want ErrSeqTaken", err)
	}
}

func TestClosed(t *testing.T) {
	s, err := pebble.Open(t.TempDir())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ctx := context.Background()
	if err := s.Append(ctx, "g:1", msgs("g:1", 1, 1)); !errors.Is(err, pebble.ErrClosed) {
		t.Errorf("Append after Close: error = %v, want ErrClosed", err)
	}
	if _, err := s.Head(ctx, "g:1"); !errors.Is(err, pebble.ErrClosed) {
		t.Errorf("Head after Close: error = %v, want ErrClosed", err)
	}
}

func TestInvalidIDs(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	bad := "g:\x00evil"
	if err := s.Append(ctx, bad, msgs(bad, 1, 1)); err == nil {
		t.Errorf("Append with a NUL in the id succeeded")
	}
	if _, err := s.Head(ctx, ""); err == nil {
		t.Errorf("Head of an empty id succeeded")
	}
	if _, err := s.Inbox(ctx, "u\x00"); err == nil {
		t.Errorf("Inbox of a NUL user id succeeded")
	}
	mismatch := msgs("g:other", 1, 1)
	if err := s.Append(ctx, "g:one", mismatch); err == nil {
		t.Errorf("Append of another conversation's message succeeded")
	}
	if err := s.Append(ctx, "g:one", []*parleyv1.Message{nil}); err == nil {
		t.Errorf("Append of a nil message succeeded")
	}
	nulMember := store.PutMember(1, store.Member{UserID: "u\x00", JoinedSeq: 1, Role: store.RoleMember})
	if err := s.Append(ctx, "g:one", msgs("g:one", 1, 1), nulMember); err == nil {
		t.Errorf("Append of an effect on a NUL user id succeeded")
	}
	if h, err := s.Head(ctx, "g:one"); err != nil || h != 0 {
		t.Errorf("Head(g:one) = %d, %v after refused appends; want 0", h, err)
	}
}

// BenchmarkAppend measures synced one-message appends. Parallel runs
// 8×GOMAXPROCS writers, each on its own conversation, which share fsyncs
// through Pebble's group commit.
func BenchmarkAppend(b *testing.B) {
	ctx := context.Background()
	b.Run("Sequential", func(b *testing.B) {
		s := open(b, b.TempDir())
		const conv = "g:bench"
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			seq := uint64(i) + 1
			if err := s.Append(ctx, conv, []*parleyv1.Message{msg(conv, seq)}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
	})
	b.Run("Parallel", func(b *testing.B) {
		s := open(b, b.TempDir())
		var writer atomic.Int64
		b.SetParallelism(8)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			conv := fmt.Sprintf("g:bench-%d", writer.Add(1))
			var seq uint64
			for pb.Next() {
				seq++
				if err := s.Append(ctx, conv, []*parleyv1.Message{msg(conv, seq)}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
	})
}

// countingHandler counts the log records that reach it, by level.
type countingHandler struct {
	mu     sync.Mutex
	levels map[slog.Level]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.levels[r.Level]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }

// TestOptions: a store opened with a small block cache and its own logger
// works as any other, and Pebble's own log lines (its WAL replay when a
// store with data is reopened) reach that logger at debug level, not the
// default logger.
func TestOptions(t *testing.T) {
	dir := t.TempDir()
	h := &countingHandler{levels: map[slog.Level]int{}}
	opts := []pebble.Option{pebble.WithCacheSize(1 << 20), pebble.WithLogger(slog.New(h))}
	s, err := pebble.Open(dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for seq := uint64(1); seq <= 100; seq++ {
		if err := s.Append(ctx, "dm:a:b", []*parleyv1.Message{msg("dm:a:b", seq)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, opts...)
	if head, err := s.Head(ctx, "dm:a:b"); err != nil || head != 100 {
		t.Fatalf("head after reopening with a 1 MiB cache = %d, %v; want 100", head, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.levels[slog.LevelDebug] == 0 {
		t.Fatalf("no debug line from Pebble reached the store's logger (levels seen: %v)", h.levels)
	}
}
