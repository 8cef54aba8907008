package pebble

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	pebbledb "github.com/cockroachdb/pebble"
)

func muteKey(conv, user string) []byte { return append(prefix(tableMute, conv), user...) }

// SetMute implements store.Prefs.
func (s *Store) SetMute(ctx context.Context, conv, user string, untilMs int64) error {
	return s.setPref(ctx, "mute", conv, user, func(b *pebbledb.Batch) error {
		return b.Set(muteKey(conv, user), binary.BigEndian.AppendUint64(nil, uint64(untilMs)), nil)
	})
}

// Unmute implements store.Prefs.
func (s *Store) Unmute(ctx context.Context, conv, user string) error {
	return s.setPref(ctx, "unmute", conv, user, func(b *pebbledb.Batch) error {
		return b.Delete(muteKey(conv, user), nil)
	})
}

// Mutes implements store.Prefs.
func (s *Store) Mutes(ctx context.Context, conv string) (map[string]int64, error) {
	out := map[string]int64{}
	err := s.scanPref(ctx, "mutes", tableMute, conv, func(user, v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("corrupt mute row of %q", user)
		}
		out[string(user)] = int64(binary.BigEndian.Uint64(v))
		return nil
	})
	return out, err
}

// SetBlock implements store.Prefs: the block and its reverse row are one
// batch.
func (s *Store) SetBlock(ctx context.Context, user, other string, on bool) error {
	return s.setPref(ctx, "block", user, other, func(b *pebbledb.Batch) error {
		fwd, rev := append(prefix(tableBlock, user), other...), append(prefix(tableBlockedBy, other), user...)
		if !on {
			if err := b.Delete(fwd, nil); err != nil {
				return err
			}
			return b.Delete(rev, nil)
		}
		if err := b.Set(fwd, nil, nil); err != nil {
			return err
		}
		return b.Set(rev, nil, nil)
	})
}

// Blocks implements store.Prefs.
func (s *Store) Blocks(ctx context.Context, user string) ([]string, error) {
	return s.userList(ctx, "blocks", tableBlock, user)
}

// BlockedBy implements store.Prefs.
func (s *Store) BlockedBy(ctx context.Context, user string) ([]string, error) {
	return s.userList(ctx, "blocked by", tableBlockedBy, user)
}

// setPref writes one synced batch built by fill, after checking both ids.
func (s *Store) setPref(ctx context.Context, what, a, b string, fill func(*pebbledb.Batch) error) error {
	if err := checkID("first", a); err != nil {
		return fmt.Errorf("%s %s %s: %w", what, a, b, err)
	}
	if err := checkID("second", b); err != nil {
		return fmt.Errorf("%s %s %s: %w", what, a, b, err)
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return fmt.Errorf("%s %s %s: %w", what, a, b, err)
	}
	defer release()
	batch := s.db.NewBatch()
	defer func() { _ = batch.Close() }() // releases the batch; Commit reported the write
	if err := fill(batch); err != nil {
		return fmt.Errorf("%s %s %s: %w", what, a, b, err)
	}
	if err := batch.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("%s %s %s: %w", what, a, b, err)
	}
	return nil
}

// scanPref calls fn with the suffix and value of every row of table under id.
func (s *Store) scanPref(ctx context.Context, what, table, id string, fn func(suffix, v []byte) error) error {
	if err := checkID("key", id); err != nil {
		return fmt.Errorf("%s %s: %w", what, id, err)
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, id, err)
	}
	defer release()
	if err := s.scan(prefix(table, id), fn); err != nil {
		return fmt.Errorf("%s %s: %w", what, id, err)
	}
	return nil
}

// userList returns the suffixes of table's rows under user, sorted.
func (s *Store) userList(ctx context.Context, what, table, user string) ([]string, error) {
	var out []string
	err := s.scanPref(ctx, what, table, user, func(other, _ []byte) error {
		out = append(out, string(other))
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(out) // already in key order; sorted is the contract
	return out, nil
}
