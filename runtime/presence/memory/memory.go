// Package memory is the in-process presence.Registry of embedded mode.
//
// Expired sessions and statuses are never returned; they are also deleted by
// a sweep that runs at most once a second from the registry's own calls (no
// goroutine), so memory follows the users seen recently.
package memory

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/parleychat/parley/runtime/presence"
)

// ErrClosed is returned by calls on a closed registry.
var ErrClosed = errors.New("presence registry closed")

// sweepEvery is the minimum time between two sweeps of expired entries.
const sweepEvery = time.Second

// Registry is an in-memory presence.Registry, safe for concurrent use.
type Registry struct {
	mu     sync.RWMutex
	closed bool
	// user -> sessions: a slice, since a user has one to a few devices and
	// a map's first insert allocates eight slots per connected user.
	sessions  map[string][]presence.Session
	statuses  map[string]status
	lastSweep time.Time
}

type status struct {
	st      presence.Status
	expires time.Time // zero: never
}

var _ presence.Registry = (*Registry)(nil)

// New returns an empty registry.
func New() *Registry {
	return &Registry{
		sessions:  make(map[string][]presence.Session),
		statuses:  make(map[string]status),
		lastSweep: time.Now(),
	}
}

// beginRead read-locks r for a lookup (which filters expired entries
// itself, so it needs no sweep); it fails on a closed registry. Callers
// RUnlock. Lookups run on every delivery, so they share the lock.
func (r *Registry) beginRead(ctx context.Context) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		return time.Time{}, ErrClosed
	}
	return time.Now(), nil
}

// begin locks r and sweeps if due; it fails on a closed registry. Callers
// unlock.
func (r *Registry) begin(ctx context.Context) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return time.Time{}, ErrClosed
	}
	now := time.Now()
	if now.Sub(r.lastSweep) >= sweepEvery {
		r.sweep(now)
		r.lastSweep = now
	}
	return now, nil
}

func (r *Registry) sweep(now time.Time) {
	for u, ss := range r.sessions {
		live := ss[:0]
		for _, s := range ss {
			if s.Expires.After(now) {
				live = append(live, s)
			}
		}
		clear(ss[len(live):])
		if len(live) == 0 {
			delete(r.sessions, u)
		} else {
			r.sessions[u] = live
		}
	}
	for u, st := range r.statuses {
		if st.expired(now) {
			delete(r.statuses, u)
		}
	}
}

func (s status) expired(now time.Time) bool {
	return !s.expires.IsZero() && !s.expires.After(now)
}

// Touch registers or refreshes s until s.Expires; an s already expired is
// removed.
func (r *Registry) Touch(ctx context.Context, s presence.Session) error {
	if s.UserID == "" || s.SessionID == "" {
		return errors.New("presence touch: session needs a user id and a session id")
	}
	now, err := r.begin(ctx)
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	if !s.Expires.After(now) {
		r.remove(s.UserID, s.SessionID)
		return nil
	}
	ss := r.sessions[s.UserID]
	for i := range ss {
		if ss[i].SessionID == s.SessionID {
			ss[i] = s
			return nil
		}
	}
	r.sessions[s.UserID] = append(ss, s)
	return nil
}

// Remove deletes a session.
func (r *Registry) Remove(ctx context.Context, userID, sessionID string) error {
	if _, err := r.begin(ctx); err != nil {
		return err
	}
	defer r.mu.Unlock()
	r.remove(userID, sessionID)
	return nil
}

func (r *Registry) remove(userID, sessionID string) {
	ss := r.sessions[userID]
	for i := range ss {
		if ss[i].SessionID == sessionID {
			ss = append(ss[:i], ss[i+1:]...)
			break
		}
	}
	if len(ss) == 0 {
		delete(r.sessions, userID)
	} else {
		r.sessions[userID] = ss
	}
}

// Sessions returns the live sessions of each user, sorted by SessionID.
func (r *Registry) Sessions(ctx context.Context, userIDs []string) (map[string][]presence.Session, error) {
	now, err := r.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer r.mu.RUnlock()
	out := make(map[string][]presence.Session)
	for _, u := range userIDs {
		if _, done := out[u]; done {
			continue
		}
		var live []presence.Session
		for _, s := range r.sessions[u] {
			if s.Expires.After(now) {
				live = append(live, s)
			}
		}
		if len(live) > 0 {
			slices.SortFunc(live, func(a, b presence.Session) int { return cmp.Compare(a.SessionID, b.SessionID) })
			out[u] = live
		}
	}
	return out, nil
}

// SetStatus stores userID's status for ttl (ttl <= 0: until replaced).
func (r *Registry) SetStatus(ctx context.Context, userID string, st presence.Status, ttl time.Duration) error {
	if userID == "" {
		return errors.New("presence set status: empty user id")
	}
	return r.SetStatuses(ctx, map[string]presence.Status{userID: st}, ttl)
}

// SetStatuses stores each user's status of sts for ttl (ttl <= 0: until
// replaced).
func (r *Registry) SetStatuses(ctx context.Context, sts map[string]presence.Status, ttl time.Duration) error {
	if _, empty := sts[""]; empty {
		return errors.New("presence set statuses: empty user id")
	}
	now, err := r.begin(ctx)
	if err != nil {
		return err
	}
	defer r.mu.Unlock()
	for u, st := range sts {
		e := status{st: st}
		if ttl > 0 {
			e.expires = now.Add(ttl)
		}
		r.statuses[u] = e
	}
	return nil
}

// Statuses returns the unexpired statuses of userIDs.
func (r *Registry) Statuses(ctx context.Context, userIDs []string) (map[string]presence.Status, error) {
	now, err := r.beginRead(ctx)
	if err != nil {
		return nil, err
	}
	defer r.mu.RUnlock()
	out := make(map[string]presence.Status)
	for _, u := range userIDs {
		if e, ok := r.statuses[u]; ok && !e.expired(now) {
			out[u] = e.st
		}
	}
	return out, nil
}

// Close empties the registry; later calls return ErrClosed.
func (r *Registry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.sessions, r.statuses = nil, nil
	return nil
}
