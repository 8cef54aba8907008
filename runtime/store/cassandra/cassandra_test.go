package cassandra_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/store/cassandra"
	"github.com/parleychat/parley/runtime/store/storetest"
)

// env is the test keyspace shared by every test of one run: made on first
// use, dropped by TestMain. Tests use fresh conversation ids, so they do not
// see one another's rows.
var env struct {
	once  sync.Once
	skip  string // why the server is unusable
	cfg   cassandra.Config
	dc    string
	sess  *gocql.Session // not bound to the keyspace
	store *cassandra.Store
}

func TestMain(m *testing.M) {
	code := m.Run()
	if env.sess != nil {
		if env.store != nil {
			env.store.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := env.sess.Query("DROP KEYSPACE IF EXISTS " + env.cfg.Keyspace).ExecContext(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "drop keyspace %s: %v\n", env.cfg.Keyspace, err)
		}
		cancel()
		env.sess.Close()
	}
	os.Exit(code)
}

// testAddr is the server of hack/deps.sh up cassandra, or PARLEY_TEST_CASSANDRA.
func testAddr() string {
	if a := os.Getenv("PARLEY_TEST_CASSANDRA"); a != "" {
		return a
	}
	return "127.0.0.1:9042"
}

// unusable skips t, or fails it under CI, which never skips.
func unusable(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI never skips)", why)
	}
	t.Skip(why)
}

func randomKeyspace() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "parley_test_" + hex.EncodeToString(b)
}

// connect returns a session to the test server and its datacenter, or why
// there is none.
func connect() (*gocql.Session, string, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := cassandra.Connect(ctx, cassandra.Config{Hosts: []string{testAddr()}, ConnectTimeout: 3 * time.Second, Timeout: 20 * time.Second})
	if err != nil {
		return nil, "", fmt.Sprintf("Cassandra not reachable at %s: %v; run hack/deps.sh up cassandra", testAddr(), err)
	}
	var dc string
	if err := sess.Query("SELECT data_center FROM system.local").ScanContext(ctx, &dc); err != nil {
		sess.Close()
		return nil, "", fmt.Sprintf("Cassandra at %s does not answer: %v; run hack/deps.sh up cassandra", testAddr(), err)
	}
	return sess, dc, ""
}

