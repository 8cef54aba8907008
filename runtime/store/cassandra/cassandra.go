// Package cassandra is the production MessageStore, on Apache Cassandra 5.0
// through gocql (github.com/apache/cassandra-gocql-driver/v2).
//
// # Schema
//
// Migrate creates it (see schema.go for the CQL). In keyspace "parley":
//
//   - messages ((conversation_id, bucket), seq) CLUSTERING ORDER BY (seq
//     DESC), bucket = seq >> 12: a partition holds at most 4,096 messages, so
//     none grows without bound. Columns: message_id, sender_id,
//     client_msg_id, kind (the MessageKind number), body (the text), media,
//     members (frozen<list<text>>, member events only), created_at
//     (timestamp, Unix ms). Decision: media is a blob of one format byte
//     (mediaFormatProto) followed by the protobuf encoding of parleyv1.Media,
//     so a new Media field needs no migration and "present but empty" stays
//     distinguishable from "absent" (null). Members is frozen: one cell, so
//     writing it leaves no collection tombstone. Absent values are bound as
//     unset, never as null, so a message row has no tombstones at all
//     (until it is deleted: its media cell becomes one). Since schema
//     version 3 also target_seq (EDITED and DELETED events), edited_at,
//     deleted and change_seq (a changed message); since version 4 reply,
//     the marshaled parley.v1.Quote of a reply; since version 5 mentions
//     (frozen, like members); since version 6 reactions (a blob like media:
//     reactionsFormatProto, then a parley.v1.Message holding only emoji,
//     reaction_removed and reactions — a REACTION event's own fields, or a
//     message's reactions with the users of each emoji) and reaction_seq.
//   - messages.head_bucket, a static column read only in bucket 0: the hint
//     that makes Head O(1) (see below).
//   - conversations (id) → kind, title, home_region, created_by, created_at.
//   - members ((conversation_id), user_id) → joined_seq, role.
//   - user_conversations ((user_id), conversation_id): the inbox.
//   - receipts ((conversation_id), user_id) → delivered_seq, read_seq.
//   - schema_version (version) → description, applied_at: see Migrate.
//
// # The commit point
//
// Append writes the messages of one bucket as one conditional
// single-partition batch (INSERT … IF NOT EXISTS per row, LOCAL_SERIAL, commit
// at LOCAL_QUORUM): all rows or none, and two writers of one seq cannot both
// win. An append whose seqs cross a bucket boundary (or that is larger than
// Config.MaxBatchBytes) is split into segments written in seq order, each
// conditional; the first refused segment stops the append. When a later
// segment is refused after an earlier one was stored, the earlier messages
// stay stored — Cassandra has no conditional write across partitions and a
// delete would race the writer that now owns the log — and Append returns an
// error wrapping store.ErrSeqTaken that says so. That happens only when
// another writer stored the refused seqs after seeing ours, i.e. when two
// sequencers run the conversation at once (a stale owner); the sequencer
// reloads the head, finds the stored messages by their client_msg_id in its
// dedupe cache and answers them as stored, and sequences the rest again.
//
// A conditional write whose outcome is unknown (a timeout, CAS contention, a
// lost connection) is resolved, while ctx allows, by reading the rows back at
// LOCAL_SERIAL, which completes or fences any Paxos round in flight: our own
// rows mean it was applied, another writer's mean ErrSeqTaken, none mean it
// is safe to try again (up to three attempts). Only when that read fails
// too, or ctx ends first, does Append return an error of unknown outcome.
// (So an attempt of unknown outcome that finds exactly its own messages
// already stored reports success even if an earlier identical Append stored
// them: harmless, since the log holds what the caller wanted.)
//
// # Membership, inbox and receipts
//
// The membership and title effects of an Append (members,
// user_conversations, conversations.renamed_title) are the store.Effects the
// chat role passed with it: the store writes them as given and reads nothing
// to decide them (issue 15; the rules are in runtime/chat/effects.go). They
// are written after the conditional batch that stores their events
// succeeded (the commit point and its fencing are the messages' alone),
// inbox first, so a member always has its inbox entry. Every members write
// carries USING TIMESTAMP = the event's seq, so an effect applied again, late
// or out of order (a replay) never undoes a later one: a replayed join loses
// to the tombstone of a later removal, and the reverse. If the effects fail after the
// commit, Append returns an error; the chat role then reloads and, for a
// request it replays or a client retries, sees the effect missing and
// sequences it again, which repairs it.
//
// Receipt pointers are written with one statement each, USING TIMESTAMP = the
// pointer value: the highest value wins on every replica without
// read-before-write, so pointers only move forward. They are never deleted (a
// delete would shadow every later write below its timestamp).
//
// # Edits and deletes
//
// An EDITED or DELETED event is stored like any message (its conditional
// batch is the commit point, and it carries the new text), then afterCommit
// applies its effect with conditional updates: the target row's text,
// media, edited_at, deleted and change_seq (a compare-and-set on
// change_seq, so changes apply in seq order and a replay never undoes a
// later one), then the clearing of the text of the EDITED event it
// supersedes. A crash or failure between the event and its effect leaves
// the event in the log with its text and the target unchanged; Append
// returns an error, the chat role reloads the conversation and, on loading
// it, applies the newest changes whose effect is missing (ApplyChange), so
// the next request to the conversation heals it (docs/design.md §2). The
// old values stay in SSTables until compaction drops them, as with any
// overwrite.
//
// # Head
//
// Seqs are dense (1, 2, 3, …), so buckets 0..head>>12 are all non-empty and
// every bucket below the newest is full. When an append stores the first seq
// of bucket k ≥ 1 it records k in the static column head_bucket of the
// conversation's bucket-0 partition (USING TIMESTAMP k, so the hint only
// moves up). Head reads bucket 0's newest row and the hint in one query; for
// a conversation past 4,095 messages it reads the hinted bucket's newest row
// too, and walks up (and repairs the hint) if that bucket turns out full.
// Message paging walks buckets the same way and relies on the same density:
// a forward page moves to bucket k+1 only if bucket k is full.
//
// # Queries
//
// Statements are prepared (gocql prepares every statement with bind
// markers). Reads and the idempotent writes (receipts, membership effects,
// the head hint) are retried with exponential backoff on another host;
// conditional writes are never retried by the driver — their outcome is
// resolved as above. Every method honours ctx; Config.Timeout bounds each
// request.
package cassandra

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"regexp"
	"sync/atomic"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/parleychat/parley/runtime/store"
)

