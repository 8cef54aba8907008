package presence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// statusTTL is how long the registry keeps a status, so the last activity of
// an offline user is answered for that long.
const statusTTL = 30 * 24 * time.Hour

// registryTimeout bounds each status write of Run, which no caller waits on.
const registryTimeout = 5 * time.Second

// Service decides when users go online and offline and announces it.
//
// Connected, Heartbeat and Disconnected update the registry and the service's
// view of the users it was told about; Run writes statuses and calls onChange
// in the order the changes were decided, from its own goroutine and never
// while holding the service's lock (onChange may call back into the service).
// Memory is proportional to the users online through this service.
type Service struct {
	reg      Registry
	cfg      Config
	onChange func(*parleyv1.Presence)
	remote   func() []string // SetRemoteRegions
	running  atomic.Bool
	kick     chan struct{} // wakes Run when a change is queued

	mu    sync.Mutex
	users map[string]*user
	// outbox holds decided changes for Run to write and announce, in order.
	outbox []change
	// offlining counts queued OFFLINE changes per user, with the last one's
	// LastActive, until Run wrote them: the registry is stale for them.
	offlining map[string]pendingOffline
	// offlines counts OFFLINE changes ever queued, to detect one queued while
	// a registry read was in flight.
	offlines uint64
}

// user is a user online (or in its grace period) through this service.
type user struct {
	sessions   expiries // this service's sessions of the user
	lastActive time.Time
	offlineAt  time.Time // when the grace ends; zero while a session is live
	statusAt   time.Time // when an online status was last queued
}

type change struct {
	user     string
	st       Status
	announce bool
}

type pendingOffline struct {
	n          int
	lastActive time.Time
}

// NewService returns a service over reg. Zero or negative fields of cfg take
// their DefaultConfig values. onChange (may be nil) gets each announced change.
// Run must be running for changes to be stored and announced.
func NewService(reg Registry, cfg Config, onChange func(*parleyv1.Presence)) *Service {
	return &Service{
		reg:       reg,
		cfg:       cfg.WithDefaults(),
		onChange:  onChange,
		kick:      make(chan struct{}, 1),
		users:     make(map[string]*user),
		offlining: make(map[string]pendingOffline),
	}
}

// RemoteStatusID is the registry key of userID's status as region announced it
// (a presence change relayed from another region, runtime/region.Relay). "/"
// is outside the id grammar (wire.ValidID), so it names no user.
func RemoteStatusID(userID, region string) string { return userID + "/" + region }

// SetRemoteRegions makes Get merge into each user's status the statuses that
// the regions named by regions() announced (RemoteStatusID): online if online
// here or fresh online in any of them (Config.RemoteOnline), with the latest
// last activity. Regions announce changes live and re-announce their online
// users every heartbeat (runtime/presence/relay.Announcer), so a change lost
// while the link was down is corrected within Config.RemoteWindow
// (docs/multi-region.md). Call before the service is used.
func (s *Service) SetRemoteRegions(regions func() []string) { s.remote = regions }

// RemoteWindow is how long a status another region announced online stays
// online without being announced again: the session TTL plus two heartbeats
// (the period of the other region's re-announcements, one of which may be
// lost). With the defaults, 2m15s.
func (c Config) RemoteWindow() time.Duration {
	c = c.WithDefaults()
	return c.TTL + 2*c.Heartbeat
}

// RemoteOnline reports whether st, a status another region announced
// (RemoteStatusID), still says online at now: online with a last activity
// within RemoteWindow. Last activities are the announcing region's clock, so
// clock skew between regions shifts the window by as much.
func (c Config) RemoteOnline(st Status, now time.Time) bool {
	return st.Online && now.Sub(st.LastActive) <= c.RemoteWindow()
}

// OnlineElsewhere returns which of users another region announced online
// (the statuses SetRemoteRegions merges; this region's own are not read):
// for the offline push of a multi-region deployment, whose home region sees
// only its own sessions. Without remote regions it is empty.
func (s *Service) OnlineElsewhere(ctx context.Context, users []string) (map[string]bool, error) {
	out := map[string]bool{}
	peers := s.peers()
	if len(peers) == 0 || len(users) == 0 {
		return out, nil
	}
	sts, err := s.reg.Statuses(ctx, appendRemoteIDs(nil, users, peers))
	if err != nil {
		return nil, fmt.Errorf("presence: statuses in other regions: %w", err)
	}
	now := time.Now()
	for _, u := range users {
		for _, r := range peers {
			if s.cfg.RemoteOnline(sts[RemoteStatusID(u, r)], now) {
				out[u] = true
			}
		}
	}
	return out, nil
}