// shared returns the run's store on its fresh keyspace, or skips t when
// there is no server.
func shared(t testing.TB) *cassandra.Store {
	t.Helper()
	env.once.Do(func() {
		env.sess, env.dc, env.skip = connect()
		if env.sess == nil {
			return
		}
		env.cfg = cassandra.Config{Hosts: []string{testAddr()}, Keyspace: randomKeyspace(), LocalDC: env.dc, Timeout: 20 * time.Second}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		err := cassandra.Migrate(ctx, env.sess, cassandra.Options{Keyspace: env.cfg.Keyspace, Datacenters: map[string]int{env.dc: 1}})
		if err != nil {
			env.skip = fmt.Sprintf("migrate %s: %v", env.cfg.Keyspace, err)
			return
		}
		if env.store, err = cassandra.Open(ctx, env.cfg); err != nil {
			env.skip = fmt.Sprintf("open %s: %v", env.cfg.Keyspace, err)
		}
	})
	if env.store == nil {
		if env.sess != nil {
			t.Fatal(env.skip) // the server answers but the store does not work
		}
		unusable(t, env.skip)
	}
	return env.store
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConformance(t *testing.T) {
	s := shared(t)
	start := time.Now()
	storetest.Run(t, func(t *testing.T) store.MessageStore { return s })
	t.Logf("conformance suite took %v", time.Since(start).Round(time.Millisecond))
}

var convCount atomic.Uint64

func newConv(prefix string) string {
	return fmt.Sprintf("g:%s-%d-%d", prefix, time.Now().UnixNano(), convCount.Add(1))
}

func text(conv string, seq uint64) *parleyv1.Message {
	return &parleyv1.Message{
		ConversationId: conv, Seq: seq, MessageId: int64(seq)<<8 | 1, SenderId: "sender",
		ClientMsgId: fmt.Sprint("c", seq), Kind: parleyv1.MessageKind_MESSAGE_KIND_TEXT,
		Text: fmt.Sprint("message ", seq), CreatedAt: 1_700_000_000_000 + int64(seq),
	}
}

func texts(conv string, from, to uint64) []*parleyv1.Message {
	var out []*parleyv1.Message
	for seq := from; seq <= to; seq++ {
		out = append(out, text(conv, seq))
	}
	return out
}

func appendRange(t *testing.T, s store.MessageStore, conv string, from, to uint64, batch int) {
	t.Helper()
	for lo := from; lo <= to; lo += uint64(batch) {
		if err := s.Append(ctxFor(t), conv, texts(conv, lo, min(to, lo+uint64(batch)-1))); err != nil {
			t.Fatalf("Append(%d..): %v", lo, err)
		}
	}
}

func added(conv string, seq uint64, users ...string) *parleyv1.Message {
	return &parleyv1.Message{ConversationId: conv, Seq: seq, MessageId: int64(seq)<<8 | 2, SenderId: "admin",
		Kind: parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED, Members: users, CreatedAt: 1_700_000_000_000}
}

func removed(conv string, seq uint64, users ...string) *parleyv1.Message {
	m := added(conv, seq, users...)
	m.Kind = parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED
	return m
}

// rows counts conv's rows in bucket b, reading the table itself.
func rows(t *testing.T, conv string, b int64) int {
	t.Helper()
	var n int
	err := env.sess.Query("SELECT count(*) FROM "+env.cfg.Keyspace+".messages WHERE conversation_id = ? AND bucket = ?", conv, b).
		ScanContext(ctxFor(t), &n)
	if err != nil {
		t.Fatalf("count bucket %d: %v", b, err)
	}
	return n
}

// headHint reads conv's head_bucket hint.
func headHint(t *testing.T, conv string) int64 {
	t.Helper()
	var b int64
	err := env.sess.Query("SELECT head_bucket FROM "+env.cfg.Keyspace+".messages WHERE conversation_id = ? AND bucket = 0 LIMIT 1", conv).
		ScanContext(ctxFor(t), &b)
	if err != nil && !errors.Is(err, gocql.ErrNotFound) {
		t.Fatalf("read head_bucket: %v", err)
	}
	return b
}

// TestAppendAcrossBucketBoundary appends 4095..4098 in one call: two
// conditional batches, one per partition.
func TestAppendAcrossBucketBoundary(t *testing.T) {
	s := shared(t)
	conv := newConv("boundary")
	start := time.Now()
	appendRange(t, s, conv, 1, 4094, 500)
	t.Logf("appended 4094 messages in batches of 500 in %v", time.Since(start).Round(time.Millisecond))
	if h := headHint(t, conv); h != 0 {
		t.Fatalf("head_bucket = %d before bucket 1 exists", h)
	}
	if err := s.Append(ctxFor(t), conv, texts(conv, 4095, 4098)); err != nil {
		t.Fatalf("Append(4095..4098): %v", err)
	}
	if n0, n1 := rows(t, conv, 0), rows(t, conv, 1); n0 != 4095 || n1 != 3 {
		t.Errorf("bucket rows = %d, %d; want 4095 (seqs 1..4095), 3 (4096..4098)", n0, n1)
	}
	if h := headHint(t, conv); h != 1 {
		t.Errorf("head_bucket = %d, want 1", h)
	}
	if h, err := s.Head(ctxFor(t), conv); err != nil || h != 4098 {
		t.Errorf("Head = %d, %v; want 4098", h, err)
	}
	msgs, more, err := s.Messages(ctxFor(t), conv, store.Page{Limit: 6})
	if err != nil || !more || len(msgs) != 6 || msgs[0].GetSeq() != 4098 || msgs[5].GetSeq() != 4093 {
		t.Errorf("newest page = %d msgs (first %d), more %v, %v; want 4098..4093, more", len(msgs), msgs[0].GetSeq(), more, err)
	}
	for _, m := range msgs {
		if !proto.Equal(m, text(conv, m.GetSeq())) {
			t.Errorf("message %d = %v", m.GetSeq(), m)
		}
	}
	// Either segment being taken refuses the whole call when it is the first.
	for _, from := range []uint64{4094, 4096, 4098} {
		if err := s.Append(ctxFor(t), conv, texts(conv, from, from+2)); !errors.Is(err, store.ErrSeqTaken) {
			t.Errorf("Append(%d..%d) error = %v, want ErrSeqTaken", from, from+2, err)
		}
	}
}

// TestAppendAcrossBucketBoundaryUpperTaken documents the one case that is
// not all-or-nothing: the upper segment's seqs were taken by another writer,
// after the lower segment was stored. The lower part stays (with its
// membership effects), the upper part is not stored, and the error wraps
// ErrSeqTaken so the sequencer reloads.
func TestAppendAcrossBucketBoundaryUpperTaken(t *testing.T) {
	s := shared(t)
	conv := newConv("upper-taken")
	appendRange(t, s, conv, 1, 4094, 500)
	// Another writer's message at 4097 (a gap below it, as if it raced
	// ahead of our lower segment).
	other := text(conv, 4097)
	other.Text, other.MessageId = "the other writer", 99
	if err := s.Append(ctxFor(t), conv, []*parleyv1.Message{other}); err != nil {
		t.Fatalf("Append(other 4097): %v", err)
	}
	dave, erin := fmt.Sprint("dave-", conv), fmt.Sprint("erin-", conv)
	batch := []*parleyv1.Message{added(conv, 4095, dave), text(conv, 4096), added(conv, 4097, erin), text(conv, 4098)}
	err := s.Append(ctxFor(t), conv, batch,
		store.PutMember(4095, store.Member{UserID: dave, JoinedSeq: 4095, Role: store.RoleMember}),
		store.PutMember(4097, store.Member{UserID: erin, JoinedSeq: 4097, Role: store.RoleMember}))
	if !errors.Is(err, store.ErrSeqTaken) {
		t.Fatalf("Append(4095..4098) error = %v, want ErrSeqTaken", err)
	}
	t.Logf("Append error: %v", err)
	if !strings.Contains(err.Error(), "4095..4095 stored, seqs 4096..4098 not stored") {
		t.Errorf("error %q does not say which seqs were stored", err)
	}
	if m, err := s.Message(ctxFor(t), conv, 4095); err != nil || !proto.Equal(m, batch[0]) {
		t.Errorf("Message(4095) = %v, %v; want the stored lower segment", m, err)
	}
	if _, err := s.Message(ctxFor(t), conv, 4096); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Message(4096) error = %v, want ErrNotFound", err)
	}
	if m, err := s.Message(ctxFor(t), conv, 4097); err != nil || !proto.Equal(m, other) {
		t.Errorf("Message(4097) = %v, %v; want the other writer's", m, err)
	}
	if m, ok, err := s.Member(ctxFor(t), conv, dave); err != nil || !ok || m.JoinedSeq != 4095 {
		t.Errorf("Member(dave) = %+v, %v, %v; want joined at 4095 (stored part)", m, ok, err)
	}
	if _, ok, err := s.Member(ctxFor(t), conv, erin); err != nil || ok {
		t.Errorf("Member(erin) = %v, %v; want not a member (refused part)", ok, err)
	}
}

