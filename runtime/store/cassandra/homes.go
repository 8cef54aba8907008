package cassandra

import (
	"context"
	"errors"
	"fmt"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/parleychat/parley/runtime/store"
)

// UserHome implements store.UserHomes; a user without a stored home wraps
// store.ErrNotFound. It reads the local datacenter (LOCAL_QUORUM): a home
// stored moments ago in another region may not be visible yet.
func (s *Store) UserHome(ctx context.Context, user string) (string, error) {
	return s.userHome(ctx, user, gocql.LocalQuorum)
}

// UserHomeAnyRegion implements store.CrossRegionReads (QUORUM of every
// datacenter's replicas).
func (s *Store) UserHomeAnyRegion(ctx context.Context, user string) (string, error) {
	return s.userHome(ctx, user, gocql.Quorum)
}

// ConversationAnyRegion implements store.CrossRegionReads.
func (s *Store) ConversationAnyRegion(ctx context.Context, id string) (store.Conversation, error) {
	if err := checkID("conversation", id); err != nil {
		return store.Conversation{}, fmt.Errorf("conversation %s: %w", id, err)
	}
	if err := s.begin(ctx); err != nil {
		return store.Conversation{}, fmt.Errorf("conversation %s: %w", id, err)
	}
	c, err := s.conversation(ctx, id, gocql.Quorum)
	if err != nil {
		return store.Conversation{}, fmt.Errorf("conversation %s (any region): %w", id, err)
	}
	return c, nil
}

func (s *Store) userHome(ctx context.Context, user string, cl gocql.Consistency) (string, error) {
	if err := checkID("user", user); err != nil {
		return "", fmt.Errorf("user home %s: %w", user, err)
	}
	if err := s.begin(ctx); err != nil {
		return "", fmt.Errorf("user home %s: %w", user, err)
	}
	var region string
	err := s.query(ctx, true, s.stmt.userHome, user).Consistency(cl).Scan(&region)
	if errors.Is(err, gocql.ErrNotFound) {
		return "", fmt.Errorf("user home %s: %w", user, store.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("user home %s: %w", user, err)
	}
	return region, nil
}

// SetUserHome implements store.UserHomes. onlyIfAbsent is a conditional
// insert at LOCAL_SERIAL: two first connections in two regions at the same
// moment can each win in their own datacenter, and the replicas then keep
// the later write (documented in docs/multi-region.md).
func (s *Store) SetUserHome(ctx context.Context, user, region string, onlyIfAbsent bool) (string, error) {
	if err := checkID("user", user); err != nil {
		return "", fmt.Errorf("set user home %s: %w", user, err)
	}
	if region == "" {
		return "", fmt.Errorf("set user home %s: empty region", user)
	}
	if err := s.begin(ctx); err != nil {
		return "", fmt.Errorf("set user home %s: %w", user, err)
	}
	if !onlyIfAbsent {
		if err := s.query(ctx, true, s.stmt.setUserHome, user, region).Exec(); err != nil {
			return "", fmt.Errorf("set user home %s: %w", user, err)
		}
		return region, nil
	}
	existing := map[string]any{}
	applied, err := s.sess.Query(s.stmt.addUserHome, user, region).
		Consistency(gocql.LocalQuorum).SerialConsistency(gocql.LocalSerial).MapScanCASContext(ctx, existing)
	if err != nil {
		return "", fmt.Errorf("set user home %s: %w", user, err)
	}
	if applied {
		return region, nil
	}
	got, _ := existing["region"].(string)
	if got == "" {
		return "", fmt.Errorf("set user home %s: conditional insert not applied and no region stored", user)
	}
	return got, nil
}