// Online returns the users online through this service (a live session, or
// within their grace period), each with its last activity: what another
// region is re-told every heartbeat (runtime/presence/relay.Announcer) so
// that it catches up after changes were lost on the way.
func (s *Service) Online() []*parleyv1.Presence {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*parleyv1.Presence, 0, len(s.users))
	for id, u := range s.users {
		out = append(out, toProto(id, Status{Online: true, LastActive: u.lastActive}))
	}
	return out
}

// peers returns the regions SetRemoteRegions names (nil without).
func (s *Service) peers() []string {
	if s.remote == nil {
		return nil
	}
	return s.remote()
}

// appendRemoteIDs appends to keys the RemoteStatusID of every user in every
// region.
func appendRemoteIDs(keys, users, regions []string) []string {
	for _, u := range users {
		for _, r := range regions {
			keys = append(keys, RemoteStatusID(u, r))
		}
	}
	return keys
}

// Registry returns the registry the service writes to.
func (s *Service) Registry() Registry { return s.reg }

func validate(sess Session) error {
	if sess.UserID == "" || sess.SessionID == "" {
		return errors.New("presence: session needs a user id and a session id")
	}
	return nil
}

// Connected registers a new session (Expires = now + TTL) and, if the user
// was not online, announces it online. A user in its grace period stays
// online without a new announcement. An error reports a registry failure;
// the service's own view is updated regardless, so callers may log it and
// carry on.
func (s *Service) Connected(ctx context.Context, sess Session) error {
	if err := validate(sess); err != nil {
		return err
	}
	now := time.Now()
	sess.Expires = now.Add(s.cfg.TTL)
	err := s.reg.Touch(ctx, sess)
	if err != nil {
		err = fmt.Errorf("presence: register session %s of %s: %w", sess.SessionID, sess.UserID, err)
	}
	s.register(ctx, sess, now)
	return err
}

// register adds sess to the service's view, deciding whether the user comes
// online.
func (s *Service) register(ctx context.Context, sess Session, now time.Time) {
	s.mu.Lock()
	_, tracked := s.users[sess.UserID]
	stale := s.offlining[sess.UserID].n > 0
	offlines := s.offlines
	s.mu.Unlock()

	elsewhere := false
	if !tracked && !stale {
		// Online through another process (another gateway, or one that
		// crashed less than TTL ago): subscribers already know.
		elsewhere = s.onlineInRegistry(ctx, sess.UserID, now)
	}

	s.mu.Lock()
	u := s.users[sess.UserID]
	if u == nil {
		u = &user{}
		s.users[sess.UserID] = u
		// An OFFLINE queued since the read makes the read stale: announce.
		announce := !elsewhere || s.offlines != offlines || s.offlining[sess.UserID].n > 0
		s.enqueue(change{user: sess.UserID, st: Status{Online: true, LastActive: now}, announce: announce})
		u.statusAt = now
	}
	u.sessions.set(sess.SessionID, sess.Expires)
	u.lastActive = now
	u.offlineAt = time.Time{} // cancels a pending offline: no flap
	s.mu.Unlock()
}

// onlineInRegistry reports whether the registry shows userID online, i.e.
// with activity within TTL. Registry errors count as not online, so the
// worst case is a repeated online announcement.
func (s *Service) onlineInRegistry(ctx context.Context, userID string, now time.Time) bool {
	sts, err := s.reg.Statuses(ctx, []string{userID})
	if err != nil {
		slog.Warn("presence: read status", "user", userID, "err", err)
		return false
	}
	st, ok := sts[userID]
	return ok && s.online(st, now)
}

func (s *Service) online(st Status, now time.Time) bool {
	return st.Online && now.Sub(st.LastActive) <= s.cfg.TTL
}

