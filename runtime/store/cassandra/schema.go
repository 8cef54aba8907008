package cassandra

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
)

// SchemaVersion is the schema version this build reads and writes; Open
// refuses a keyspace below it.
const SchemaVersion = 8

// migration is one schema version: statements that are each idempotent (IF
// NOT EXISTS), so a migration interrupted half way is simply run again.
type migration struct {
	version     int
	description string
	stmts       []string // "%[1]s" is the keyspace
}

// migrations in version order. Never edit a released one: add the next.
var migrations = []migration{{
	version:     1,
	description: "messages, conversations, members, user_conversations, receipts",
	stmts: []string{
		// One partition per 4,096 seqs of a conversation (bucket = seq >>
		// 12). head_bucket is only written in bucket 0: Head's hint.
		`CREATE TABLE IF NOT EXISTS %[1]s.messages (
			conversation_id text,
			bucket bigint,
			seq bigint,
			message_id bigint,
			sender_id text,
			client_msg_id text,
			kind int,
			body text,
			media blob,
			members frozen<list<text>>,
			created_at timestamp,
			head_bucket bigint static,
			PRIMARY KEY ((conversation_id, bucket), seq)
		) WITH CLUSTERING ORDER BY (seq DESC)`,
		`CREATE TABLE IF NOT EXISTS %[1]s.conversations (
			id text PRIMARY KEY,
			kind text,
			title text,
			home_region text,
			created_by text,
			created_at timestamp
		)`,
		// Every write carries USING TIMESTAMP = the event's seq.
		`CREATE TABLE IF NOT EXISTS %[1]s.members (
			conversation_id text,
			user_id text,
			joined_seq bigint,
			role text,
			PRIMARY KEY (conversation_id, user_id)
		)`,
		`CREATE TABLE IF NOT EXISTS %[1]s.user_conversations (
			user_id text,
			conversation_id text,
			PRIMARY KEY (user_id, conversation_id)
		)`,
		// Every write carries USING TIMESTAMP = the pointer; never deleted.
		`CREATE TABLE IF NOT EXISTS %[1]s.receipts (
			conversation_id text,
			user_id text,
			delivered_seq bigint,
			read_seq bigint,
			PRIMARY KEY (conversation_id, user_id)
		)`,
	},
}, {
	version:     2,
	description: "user_homes: each user's home region (multi-region)",
	stmts: []string{
		`CREATE TABLE IF NOT EXISTS %[1]s.user_homes (
			user_id text PRIMARY KEY,
			region text
		)`,
	},
}, {
	version:     3,
	description: "messages: target_seq, edited_at, deleted, change_seq (edit and delete)",
	stmts: []string{
		`ALTER TABLE %[1]s.messages ADD IF NOT EXISTS target_seq bigint`,
		`ALTER TABLE %[1]s.messages ADD IF NOT EXISTS edited_at timestamp`,
		`ALTER TABLE %[1]s.messages ADD IF NOT EXISTS deleted boolean`,
		`ALTER TABLE %[1]s.messages ADD IF NOT EXISTS change_seq bigint`,
	},
}, {
	version:     4,
	description: "messages: reply (the quote a reply carries, a parley.v1.Quote)",
	stmts: []string{
		`ALTER TABLE %[1]s.messages ADD IF NOT EXISTS reply blob`,
	},
}, {
	version:     5,
	description: "messages: mentions (the members a text mentions)",
	stmts: []string{
		`ALTER TABLE %[1]s.messages ADD IF NOT EXISTS mentions frozen<list<text>>`,
	},
}, {
	version:     6,
	description: "messages: reactions, reaction_seq (reactions)",
	stmts: []string{
		// One cell: a format byte and a parley.v1.Message holding only
		// emoji, reaction_removed and reactions (reactionsFormatProto).
		`ALTER TABLE %[1]s.messages ADD IF NOT EXISTS reactions blob`,
		`ALTER TABLE %[1]s.messages ADD IF NOT EXISTS reaction_seq bigint`,
	},
}, {
	version:     7,
	description: "conversations: renamed_title (group rename)",
	stmts: []string{
		// Written USING TIMESTAMP = the RENAMED event's seq; read in place
		// of title when set. title itself is written by the conditional
		// insert at wall-clock time, which a seq timestamp never beats.
		`ALTER TABLE %[1]s.conversations ADD IF NOT EXISTS renamed_title text`,
	},
}, {
	version:     8,
	description: "mutes, blocks, blocked_by (mute and block)",
	stmts: []string{
		// Keyed by conversation: offline push asks "who muted this
		// conversation" once per message; the inbox reads one partition
		// per conversation it already loads. until: Unix ms, 0 no end.
		`CREATE TABLE IF NOT EXISTS %[1]s.mutes (
			conversation_id text,
			user_id text,
			until bigint,
			PRIMARY KEY (conversation_id, user_id)
		)`,
		// A block is written to both tables in one logged batch: blocks
		// lists whom a user blocks, blocked_by whom a user is blocked by
		// (the sequencer's and presence's question, one partition read).
		`CREATE TABLE IF NOT EXISTS %[1]s.blocks (
			user_id text,
			blocked_id text,
			PRIMARY KEY (user_id, blocked_id)
		)`,
		`CREATE TABLE IF NOT EXISTS %[1]s.blocked_by (
			user_id text,
			blocker_id text,
			PRIMARY KEY (user_id, blocker_id)
		)`,
	},
}}