// ErrClosed is returned by every method called after Close.
var ErrClosed = errors.New("cassandra store closed")

// DefaultKeyspace is the keyspace used when Config.Keyspace is empty.
const DefaultKeyspace = "parley"

// Config configures Connect and Open.
type Config struct {
	// Hosts are the contact points, "host" or "host:port" (port 9042 by
	// default). Required.
	Hosts []string
	// Keyspace holds the tables (default "parley"). Letters, digits and
	// underscores, starting with a letter, at most 48.
	Keyspace string
	// LocalDC is this region's datacenter: the driver connects to its
	// nodes only, and LOCAL_QUORUM / LOCAL_SERIAL are counted in it. Empty
	// routes to any datacenter (one-datacenter clusters only).
	LocalDC string
	// Timeout bounds each request on the client side (default 12s). Keep
	// it above the server's request timeouts, so the server answers first.
	Timeout time.Duration
	// ConnectTimeout bounds dialling and connection setup (default 5s).
	ConnectTimeout time.Duration
	// Username and Password enable PasswordAuthenticator when Username is
	// set.
	Username, Password string
	// NumConns is the number of connections per host (default 2).
	NumConns int
	// Retries is how often an idempotent request is retried after a
	// timeout or an unavailable or overloaded node (default 3), with
	// exponential backoff from RetryMin (default 50ms) to RetryMax
	// (default 2s), on the next host.
	Retries            int
	RetryMin, RetryMax time.Duration
	// MaxBatchBytes bounds the encoded size of one conditional batch
	// (default 512 KiB); a larger Append is split into several (see the
	// package comment). Cassandra's batch_size_fail_threshold does not
	// apply to conditional batches (5.0.9 accepts one of 3 MiB); the bound
	// keeps Paxos proposals small.
	MaxBatchBytes int
	// Logger receives the driver's warnings and errors and the store's own
	// (default slog.Default()).
	Logger *slog.Logger
	// OnStatement, when set, is called once per statement and batch the
	// driver executes (every attempt), with its kind: verb and table,
	// "conditional " before statements with an IF clause, "batch of "
	// before batches, e.g. "batch of conditional insert messages". It
	// runs on the request's goroutine and must be quick (a counter).
	OnStatement func(kind string)
}