// enqueue queues c for Run. Caller holds s.mu.
func (s *Service) enqueue(c change) {
	s.outbox = append(s.outbox, c)
	if !c.st.Online {
		p := s.offlining[c.user]
		p.n++
		p.lastActive = c.st.LastActive
		s.offlining[c.user] = p
		s.offlines++
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Heartbeat refreshes a session (Expires = now + TTL) and the user's last
// activity. A session the service does not know (e.g. swept after missed
// heartbeats) is registered as by Connected.
func (s *Service) Heartbeat(ctx context.Context, sess Session) error {
	if err := validate(sess); err != nil {
		return err
	}
	now := time.Now()
	sess.Expires = now.Add(s.cfg.TTL)
	err := s.reg.Touch(ctx, sess)
	if err != nil {
		err = fmt.Errorf("presence: refresh session %s of %s: %w", sess.SessionID, sess.UserID, err)
	}
	s.mu.Lock()
	u := s.users[sess.UserID]
	if u == nil {
		s.mu.Unlock()
		s.register(ctx, sess, now)
		return err
	}
	u.sessions.set(sess.SessionID, sess.Expires)
	u.lastActive = now
	u.offlineAt = time.Time{}
	// One status write per user per half heartbeat, however many devices:
	// it keeps LastActive fresher than TTL for readers of the registry.
	if now.Sub(u.statusAt) >= s.cfg.Heartbeat/2 {
		s.enqueue(change{user: sess.UserID, st: Status{Online: true, LastActive: now}})
		u.statusAt = now
	}
	s.mu.Unlock()
	return err
}

// Disconnected removes a session. If the user has no other live session,
// offline is announced after Grace unless a session comes back first (and
// not at all if the registry shows a live session through another process).
// An error reports a registry failure; the service's view is updated
// regardless.
func (s *Service) Disconnected(ctx context.Context, sess Session) error {
	if err := validate(sess); err != nil {
		return err
	}
	err := s.reg.Remove(ctx, sess.UserID, sess.SessionID)
	if err != nil {
		err = fmt.Errorf("presence: remove session %s of %s: %w", sess.SessionID, sess.UserID, err)
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.users[sess.UserID]
	if u == nil {
		return err
	}
	u.sessions.remove(sess.SessionID)
	u.lastActive = now
	if len(u.sessions) == 0 && u.offlineAt.IsZero() {
		u.offlineAt = now.Add(s.cfg.Grace)
	}
	return err
}

// Get returns the presence of each user: ONLINE for users online (or in
// their grace period) through this service or online in the registry within
// TTL, OFFLINE with their last activity otherwise (0 when never seen), and
// UNKNOWN when the registry cannot be read. It does not fail.
func (s *Service) Get(ctx context.Context, userIDs []string) (map[string]*parleyv1.Presence, error) {
	out := make(map[string]*parleyv1.Presence, len(userIDs))
	var ask []string
	s.mu.Lock()
	for _, id := range userIDs {
		if u := s.users[id]; u != nil {
			out[id] = toProto(id, Status{Online: true, LastActive: u.lastActive})
		} else if p := s.offlining[id]; p.n > 0 {
			// Decided but not yet written: the registry is stale.
			out[id] = toProto(id, Status{LastActive: p.lastActive})
		} else if _, dup := out[id]; !dup {
			ask = append(ask, id)
			out[id] = nil
		}
	}
	s.mu.Unlock()
	if len(ask) == 0 {
		return out, nil
	}
	keys := ask
	peers := s.peers()
	if len(peers) > 0 {
		keys = appendRemoteIDs(slices.Clone(ask), ask, peers)
	}
	sts, err := s.reg.Statuses(ctx, keys)
	if err != nil {
		slog.Warn("presence: read statuses", "users", len(ask), "err", err)
	}
	now := time.Now()
	for _, id := range ask {
		st, ok := sts[id]
		switch {
		case err != nil:
			out[id] = &parleyv1.Presence{UserId: id, Status: parleyv1.PresenceStatus_PRESENCE_STATUS_UNKNOWN}
		case !ok:
			out[id] = toProto(id, Status{})
		default:
			// A status left online by a crashed process turns offline once
			// its last activity is older than TTL.
			st.Online = s.online(st, now)
			out[id] = toProto(id, st)
		}
		if err != nil {
			continue
		}
		for _, r := range peers {
			rst, ok := sts[RemoteStatusID(id, r)]
			if !ok {
				continue
			}
			p := out[id]
			if s.cfg.RemoteOnline(rst, now) {
				p.Status = parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE
			}
			if la := rst.LastActive.UnixMilli(); !rst.LastActive.IsZero() && la > p.LastActive {
				p.LastActive = la
			}
		}
	}
	return out, nil
}

func toProto(userID string, st Status) *parleyv1.Presence {
	p := &parleyv1.Presence{UserId: userID, Status: parleyv1.PresenceStatus_PRESENCE_STATUS_OFFLINE}
	if st.Online {
		p.Status = parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE
	}
	if !st.LastActive.IsZero() {
		p.LastActive = st.LastActive.UnixMilli()
	}
	return p
}

// tickInterval is the period of Run's ticker: a quarter of the shortest
// timing, between 5ms and 1s, so offline comes at most that late.
func (s *Service) tickInterval() time.Duration {
	d := min(s.cfg.Heartbeat, s.cfg.TTL, s.cfg.Grace) / 4
	return min(max(d, 5*time.Millisecond), time.Second)
}

// Run drives the service until ctx ends: one shared ticker sweeps sessions
// that stopped heartbeating (their user goes offline after Grace too) and
// fires due offlines, and queued changes are written to the registry and
// passed to onChange in order. Run it once per service. Changes still
// queued when ctx ends are dropped; readers then see a user offline once
// its last activity is older than TTL.
func (s *Service) Run(ctx context.Context) {
	if !s.running.CompareAndSwap(false, true) {
		slog.Error("presence: Service.Run called twice")
		return
	}
	defer s.running.Store(false)
	t := time.NewTicker(s.tickInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.tick(ctx, now)
		case <-s.kick:
		}
		s.flush(ctx)
	}
}

// tick sweeps expired sessions and queues the offlines whose grace ended.
func (s *Service) tick(ctx context.Context, now time.Time) {
	var due []string
	s.mu.Lock()
	for id, u := range s.users {
		u.sessions.expire(now)
		if len(u.sessions) > 0 {
			continue
		}
		if u.offlineAt.IsZero() {
			// Every session stopped heartbeating (a crashed gateway or a
			// lost Disconnected): offline after the grace like any other.
			u.offlineAt = now.Add(s.cfg.Grace)
		}
		if !now.Before(u.offlineAt) {
			due = append(due, id)
		}
	}
	s.mu.Unlock()
	if len(due) == 0 {
		return
	}

	// A live session through another process keeps the user online; that
	// process announces offline when its sessions end.
	live, err := s.reg.Sessions(ctx, due)
	if err != nil {
		slog.Warn("presence: read sessions before offline", "users", len(due), "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range due {
		u := s.users[id]
		// Re-check: a session may have come back while the lock was free.
		if u == nil || len(u.sessions) > 0 || u.offlineAt.IsZero() || now.Before(u.offlineAt) {
			continue
		}
		delete(s.users, id)
		if len(live[id]) > 0 {
			continue
		}
		s.enqueue(change{user: id, st: Status{LastActive: u.lastActive}, announce: true})
	}
}

// flush writes and announces the queued changes in order. Only Run calls it.
func (s *Service) flush(ctx context.Context) {
	for {
		s.mu.Lock()
		if len(s.outbox) == 0 {
			s.outbox = nil // let a burst's backing array go
			s.mu.Unlock()
			return
		}
		c := s.outbox[0]
		s.outbox[0] = change{}
		s.outbox = s.outbox[1:]
		s.mu.Unlock()

		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), registryTimeout)
		if err := s.reg.SetStatus(wctx, c.user, c.st, statusTTL); err != nil {
			slog.Warn("presence: write status", "user", c.user, "online", c.st.Online, "err", err)
		}
		cancel()
		if !c.st.Online {
			s.mu.Lock()
			if p := s.offlining[c.user]; p.n <= 1 {
				delete(s.offlining, c.user)
			} else {
				p.n--
				s.offlining[c.user] = p
			}
			s.mu.Unlock()
		}
		if c.announce && s.onChange != nil {
			s.onChange(toProto(c.user, c.st))
		}
	}
}

// expiries holds one user's sessions and their expiry times. A user has one
// to a few devices, so a slice costs a fraction of a map (whose first insert
// allocates eight slots) for every connected user.
type expiries []expiry

type expiry struct {
	session string
	expires time.Time
}

func (e *expiries) set(session string, expires time.Time) {
	for i := range *e {
		if (*e)[i].session == session {
			(*e)[i].expires = expires
			return
		}
	}
	*e = append(*e, expiry{session, expires})
}

func (e *expiries) remove(session string) {
	for i := range *e {
		if (*e)[i].session == session {
			*e = append((*e)[:i], (*e)[i+1:]...)
			return
		}
	}
}

// expire drops the sessions that expired at or before now.
func (e *expiries) expire(now time.Time) {
	live := (*e)[:0]
	for _, x := range *e {
		if x.expires.After(now) {
			live = append(live, x)
		}
	}
	clear((*e)[len(live):])
	*e = live
}