// TestHeadHint checks Head on many buckets without and with a stale hint.
// Head only reads each bucket's newest row, so the test writes just the
// last seq of every full bucket, directly.
func TestHeadHint(t *testing.T) {
	s := shared(t)
	insert := func(conv string, seq uint64) {
		t.Helper()
		m := text(conv, seq)
		err := env.sess.Query("INSERT INTO "+env.cfg.Keyspace+".messages (conversation_id, bucket, seq, message_id, kind, body) VALUES (?, ?, ?, ?, ?, ?)",
			conv, int64(seq>>12), int64(seq), m.GetMessageId(), int32(m.GetKind()), m.GetText()).ExecContext(ctxFor(t))
		if err != nil {
			t.Fatalf("insert %d: %v", seq, err)
		}
	}
	for _, tc := range []struct {
		name    string
		buckets int64 // full buckets below the newest
		hint    int64 // 0: none
	}{
		{"NoHint", 41, 0},
		{"StaleHint", 9, 3},
		{"ExactHint", 5, 5},
		{"FullNewestBucket", 6, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conv := newConv("head-" + tc.name)
			for b := range tc.buckets {
				insert(conv, uint64(b)<<12|4095)
			}
			want := uint64(tc.buckets)<<12 | 17
			if tc.name == "FullNewestBucket" {
				want = uint64(tc.buckets)<<12 | 4095
			}
			insert(conv, want)
			if tc.hint > 0 {
				err := env.sess.Query("UPDATE "+env.cfg.Keyspace+".messages USING TIMESTAMP ? SET head_bucket = ? WHERE conversation_id = ? AND bucket = 0",
					tc.hint, tc.hint, conv).ExecContext(ctxFor(t))
				if err != nil {
					t.Fatal(err)
				}
			}
			if h, err := s.Head(ctxFor(t), conv); err != nil || h != want {
				t.Fatalf("Head = %d, %v; want %d", h, err, want)
			}
			if got := headHint(t, conv); got != tc.buckets {
				t.Errorf("head_bucket after Head = %d, want it repaired to %d", got, tc.buckets)
			}
			msgs, _, err := s.Messages(ctxFor(t), conv, store.Page{Limit: 1})
			if err != nil || len(msgs) != 1 || msgs[0].GetSeq() != want {
				t.Errorf("newest message = %v, %v; want seq %d", msgs, err, want)
			}
			// Before far beyond the head starts at the head too.
			msgs, _, err = s.Messages(ctxFor(t), conv, store.Page{Before: 1 << 60, Limit: 2})
			if err != nil || len(msgs) != 2 || msgs[0].GetSeq() != want {
				t.Errorf("Before 2^60 = %v, %v; want from seq %d", msgs, err, want)
			}
		})
	}
}