func (c Config) withDefaults() (Config, error) {
	if len(c.Hosts) == 0 {
		return c, errors.New("cassandra: no hosts")
	}
	if c.Keyspace == "" {
		c.Keyspace = DefaultKeyspace
	}
	if err := checkKeyspace(c.Keyspace); err != nil {
		return c, err
	}
	if c.Timeout <= 0 {
		c.Timeout = 12 * time.Second
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.NumConns <= 0 {
		c.NumConns = 2
	}
	if c.Retries < 0 {
		c.Retries = 0
	} else if c.Retries == 0 {
		c.Retries = 3
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 50 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 2 * time.Second
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 512 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

var keyspaceRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,47}$`)

// checkKeyspace accepts only names that are safe to splice into CQL
// unquoted (Cassandra's own limit is 48 characters).
func checkKeyspace(ks string) error {
	if !keyspaceRE.MatchString(ks) {
		return fmt.Errorf("cassandra: invalid keyspace name %q (want [A-Za-z][A-Za-z0-9_]{0,47})", ks)
	}
	return nil
}

// Connect opens a gocql session to the cluster of cfg, not bound to a
// keyspace (statements name it), with the routing, consistency, timeout and
// retry settings the store uses. Migrate takes such a session; Open makes
// its own. The caller closes it.
func Connect(ctx context.Context, cfg Config) (*gocql.Session, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return connect(ctx, cfg)
}

func connect(ctx context.Context, cfg Config) (*gocql.Session, error) {
	cluster := gocql.NewCluster(cfg.Hosts...)
	cluster.Timeout = cfg.Timeout
	cluster.ConnectTimeout = cfg.ConnectTimeout
	cluster.NumConns = cfg.NumConns
	cluster.Consistency = gocql.LocalQuorum
	cluster.SerialConsistency = gocql.LocalSerial
	cluster.RetryPolicy = &backoffRetry{retries: cfg.Retries, min: cfg.RetryMin, max: cfg.RetryMax}
	cluster.DefaultIdempotence = false // only queries marked idempotent are retried
	cluster.PageSize = 1000
	// No write coalescing: the driver's default (200 us) hands every
	// request to a flusher goroutine that waits out a timer before one
	// writev: three wake-ups and up to 200 us added to each request, of
	// which a DM send makes several in a row. Decision (issue 11): latency
	// first. Measured (docs/benchmarks.md, "The Cassandra driver's write
	// coalescing"): at 100 DM sends/s send->deliver p50 8.4 -> 7.2 ms and
	// the chat role's CPU -6 %; at 2,000/s, where a window sometimes holds
	// a second request, the chat role's CPU +7 % and the fleet's the same.
	cluster.WriteCoalesceWaitTime = 0
	cluster.Logger = slogLogger{cfg.Logger}
	if cfg.OnStatement != nil {
		o := &observer{fn: cfg.OnStatement}
		cluster.QueryObserver, cluster.BatchObserver = o, o
	}
	fallback := gocql.RoundRobinHostPolicy()
	if cfg.LocalDC != "" {
		fallback = gocql.DCAwareRoundRobinPolicy(cfg.LocalDC)
		// Connections to this datacenter's nodes only. Every statement is
		// LOCAL_* or coordinated by a local node (the cross-region QUORUM
		// reads), and the driver prepares a statement it first uses — for
		// its routing key — on any host it holds: with a pool spanning
		// regions, a process that started during a partition hung each new
		// statement on the unreachable region's node until the request
		// timed out (found by test/multiregion TestPartition: a user's
		// first sync in the cut-off region timed out).
		cluster.HostFilter = gocql.DataCenterHostFilter(cfg.LocalDC)
	}
	// Replicas first (token aware), shuffled so reads of a hot
	// conversation spread over them. Only one sequencer writes a
	// conversation, so its conditional writes do not contend however
	// their coordinators are picked.
	cluster.PoolConfig.HostSelectionPolicy = gocql.TokenAwareHostPolicy(fallback, gocql.ShuffleReplicas())
	if cfg.Username != "" {
		cluster.Authenticator = gocql.PasswordAuthenticator{Username: cfg.Username, Password: cfg.Password}
	}
	// gocql's session setup takes no context: run it aside so ctx can
	// abandon it, and close a session that arrives too late.
	type result struct {
		s   *gocql.Session
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := cluster.CreateSession()
		done <- result{s, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("cassandra: connect to %v: %w", cfg.Hosts, r.err)
		}
		return r.s, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.s != nil {
				r.s.Close()
			}
		}()
		return nil, fmt.Errorf("cassandra: connect to %v: %w", cfg.Hosts, ctx.Err())
	}
}

// Store is a store.MessageStore on Cassandra. It is safe for concurrent use.
type Store struct {
	sess     *gocql.Session
	cfg      Config
	log      *slog.Logger
	closed   atomic.Bool
	stmt     statements
	maxBatch int
}

var _ store.MessageStore = (*Store)(nil)

// Open connects to the cluster and checks that cfg.Keyspace was migrated to
// SchemaVersion (Migrate, or `parley migrate`); it does not create or change
// the schema itself.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	sess, err := connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s := &Store{sess: sess, cfg: cfg, log: cfg.Logger, stmt: newStatements(cfg.Keyspace), maxBatch: cfg.MaxBatchBytes}
	v, err := schemaVersion(ctx, sess, cfg.Keyspace)
	if err == nil && v < SchemaVersion {
		err = fmt.Errorf("keyspace %s is at schema version %d, this build needs %d: run parley migrate", cfg.Keyspace, v, SchemaVersion)
	}
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("cassandra: open: %w", err)
	}
	return s, nil
}

// Close closes the session. Later calls return nil; other methods called
// after Close return ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.sess.Close()
	return nil
}

// begin starts an operation: it fails after Close or on a done ctx.
func (s *Store) begin(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// query returns a LOCAL_QUORUM query that runs within ctx; idempotent ones
// may be retried by the driver.
func (s *Store) query(ctx context.Context, idempotent bool, stmt string, args ...any) boundQuery {
	return boundQuery{q: s.sess.Query(stmt, args...).Consistency(gocql.LocalQuorum).Idempotent(idempotent), ctx: ctx}
}

// boundQuery is a query with the context its execution runs in (the
// driver's XContext calls; Query.WithContext is deprecated).
type boundQuery struct {
	q   *gocql.Query
	ctx context.Context
}

// Consistency sets the query's consistency level.
func (b boundQuery) Consistency(c gocql.Consistency) boundQuery { b.q.Consistency(c); return b }

// PageSize sets the rows fetched per page.
func (b boundQuery) PageSize(n int) boundQuery { b.q.PageSize(n); return b }

// Exec runs the query within its context.
func (b boundQuery) Exec() error { return b.q.ExecContext(b.ctx) }

// Scan runs the query within its context and scans its first row.
func (b boundQuery) Scan(dest ...any) error { return b.q.ScanContext(b.ctx, dest...) }

// Iter runs the query within its context.
func (b boundQuery) Iter() *gocql.Iter { return b.q.IterContext(b.ctx) }

// backoffRetry retries idempotent requests on the next host after errors
// another attempt can fix, sleeping exponentially longer (with jitter)
// between attempts, but never past the request's context.
type backoffRetry struct {
	retries  int
	min, max time.Duration
}

func (r *backoffRetry) Attempt(q gocql.RetryableQuery) bool {
	n := q.Attempts()
	if n > r.retries {
		return false
	}
	d := r.min << min(n-1, 20)
	if d > r.max || d <= 0 {
		d = r.max
	}
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-q.Context().Done():
		return false
	}
}

func (r *backoffRetry) GetRetryType(err error) gocql.RetryType {
	if retryable(err) {
		return gocql.RetryNextHost
	}
	return gocql.Rethrow
}

// retryable reports whether err may go away on another attempt: timeouts,
// unavailable, overloaded or bootstrapping nodes, lost connections. Errors
// in the request itself (syntax, invalid, unauthorized, …) do not.
func retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var re gocql.RequestError
	if errors.As(err, &re) {
		switch re.Code() {
		case gocql.ErrCodeSyntax, gocql.ErrCodeInvalid, gocql.ErrCodeUnauthorized, gocql.ErrCodeConfig,
			gocql.ErrCodeAlreadyExists, gocql.ErrCodeCredentials, gocql.ErrCodeFunctionFailure, gocql.ErrCodeProtocol:
			return false
		}
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, gocql.ErrTimeoutNoResponse) ||
		errors.Is(err, gocql.ErrConnectionClosed) || errors.Is(err, gocql.ErrNoConnections) ||
		errors.Is(err, gocql.ErrNoStreams)
}

// slogLogger adapts slog to gocql's StructuredLogger. The driver's info and
// debug lines (host events, pool fills) go to debug level.
type slogLogger struct{ l *slog.Logger }

func (g slogLogger) log(level slog.Level, msg string, fields []gocql.LogField) {
	if !g.l.Enabled(context.Background(), level) {
		return
	}
	attrs := make([]any, 0, 2+2*len(fields))
	attrs = append(attrs, "component", "gocql")
	for _, f := range fields {
		attrs = append(attrs, f.Name, f.Value.Any())
	}
	g.l.Log(context.Background(), level, msg, attrs...)
}

func (g slogLogger) Error(msg string, fields ...gocql.LogField) { g.log(slog.LevelError, msg, fields) }
func (g slogLogger) Warning(msg string, fields ...gocql.LogField) {
	g.log(slog.LevelWarn, msg, fields)
}
func (g slogLogger) Info(msg string, fields ...gocql.LogField)  { g.log(slog.LevelDebug, msg, fields) }
func (g slogLogger) Debug(msg string, fields ...gocql.LogField) { g.log(slog.LevelDebug, msg, fields) }
