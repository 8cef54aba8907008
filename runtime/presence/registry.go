// Package presence owns who is online: the session registry (user → device
// sessions → gateway, with expiry) and presence status with a grace period
// before offline. Backends of Registry live in sub-packages (presence/memory,
// presence/redis) and pass presencetest.Run.
package presence

import (
	"context"
	"time"
)

// Session is one connected device of a user, held by one gateway until Expires.
type Session struct {
	UserID    string
	DeviceID  string
	SessionID string
	GatewayID string
	Expires   time.Time
}

// Status is a user's presence. A zero LastActive means never seen.
type Status struct {
	Online     bool
	LastActive time.Time
}

// Registry is the session registry and presence store.
type Registry interface {
	// Touch registers or refreshes s until s.Expires.
	Touch(ctx context.Context, s Session) error
	// Remove deletes one session of a user.
	Remove(ctx context.Context, userID, sessionID string) error
	// Sessions returns the live (unexpired) sessions of each user.
	Sessions(ctx context.Context, userIDs []string) (map[string][]Session, error)
	// SetStatus stores a user's status for ttl.
	SetStatus(ctx context.Context, userID string, st Status, ttl time.Duration) error
	// SetStatuses stores each user's status of sts (user id -> status) for
	// ttl, in one round trip: what a region's presence refresh stores for
	// every user online in a peer region each heartbeat. An empty user id
	// is an error and stores nothing.
	SetStatuses(ctx context.Context, sts map[string]Status, ttl time.Duration) error
	// Statuses returns the stored statuses of users (absent when unknown).
	Statuses(ctx context.Context, userIDs []string) (map[string]Status, error)
	// Close releases the registry.
	Close() error
}

// Config holds the presence timings. Tests use short values.
type Config struct {
	// Heartbeat is how often a session refreshes its registry entry.
	Heartbeat time.Duration
	// TTL is how long a session lives without a heartbeat.
	TTL time.Duration
	// Grace is how long a user with no session stays online before offline
	// is announced, so a network switch or device handover does not flap.
	Grace time.Duration
}

// DefaultConfig returns the defaults: heartbeat 30s, TTL 75s, grace 5s.
func DefaultConfig() Config {
	return Config{Heartbeat: 30 * time.Second, TTL: 75 * time.Second, Grace: 5 * time.Second}
}

// WithDefaults returns c with its zero or negative fields set to
// DefaultConfig's: the one place the defaults are applied.
func (c Config) WithDefaults() Config {
	def := DefaultConfig()
	if c.Heartbeat <= 0 {
		c.Heartbeat = def.Heartbeat
	}
	if c.TTL <= 0 {
		c.TTL = def.TTL
	}
	if c.Grace <= 0 {
		c.Grace = def.Grace
	}
	return c
}