// TestHintBeforeRows sets head_bucket on a conversation with no messages:
// the static column must not make seq 1 look taken to IF NOT EXISTS, and a
// hint beyond the log must not mislead Head.
func TestHintBeforeRows(t *testing.T) {
	s := shared(t)
	conv := newConv("hint-first")
	err := env.sess.Query("UPDATE "+env.cfg.Keyspace+".messages USING TIMESTAMP 5 SET head_bucket = 5 WHERE conversation_id = ? AND bucket = 0",
		conv).ExecContext(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	if h, err := s.Head(ctxFor(t), conv); err != nil || h != 0 {
		t.Errorf("Head with only a hint = %d, %v; want 0", h, err)
	}
	if err := s.Append(ctxFor(t), conv, texts(conv, 1, 2)); err != nil {
		t.Fatalf("Append(1..2): %v", err)
	}
	if h, err := s.Head(ctxFor(t), conv); err != nil || h != 2 {
		t.Errorf("Head = %d, %v; want 2", h, err)
	}
	if err := s.Append(ctxFor(t), conv, texts(conv, 2, 2)); !errors.Is(err, store.ErrSeqTaken) {
		t.Errorf("Append(2) again: error = %v, want ErrSeqTaken", err)
	}
}

func TestMediaAndEventsRoundTrip(t *testing.T) {
	s := shared(t)
	conv := newConv("roundtrip")
	msgs := []*parleyv1.Message{
		{ConversationId: conv, Seq: 1, Kind: parleyv1.MessageKind_MESSAGE_KIND_MEDIA, Media: &parleyv1.Media{}}, // present but empty
		{ConversationId: conv, Seq: 2, MessageId: -5, Kind: parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED,
			Members: []string{"ünïcode-user", "b"}, Text: "group title"},
		{ConversationId: conv, Seq: 3}, // every field empty
		{ConversationId: conv, Seq: 4, Kind: parleyv1.MessageKind(77), CreatedAt: -1, Media: &parleyv1.Media{Url: "u", Size: 1 << 40}},
	}
	if err := s.Append(ctxFor(t), conv, msgs); err != nil {
		t.Fatal(err)
	}
	for _, want := range msgs {
		got, err := s.Message(ctxFor(t), conv, want.GetSeq())
		if err != nil || !proto.Equal(got, want) {
			t.Errorf("Message(%d) = %v, %v; want %v", want.GetSeq(), got, err, want)
		}
	}
	if got, _ := s.Message(ctxFor(t), conv, 3); got.GetMedia() != nil {
		t.Errorf("message without media read back with media %v", got.GetMedia())
	}
}

func TestInvalidInput(t *testing.T) {
	s := shared(t)
	ctx := ctxFor(t)
	for name, err := range map[string]error{
		"seq beyond int64": s.Append(ctx, "g:x", []*parleyv1.Message{{ConversationId: "g:x", Seq: 1 << 63}}),
		"nil message":      s.Append(ctx, "g:x", []*parleyv1.Message{nil}),
		"bad utf-8 text":   s.Append(ctx, "g:x", []*parleyv1.Message{{ConversationId: "g:x", Seq: 1, Text: "\xff"}}),
		"NUL member":       s.Append(ctx, "g:x", []*parleyv1.Message{{ConversationId: "g:x", Seq: 1, Members: []string{"a\x00"}}}),
		"empty conv":       s.Append(ctx, "", texts("", 1, 1)),
		"receipt kind":     s.AdvanceReceipt(ctx, "g:x", "u", parleyv1.ReceiptKind_RECEIPT_KIND_UNSPECIFIED, 3),
		"receipt seq":      s.AdvanceReceipt(ctx, "g:x", "u", parleyv1.ReceiptKind_RECEIPT_KIND_READ, 1<<63),
	} {
		if err == nil || errors.Is(err, store.ErrSeqTaken) {
			t.Errorf("%s: error = %v, want a validation error", name, err)
		}
	}
	if h, err := s.Head(ctx, "g:x"); err != nil || h != 0 {
		t.Errorf("Head(g:x) = %d, %v after refused appends; want 0", h, err)
	}
	if _, err := s.Message(ctx, "g:x", 1<<63); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Message(2^63) error = %v, want ErrNotFound", err)
	}
}