// Options says where and how Migrate creates the schema.
type Options struct {
	// Keyspace to create or upgrade (default "parley"); see Config.Keyspace.
	Keyspace string
	// Datacenters maps each datacenter to its replication factor, for
	// NetworkTopologyStrategy: production, one datacenter per region, e.g.
	// {"eu-west": 3, "us-east": 3}.
	Datacenters map[string]int
	// ReplicationFactor, when Datacenters is empty, uses SimpleStrategy
	// (one-datacenter development and test clusters only).
	ReplicationFactor int
	// Logger gets one line per applied migration and replication change
	// (default slog.Default()).
	Logger *slog.Logger
}

// Migrate brings keyspace o.Keyspace up to SchemaVersion: it creates the
// keyspace with o's replication, applies each missing migration in order and
// records it in schema_version. Running it again is a no-op, and a run cut
// short is finished by the next. If the keyspace exists with another
// replication, Migrate alters it to o's and logs a warning, since the new
// replicas only get their data after `nodetool rebuild` or repair.
//
// Run one Migrate at a time per cluster (the operator's migrate Job does):
// Cassandra 5.0 does not serialise concurrent schema changes. s need not be
// bound to a keyspace (Connect returns such a session).
func Migrate(ctx context.Context, s *gocql.Session, o Options) error {
	if o.Keyspace == "" {
		o.Keyspace = DefaultKeyspace
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := checkKeyspace(o.Keyspace); err != nil {
		return err
	}
	repl, err := replication(o)
	if err != nil {
		return fmt.Errorf("cassandra: migrate %s: %w", o.Keyspace, err)
	}
	ks := o.Keyspace
	exec := func(stmt string) error {
		return s.Query(stmt).Consistency(gocql.LocalQuorum).ExecContext(ctx)
	}
	if err := exec(fmt.Sprintf("CREATE KEYSPACE IF NOT EXISTS %s WITH replication = %s AND durable_writes = true", ks, cqlMap(repl))); err != nil {
		return fmt.Errorf("cassandra: migrate %s: create keyspace: %w", ks, err)
	}
	current, err := keyspaceReplication(ctx, s, ks)
	if err != nil {
		return fmt.Errorf("cassandra: migrate %s: %w", ks, err)
	}
	if !sameReplication(current, repl) {
		if err := exec(fmt.Sprintf("ALTER KEYSPACE %s WITH replication = %s", ks, cqlMap(repl))); err != nil {
			return fmt.Errorf("cassandra: migrate %s: alter replication: %w", ks, err)
		}
		o.Logger.Warn("cassandra keyspace replication changed; run nodetool rebuild or repair so new replicas get their data",
			"component", "cassandra", "keyspace", ks, "from", current, "to", repl)
	}
	if err := exec(fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s.schema_version (
		version int PRIMARY KEY,
		description text,
		applied_at timestamp
	)`, ks)); err != nil {
		return fmt.Errorf("cassandra: migrate %s: create schema_version: %w", ks, err)
	}
	applied, err := appliedVersions(ctx, s, ks)
	if err != nil {
		return fmt.Errorf("cassandra: migrate %s: %w", ks, err)
	}
	for _, m := range migrations {
		if applied[m.version] {
			continue
		}
		for _, stmt := range m.stmts {
			if err := exec(fmt.Sprintf(stmt, ks)); err != nil {
				return fmt.Errorf("cassandra: migrate %s to version %d: %w", ks, m.version, err)
			}
		}
		err := s.Query(fmt.Sprintf("INSERT INTO %s.schema_version (version, description, applied_at) VALUES (?, ?, ?)", ks),
			m.version, m.description, time.Now()).Consistency(gocql.LocalQuorum).ExecContext(ctx)
		if err != nil {
			return fmt.Errorf("cassandra: migrate %s: record version %d: %w", ks, m.version, err)
		}
		o.Logger.Info("cassandra schema migrated", "component", "cassandra", "keyspace", ks,
			"version", m.version, "description", m.description)
	}
	return nil
}

// replication returns o's replication map in Cassandra's own form.
func replication(o Options) (map[string]string, error) {
	if len(o.Datacenters) > 0 {
		m := map[string]string{"class": "org.apache.cassandra.locator.NetworkTopologyStrategy"}
		for dc, rf := range o.Datacenters {
			if dc == "" || dc == "class" || strings.ContainsAny(dc, "'\\") || rf < 1 {
				return nil, fmt.Errorf("invalid replication %q: %d", dc, rf)
			}
			m[dc] = strconv.Itoa(rf)
		}
		return m, nil
	}
	if o.ReplicationFactor < 1 {
		return nil, errors.New("no replication: set Datacenters (production) or ReplicationFactor (one datacenter)")
	}
	return map[string]string{
		"class":              "org.apache.cassandra.locator.SimpleStrategy",
		"replication_factor": strconv.Itoa(o.ReplicationFactor),
	}, nil
}

func cqlMap(m map[string]string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "'%s': '%s'", k, m[k])
	}
	b.WriteByte('}')
	return b.String()
}

func keyspaceReplication(ctx context.Context, s *gocql.Session, ks string) (map[string]string, error) {
	var repl map[string]string
	err := s.Query("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?", ks).
		Consistency(gocql.LocalOne).Idempotent(true).ScanContext(ctx, &repl)
	if err != nil {
		return nil, fmt.Errorf("read replication: %w", err)
	}
	return repl, nil
}

// sameReplication compares replication maps, allowing the short class name.
func sameReplication(a, b map[string]string) bool {
	class := func(m map[string]string) string {
		c := m["class"]
		return c[strings.LastIndexByte(c, '.')+1:]
	}
	if class(a) != class(b) || len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if k != "class" && b[k] != v {
			return false
		}
	}
	return true
}

func appliedVersions(ctx context.Context, s *gocql.Session, ks string) (map[int]bool, error) {
	iter := s.Query(fmt.Sprintf("SELECT version FROM %s.schema_version", ks)).
		Consistency(gocql.LocalQuorum).Idempotent(true).IterContext(ctx)
	out := map[int]bool{}
	var v int
	for iter.Scan(&v) {
		out[v] = true
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("read schema_version: %w", err)
	}
	return out, nil
}

// schemaVersion returns the highest migration applied to ks such that every
// lower one is applied too; 0 when none is (or ks does not exist).
func schemaVersion(ctx context.Context, s *gocql.Session, ks string) (int, error) {
	var n int
	err := s.Query("SELECT count(*) FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'schema_version'", ks).
		Consistency(gocql.LocalOne).Idempotent(true).ScanContext(ctx, &n)
	if err != nil {
		return 0, fmt.Errorf("read schema of keyspace %s: %w", ks, err)
	}
	if n == 0 {
		return 0, nil
	}
	applied, err := appliedVersions(ctx, s, ks)
	if err != nil {
		return 0, err
	}
	v := 0
	for applied[v+1] {
		v++
	}
	return v, nil
}

// statements are the store's CQL, with the keyspace spliced in once.
type statements struct {
	insertMessage  string
	messagesDesc   string // (conv, bucket, from, to, limit), newest first
	messagesAsc    string // same, oldest first
	message        string
	newestSeq      string // newest seq of one bucket
	headProbe      string // newest seq of bucket 0 and the head_bucket hint
	setHeadBucket  string
	insertConv     string
	conversation   string
	members        string
	member         string
	addMember      string
	removeMember   string
	rename         string
	addInbox       string
	inbox          string
	advanceDeliver string
	advanceRead    string
	receipts       string
	receipt        string
	messagesSerial string // rows of a seq range, for resolving a conditional write
	changeMessage  string // an edit or delete's effect on its target (conditional)
	reactMessage   string // a reaction's effect on its target (conditional)
	clearBody      string // the text of a superseded EDITED event (conditional)
	userHome       string
	setUserHome    string
	addUserHome    string // IF NOT EXISTS
	setMute        string
	unmute         string
	mutes          string
	addBlock       string
	addBlockedBy   string
	removeBlock    string
	removeBlocked  string
	blocks         string
	blockedBy      string
}

const messageColumns = "seq, message_id, sender_id, client_msg_id, kind, body, media, members, created_at, target_seq, edited_at, deleted, change_seq, reply, mentions, reactions, reaction_seq"

func newStatements(ks string) statements {
	f := func(format string) string { return strings.ReplaceAll(format, "$ks", ks) }
	return statements{
		insertMessage: f(`INSERT INTO $ks.messages (conversation_id, bucket, seq, message_id, sender_id, client_msg_id, kind, body, media, members, created_at,
			target_seq, edited_at, deleted, change_seq, reply, mentions, reactions, reaction_seq)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS`),
		messagesDesc: f(`SELECT ` + messageColumns + ` FROM $ks.messages
			WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ? ORDER BY seq DESC LIMIT ?`),
		messagesAsc: f(`SELECT ` + messageColumns + ` FROM $ks.messages
			WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ? ORDER BY seq ASC LIMIT ?`),
		message:        f(`SELECT ` + messageColumns + ` FROM $ks.messages WHERE conversation_id = ? AND bucket = ? AND seq = ?`),
		newestSeq:      f(`SELECT seq FROM $ks.messages WHERE conversation_id = ? AND bucket = ? LIMIT 1`),
		headProbe:      f(`SELECT seq, head_bucket FROM $ks.messages WHERE conversation_id = ? AND bucket = 0 LIMIT 1`),
		setHeadBucket:  f(`UPDATE $ks.messages USING TIMESTAMP ? SET head_bucket = ? WHERE conversation_id = ? AND bucket = 0`),
		insertConv:     f(`INSERT INTO $ks.conversations (id, kind, title, home_region, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS`),
		conversation:   f(`SELECT kind, title, home_region, created_by, created_at, renamed_title FROM $ks.conversations WHERE id = ?`),
		members:        f(`SELECT user_id, joined_seq, role FROM $ks.members WHERE conversation_id = ?`),
		member:         f(`SELECT joined_seq, role FROM $ks.members WHERE conversation_id = ? AND user_id = ?`),
		addMember:      f(`INSERT INTO $ks.members (conversation_id, user_id, joined_seq, role) VALUES (?, ?, ?, ?) USING TIMESTAMP ?`),
		removeMember:   f(`DELETE FROM $ks.members USING TIMESTAMP ? WHERE conversation_id = ? AND user_id = ?`),
		rename:         f(`UPDATE $ks.conversations USING TIMESTAMP ? SET renamed_title = ? WHERE id = ?`),
		addInbox:       f(`INSERT INTO $ks.user_conversations (user_id, conversation_id) VALUES (?, ?)`),
		inbox:          f(`SELECT conversation_id FROM $ks.user_conversations WHERE user_id = ?`),
		advanceDeliver: f(`UPDATE $ks.receipts USING TIMESTAMP ? SET delivered_seq = ? WHERE conversation_id = ? AND user_id = ?`),
		advanceRead:    f(`UPDATE $ks.receipts USING TIMESTAMP ? SET delivered_seq = ?, read_seq = ? WHERE conversation_id = ? AND user_id = ?`),
		receipts:       f(`SELECT user_id, delivered_seq, read_seq FROM $ks.receipts WHERE conversation_id = ?`),
		receipt:        f(`SELECT delivered_seq, read_seq FROM $ks.receipts WHERE conversation_id = ? AND user_id = ?`),
		messagesSerial: f(`SELECT ` + messageColumns + ` FROM $ks.messages WHERE conversation_id = ? AND bucket = ? AND seq >= ? AND seq <= ?`),
		changeMessage: f(`UPDATE $ks.messages SET body = ?, media = ?, edited_at = ?, deleted = ?, change_seq = ?, reply = ?, mentions = ?, reactions = ?
			WHERE conversation_id = ? AND bucket = ? AND seq = ? IF change_seq = ?`),
		// change_seq in the condition: a delete that lands in between wins.
		reactMessage: f(`UPDATE $ks.messages SET reactions = ?, reaction_seq = ?
			WHERE conversation_id = ? AND bucket = ? AND seq = ? IF change_seq = ? AND reaction_seq = ?`),
		clearBody:     f(`UPDATE $ks.messages SET body = '' WHERE conversation_id = ? AND bucket = ? AND seq = ? IF EXISTS`),
		userHome:      f(`SELECT region FROM $ks.user_homes WHERE user_id = ?`),
		setUserHome:   f(`INSERT INTO $ks.user_homes (user_id, region) VALUES (?, ?)`),
		addUserHome:   f(`INSERT INTO $ks.user_homes (user_id, region) VALUES (?, ?) IF NOT EXISTS`),
		setMute:       f(`INSERT INTO $ks.mutes (conversation_id, user_id, until) VALUES (?, ?, ?)`),
		unmute:        f(`DELETE FROM $ks.mutes WHERE conversation_id = ? AND user_id = ?`),
		mutes:         f(`SELECT user_id, until FROM $ks.mutes WHERE conversation_id = ?`),
		addBlock:      f(`INSERT INTO $ks.blocks (user_id, blocked_id) VALUES (?, ?)`),
		addBlockedBy:  f(`INSERT INTO $ks.blocked_by (user_id, blocker_id) VALUES (?, ?)`),
		removeBlock:   f(`DELETE FROM $ks.blocks WHERE user_id = ? AND blocked_id = ?`),
		removeBlocked: f(`DELETE FROM $ks.blocked_by WHERE user_id = ? AND blocker_id = ?`),
		blocks:        f(`SELECT blocked_id FROM $ks.blocks WHERE user_id = ?`),
		blockedBy:     f(`SELECT blocker_id FROM $ks.blocked_by WHERE user_id = ?`),
	}
}
