package cassandra

import (
	"context"
	"fmt"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
)

// SetMute implements store.Prefs.
func (s *Store) SetMute(ctx context.Context, conv, user string, untilMs int64) error {
	if err := s.beginPref(ctx, conv, user); err != nil {
		return fmt.Errorf("mute %s for %s: %w", conv, user, err)
	}
	if err := s.query(ctx, true, s.stmt.setMute, conv, user, untilMs).Exec(); err != nil {
		return fmt.Errorf("mute %s for %s: %w", conv, user, err)
	}
	return nil
}

// Unmute implements store.Prefs.
func (s *Store) Unmute(ctx context.Context, conv, user string) error {
	if err := s.beginPref(ctx, conv, user); err != nil {
		return fmt.Errorf("unmute %s for %s: %w", conv, user, err)
	}
	if err := s.query(ctx, true, s.stmt.unmute, conv, user).Exec(); err != nil {
		return fmt.Errorf("unmute %s for %s: %w", conv, user, err)
	}
	return nil
}

// Mutes implements store.Prefs: one partition read.
func (s *Store) Mutes(ctx context.Context, conv string) (map[string]int64, error) {
	if err := checkID("conversation", conv); err != nil {
		return nil, fmt.Errorf("mutes %s: %w", conv, err)
	}
	if err := s.begin(ctx); err != nil {
		return nil, fmt.Errorf("mutes %s: %w", conv, err)
	}
	out := map[string]int64{}
	iter := s.query(ctx, true, s.stmt.mutes, conv).Iter()
	var (
		user  string
		until int64
	)
	for iter.Scan(&user, &until) {
		out[user] = until
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("mutes %s: %w", conv, err)
	}
	return out, nil
}

// SetBlock implements store.Prefs: blocks and blocked_by are written in one
// logged batch, so a block is never left in one table only.
func (s *Store) SetBlock(ctx context.Context, user, other string, on bool) error {
	if err := s.beginPref(ctx, user, other); err != nil {
		return fmt.Errorf("block %s by %s: %w", other, user, err)
	}
	fwd, rev := s.stmt.addBlock, s.stmt.addBlockedBy
	if !on {
		fwd, rev = s.stmt.removeBlock, s.stmt.removeBlocked
	}
	b := s.sess.Batch(gocql.LoggedBatch)
	b.Consistency(gocql.LocalQuorum)
	b.Entries = append(b.Entries,
		gocql.BatchEntry{Stmt: fwd, Args: []any{user, other}, Idempotent: true},
		gocql.BatchEntry{Stmt: rev, Args: []any{other, user}, Idempotent: true})
	if err := b.ExecContext(ctx); err != nil {
		return fmt.Errorf("block %s by %s: %w", other, user, err)
	}
	return nil
}

// Blocks implements store.Prefs.
func (s *Store) Blocks(ctx context.Context, user string) ([]string, error) {
	return s.userList(ctx, "blocks", s.stmt.blocks, user)
}

// BlockedBy implements store.Prefs.
func (s *Store) BlockedBy(ctx context.Context, user string) ([]string, error) {
	return s.userList(ctx, "blocked by", s.stmt.blockedBy, user)
}

// beginPref checks a setting's two ids and starts the operation.
func (s *Store) beginPref(ctx context.Context, a, b string) error {
	if err := checkID("first", a); err != nil {
		return err
	}
	if err := checkID("second", b); err != nil {
		return err
	}
	return s.begin(ctx)
}

// userList reads one partition's clustering column of user ids (sorted:
// the clustering order).
func (s *Store) userList(ctx context.Context, what, stmt, user string) ([]string, error) {
	if err := checkID("user", user); err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, user, err)
	}
	if err := s.begin(ctx); err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, user, err)
	}
	var (
		out   []string
		other string
	)
	iter := s.query(ctx, true, stmt, user).Iter()
	for iter.Scan(&other) {
		out = append(out, other)
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, user, err)
	}
	return out, nil
}