// TestMembershipReplay applies the effects of a member log again, in
// reverse and shuffled orders: thanks to USING TIMESTAMP = seq the result is
// what applying it once in order gave.
func TestMembershipReplay(t *testing.T) {
	s := shared(t)
	conv := newConv("replay")
	alice, bob, carol := "alice-"+conv, "bob-"+conv, "carol-"+conv
	c := store.Conversation{ID: conv, Kind: store.KindGroup, CreatedBy: alice}
	if err := s.CreateConversation(ctxFor(t), c); err != nil {
		t.Fatal(err)
	}
	created := added(conv, 1, alice, bob)
	created.Kind = parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED
	join := func(seq uint64, user, role string) store.Effect {
		return store.PutMember(seq, store.Member{UserID: user, JoinedSeq: seq, Role: role})
	}
	// Each event with the effects the chat role gives it (alice, already a
	// member, is not added again at seq 5).
	log := []struct {
		m       *parleyv1.Message
		effects []store.Effect
	}{
		{created, []store.Effect{join(1, alice, store.RoleOwner), join(1, bob, store.RoleMember)}},
		{added(conv, 2, carol), []store.Effect{join(2, carol, store.RoleMember)}},
		{removed(conv, 3, bob), []store.Effect{store.RemoveMember(3, bob)}},
		{removed(conv, 4, carol), []store.Effect{store.RemoveMember(4, carol)}},
		{added(conv, 5, carol, alice), []store.Effect{join(5, carol, store.RoleMember)}},
	}
	for _, e := range log {
		if err := s.Append(ctxFor(t), conv, []*parleyv1.Message{e.m}, e.effects...); err != nil {
			t.Fatal(err)
		}
	}
	want := []store.Member{
		{UserID: alice, JoinedSeq: 1, Role: store.RoleOwner},
		{UserID: carol, JoinedSeq: 5, Role: store.RoleMember},
	}
	slices.SortFunc(want, func(a, b store.Member) int { return strings.Compare(a.UserID, b.UserID) })
	check := func(when string) {
		t.Helper()
		got, err := s.Members(ctxFor(t), conv)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("%s: Members = %v, %v; want %v", when, got, err, want)
		}
	}
	check("in order")
	for i := len(log) - 1; i >= 0; i-- {
		if err := s.ApplyEffects(ctxFor(t), conv, log[i].effects...); err != nil {
			t.Fatal(err)
		}
	}
	check("after replaying in reverse")
	r := mrand.New(mrand.NewPCG(1, 2))
	for range 3 {
		perm := r.Perm(len(log))
		for _, i := range perm {
			if err := s.ApplyEffects(ctxFor(t), conv, log[i].effects...); err != nil {
				t.Fatal(err)
			}
		}
		check(fmt.Sprintf("after replaying in order %v", perm))
	}
	for _, u := range []string{alice, bob, carol} {
		inbox, err := s.Inbox(ctxFor(t), u)
		if err != nil || !slices.Contains(inbox, conv) {
			t.Errorf("Inbox(%s) = %v, %v; want it to hold %s", u, inbox, err, conv)
		}
	}
}

