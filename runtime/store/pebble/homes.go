package pebble

import (
	"context"
	"fmt"

	pebbledb "github.com/cockroachdb/pebble"

	"github.com/parleychat/parley/runtime/store"
)

func userHomeKey(user string) []byte { return []byte(tableUserHome + user) }

// UserHome implements store.UserHomes.
func (s *Store) UserHome(ctx context.Context, user string) (string, error) {
	if err := checkID("user", user); err != nil {
		return "", fmt.Errorf("user home %s: %w", user, err)
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return "", fmt.Errorf("user home %s: %w", user, err)
	}
	defer release()
	v, found, err := s.get(userHomeKey(user))
	if err != nil {
		return "", fmt.Errorf("user home %s: %w", user, err)
	}
	if !found {
		return "", fmt.Errorf("user home %s: %w", user, store.ErrNotFound)
	}
	return string(v), nil
}

// SetUserHome implements store.UserHomes.
func (s *Store) SetUserHome(ctx context.Context, user, region string, onlyIfAbsent bool) (string, error) {
	if err := checkID("user", user); err != nil {
		return "", fmt.Errorf("set user home %s: %w", user, err)
	}
	if region == "" {
		return "", fmt.Errorf("set user home %s: empty region", user)
	}
	release, err := s.acquire(ctx)
	if err != nil {
		return "", fmt.Errorf("set user home %s: %w", user, err)
	}
	defer release()
	// A per-user lock serialises a check-then-set against another.
	defer s.convLocks.lock(tableUserHome + user)()
	key := userHomeKey(user)
	if onlyIfAbsent {
		v, found, err := s.get(key)
		if err != nil {
			return "", fmt.Errorf("set user home %s: %w", user, err)
		}
		if found {
			return string(v), nil
		}
	}
	if err := s.db.Set(key, []byte(region), pebbledb.Sync); err != nil {
		return "", fmt.Errorf("set user home %s: %w", user, err)
	}
	return region, nil
}