// TestResolveSegment checks how an append of unknown outcome is decided.
func TestResolveSegment(t *testing.T) {
	s := shared(t)
	conv := newConv("resolve")
	ours := texts(conv, 1, 3)
	if st, err := s.ResolveSegment(ctxFor(t), conv, ours); err != nil || st != "empty" {
		t.Errorf("before the append: %q, %v; want empty", st, err)
	}
	if err := s.Append(ctxFor(t), conv, ours); err != nil {
		t.Fatal(err)
	}
	if st, err := s.ResolveSegment(ctxFor(t), conv, ours); err != nil || st != "ours" {
		t.Errorf("after the append: %q, %v; want ours", st, err)
	}
	theirs := texts(conv, 2, 4)
	theirs[0].MessageId = 12345
	if st, err := s.ResolveSegment(ctxFor(t), conv, theirs); err != nil || st != "foreign" {
		t.Errorf("another batch over them: %q, %v; want foreign", st, err)
	}
}

// TestConcurrentReceipts races pointer moves: each pointer ends at the
// highest value written, without any read-before-write.
func TestConcurrentReceipts(t *testing.T) {
	s := shared(t)
	conv := newConv("receipts")
	const writers, moves = 8, 15
	var (
		wg                   sync.WaitGroup
		maxDelivered, maxRed atomic.Uint64
		errs                 = make(chan error, writers)
	)
	raise := func(a *atomic.Uint64, v uint64) {
		for {
			old := a.Load()
			if v <= old || a.CompareAndSwap(old, v) {
				return
			}
		}
	}
	for w := range writers {
		wg.Go(func() {
			r := mrand.New(mrand.NewPCG(uint64(w), 7))
			for range moves {
				seq := 1 + r.Uint64N(1000)
				kind := parleyv1.ReceiptKind_RECEIPT_KIND_DELIVERED
				if r.IntN(3) == 0 {
					kind = parleyv1.ReceiptKind_RECEIPT_KIND_READ
					raise(&maxRed, seq)
				}
				raise(&maxDelivered, seq)
				if err := s.AdvanceReceipt(ctxFor(t), conv, "u", kind, seq); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r, err := s.Receipt(ctxFor(t), conv, "u")
	if err != nil || r.DeliveredSeq != maxDelivered.Load() || r.ReadSeq != maxRed.Load() {
		t.Errorf("Receipt = %+v, %v; want delivered %d read %d", r, err, maxDelivered.Load(), maxRed.Load())
	}
}

func TestMigrateAndOpen(t *testing.T) {
	shared(t) // skips when the server is absent
	ks := randomKeyspace()
	ctx := ctxFor(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := env.sess.Query("DROP KEYSPACE IF EXISTS " + ks).ExecContext(ctx); err != nil {
			t.Errorf("drop %s: %v", ks, err)
		}
	})
	cfg := env.cfg
	cfg.Keyspace = ks
	if s, err := cassandra.Open(ctx, cfg); err == nil || !strings.Contains(err.Error(), "parley migrate") {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open of an unmigrated keyspace: error = %v, want one that says to run parley migrate", err)
	}
	for _, o := range []cassandra.Options{{}, {Datacenters: map[string]int{"": 1}}, {Keyspace: "bad-name", ReplicationFactor: 1}} {
		if o.Keyspace == "" {
			o.Keyspace = ks
		}
		if err := cassandra.Migrate(ctx, env.sess, o); err == nil {
			t.Errorf("Migrate(%+v) succeeded, want an error", o)
		}
	}
	for i := range 2 { // the second run changes nothing
		if err := cassandra.Migrate(ctx, env.sess, cassandra.Options{Keyspace: ks, ReplicationFactor: 1}); err != nil {
			t.Fatalf("Migrate run %d: %v", i+1, err)
		}
	}
	var versions []int
	iter := env.sess.Query("SELECT version FROM " + ks + ".schema_version").IterContext(ctx)
	for v := 0; iter.Scan(&v); {
		versions = append(versions, v)
	}
	slices.Sort(versions)
	var want []int
	for v := 1; v <= cassandra.SchemaVersion; v++ {
		want = append(want, v)
	}
	if err := iter.Close(); err != nil || !slices.Equal(versions, want) {
		t.Errorf("schema_version rows = %v, %v; want %v", versions, err, want)
	}
	// A new replication is applied to the existing keyspace.
	if err := cassandra.Migrate(ctx, env.sess, cassandra.Options{Keyspace: ks, Datacenters: map[string]int{env.dc: 1}}); err != nil {
		t.Fatalf("Migrate to NetworkTopologyStrategy: %v", err)
	}
	var repl map[string]string
	if err := env.sess.Query("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?", ks).ScanContext(ctx, &repl); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(repl["class"], "NetworkTopologyStrategy") || repl[env.dc] != "1" {
		t.Errorf("replication = %v, want NetworkTopologyStrategy with %s: 1", repl, env.dc)
	}
	s, err := cassandra.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open after Migrate: %v", err)
	}
	conv := newConv("migrated")
	if err := s.Append(ctx, conv, texts(conv, 1, 2)); err != nil {
		t.Errorf("Append: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.Head(ctx, conv); !errors.Is(err, cassandra.ErrClosed) {
		t.Errorf("Head after Close: error = %v, want ErrClosed", err)
	}
	if err := s.Append(ctx, conv, texts(conv, 3, 3)); !errors.Is(err, cassandra.ErrClosed) {
		t.Errorf("Append after Close: error = %v, want ErrClosed", err)
	}
}

func TestOpenUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A port nothing listens on (the discard port on loopback).
	_, err := cassandra.Open(ctx, cassandra.Config{Hosts: []string{"127.0.0.1:9"}, ConnectTimeout: time.Second})
	if err == nil {
		t.Fatal("Open of an unreachable cluster succeeded")
	}
	if _, err := cassandra.Open(ctx, cassandra.Config{}); err == nil {
		t.Error("Open without hosts succeeded")
	}
	if _, err := cassandra.Open(ctx, cassandra.Config{Hosts: []string{"h"}, Keyspace: "x; DROP"}); err == nil {
		t.Error("Open with a keyspace name that is not an identifier succeeded")
	}
}

// BenchmarkAppend measures one-message conditional appends (one LWT each).
func BenchmarkAppend(b *testing.B) {
	s := shared(b)
	ctx := context.Background()
	conv := newConv("bench")
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		seq := uint64(i) + 1
		if err := s.Append(ctx, conv, texts(conv, seq, seq)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
}

// TestAppendUnknownOutcome loses the request or the reply of a conditional
// batch, as a timeout or a dropped connection does, and checks that Append
// finds out what happened instead of reporting an unknown outcome.
func TestAppendUnknownOutcome(t *testing.T) {
	s := shared(t)
	lost := fmt.Errorf("simulated: %w", gocql.ErrTimeoutNoResponse)
	tests := []struct {
		name string
		// hook runs the first attempt; later attempts run normally.
		hook    func(t *testing.T, conv string, exec func() (bool, error)) (bool, error)
		wantErr error
		wantOwn bool // the stored message is ours
	}{
		{
			name: "ReplyLost",
			hook: func(t *testing.T, conv string, exec func() (bool, error)) (bool, error) {
				if applied, err := exec(); !applied || err != nil {
					t.Errorf("real attempt: %v, %v", applied, err)
				}
				return false, lost
			},
			wantOwn: true,
		},
		{
			name: "RequestLost",
			hook: func(t *testing.T, conv string, exec func() (bool, error)) (bool, error) {
				return false, lost
			},
			wantOwn: true,
		},
		{
			name: "ReplyLostAndAnotherWriterWon",
			hook: func(t *testing.T, conv string, exec func() (bool, error)) (bool, error) {
				other := text(conv, 3)
				other.MessageId = 777
				if err := s.Append(ctxFor(t), conv, []*parleyv1.Message{other}); err != nil {
					t.Errorf("other writer: %v", err)
				}
				return false, lost
			},
			wantErr: store.ErrSeqTaken,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conv := newConv("unknown-" + tc.name)
			appendRange(t, s, conv, 1, 2, 2)
			mine := texts(conv, 3, 4)
			first := true
			restore := cassandra.SetCASHook(func(attempt int, exec func() (bool, error)) (bool, error) {
				if !first {
					return exec()
				}
				first = false
				return tc.hook(t, conv, exec)
			})
			err := s.Append(ctxFor(t), conv, mine)
			restore()
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("Append error = %v, want %v", err, tc.wantErr)
			}
			got, err := s.Message(ctxFor(t), conv, 3)
			if err != nil {
				t.Fatalf("Message(3): %v", err)
			}
			if own := proto.Equal(got, mine[0]); own != tc.wantOwn {
				t.Errorf("Message(3) = %v; ours: %v, want %v", got, own, tc.wantOwn)
			}
		})
	}
}
