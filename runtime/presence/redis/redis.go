// Package redis is the presence.Registry of the distributed mode, kept in
// Redis (7.0 or later; Redis Cluster works too, since a user's keys share a
// hash slot).
//
// Keys, under Config.KeyPrefix (default "parley:"):
//
//	sessions:{user}  sorted set: member session id, score expiry (Unix ms)
//	session:{user}   hash: session id -> device and gateway (encodeSession)
//	presence:{user}  string "<0|1>:<last active Unix ms>", with the status TTL
//
// Redis 7.0 has no per-field TTL, so a session's expiry is its score: reads
// ignore entries whose score has passed, writes prune them, and both keys of
// a user expire with the latest expiry of their entries, so the keys of idle
// users vanish on their own. Every heartbeat rewrites its entry, so the
// registry rebuilds itself within one heartbeat interval after Redis loses
// its data (a restart without persistence, a failover to an empty replica).
//
// Expiries are absolute times from the writer's clock and are compared with
// the reader's clock; the key TTLs follow Redis' clock. Clock skew between
// them of a fraction of the session TTL is harmless.
package redis

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/parleychat/parley/runtime/presence"
)

// ErrClosed is returned by calls on a closed registry.
var ErrClosed = errors.New("presence registry closed")

// Config configures the Redis connection. Zero fields take the defaults
// given on each field.
type Config struct {
	// Addr is host:port of the Redis server. Default 127.0.0.1:6379.
	Addr string
	// Password authenticates with AUTH (empty: none).
	Password string
	// DB is the database number (0..15 on a default server; 0 in a cluster).
	DB int
	// KeyPrefix starts every key. Default "parley:".
	KeyPrefix string
	// DialTimeout bounds connecting. Default 2s.
	DialTimeout time.Duration
	// ReadTimeout bounds each socket read. Default 1s.
	ReadTimeout time.Duration
	// WriteTimeout bounds each socket write. Default 1s.
	WriteTimeout time.Duration
	// Timeout bounds each registry call (retries included) whose context has
	// no earlier deadline, and the Ping of New. Default 2s. Short, because
	// callers on the message path fall back when Redis is slow or down.
	Timeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:6379"
	}
	if c.KeyPrefix == "" {
		c.KeyPrefix = "parley:"
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 2 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Second
	}
	return c
}

// Registry is a presence.Registry in Redis, safe for concurrent use.
type Registry struct {
	c       *goredis.Client
	prefix  string
	timeout time.Duration

	w *writer // Touch and Remove, pipelined (batch.go)

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

var _ presence.Registry = (*Registry)(nil)

// New connects to Redis and checks the connection with a PING bounded by
// cfg.Timeout (and ctx). The returned registry must be closed.
func New(ctx context.Context, cfg Config) (*Registry, error) {
	cfg = cfg.withDefaults()
	c := goredis.NewClient(&goredis.Options{
		Addr:                  cfg.Addr,
		Password:              cfg.Password,
		DB:                    cfg.DB,
		DialTimeout:           cfg.DialTimeout,
		ReadTimeout:           cfg.ReadTimeout,
		WriteTimeout:          cfg.WriteTimeout,
		ContextTimeoutEnabled: true,
		// Maintenance notifications are a Redis Enterprise/Cloud feature;
		// probing for them on every connection of a plain server is noise.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	r := &Registry{c: c, prefix: cfg.KeyPrefix, timeout: cfg.Timeout}
	pctx, cancel := r.bound(ctx)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("presence redis: ping %s db %d: %w", cfg.Addr, cfg.DB, err)
	}
	r.w = newWriter(c, r.bound)
	return r, nil
}

// bound returns ctx limited to the call timeout.
func (r *Registry) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout)
}

// begin fails on a closed registry or a done ctx, and bounds ctx.
func (r *Registry) begin(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if r.closed.Load() {
		return nil, nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	ctx, cancel := r.bound(ctx)
	return ctx, cancel, nil
}

// The braces are Redis Cluster hash tags: a user's keys share a slot, so the
// scripts below may touch both of them.
func (r *Registry) sessionsKey(user string) string { return r.prefix + "sessions:{" + user + "}" }
func (r *Registry) sessionKey(user string) string  { return r.prefix + "session:{" + user + "}" }
func (r *Registry) presenceKey(user string) string { return r.prefix + "presence:{" + user + "}" }

// pruneLua removes the entries of KEYS[1] (sessions) with a score <= ARGV[1]
// (now, ms) and their data in KEYS[2], plus data whose entry is gone. It is
// the start of touchLua too.
const pruneLua = `
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, id in ipairs(dead) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
if redis.call('HLEN', KEYS[2]) ~= redis.call('ZCARD', KEYS[1]) then
  for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do
    if not redis.call('ZSCORE', KEYS[1], id) then redis.call('HDEL', KEYS[2], id) end
  end
end
`

// touchLua prunes (ARGV[1] = now, ms), then stores session ARGV[2] with
// expiry ARGV[3] (ms) and data ARGV[4], or removes it when that expiry has
// passed, and lets both keys expire with their latest entry. (A score is
// printed as a double; PEXPIREAT wants an integer.)
var touchLua = goredis.NewScript(pruneLua + `
if tonumber(ARGV[3]) > tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
else
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if #last == 0 then
  redis.call('DEL', KEYS[2])
  return 0
end
local at = string.format('%.0f', tonumber(last[2]))
redis.call('PEXPIREAT', KEYS[1], at)
redis.call('PEXPIREAT', KEYS[2], at)
return 1
`)

// removeLua deletes session ARGV[1] from a user's sorted set and hash in one
// atomic step (a script, so that it pipelines with the others).
var removeLua = goredis.NewScript(`
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
`)

// Touch registers or refreshes s until s.Expires (kept to the millisecond);
// an s already expired is removed. One script call, pipelined with the
// calls made meanwhile (batch.go).
func (r *Registry) Touch(ctx context.Context, s presence.Session) error {
	if s.UserID == "" || s.SessionID == "" {
		return errors.New("presence redis: touch: session needs a user id and a session id")
	}
	ctx, cancel, err := r.begin(ctx)
	if err != nil {
		return fmt.Errorf("presence redis: touch session %s of %s: %w", s.SessionID, s.UserID, err)
	}
	defer cancel()
	keys := []string{r.sessionsKey(s.UserID), r.sessionKey(s.UserID)}
	now := time.Now().UnixMilli()
	// Run sends EVALSHA and falls back to EVAL after a restart emptied the
	// script cache.
	err = r.w.do(ctx, touchLua, keys, now, s.SessionID, s.Expires.UnixMilli(), encodeSession(s.DeviceID, s.GatewayID))
	if err != nil {
		return fmt.Errorf("presence redis: touch session %s of %s: %w", s.SessionID, s.UserID, err)
	}
	return nil
}

// Remove deletes one session of a user; unknown sessions and users are not
// an error. Redis deletes a user's keys with their last entry.
func (r *Registry) Remove(ctx context.Context, userID, sessionID string) error {
	ctx, cancel, err := r.begin(ctx)
	if err != nil {
		return fmt.Errorf("presence redis: remove session %s of %s: %w", sessionID, userID, err)
	}
	defer cancel()
	err = r.w.do(ctx, removeLua, []string{r.sessionsKey(userID), r.sessionKey(userID)}, sessionID)
	if err != nil {
		return fmt.Errorf("presence redis: remove session %s of %s: %w", sessionID, userID, err)
	}
	return nil
}

// Sessions returns the live sessions of each user (users without any are
// absent), sorted by SessionID. All users are read in one pipelined round
// trip; when it shows expired entries, a second one prunes them.
func (r *Registry) Sessions(ctx context.Context, userIDs []string) (map[string][]presence.Session, error) {
	out := make(map[string][]presence.Session)
	users := unique(userIDs)
	if len(users) == 0 {
		if r.closed.Load() {
			return nil, fmt.Errorf("presence redis: sessions: %w", ErrClosed)
		}
		return out, nil
	}
	ctx, cancel, err := r.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("presence redis: sessions of %d users: %w", len(users), err)
	}
	defer cancel()

	now := time.Now().UnixMilli()
	live := make([]*goredis.ZSliceCmd, len(users))
	data := make([]*goredis.MapStringStringCmd, len(users))
	_, err = r.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, u := range users {
			live[i] = p.ZRangeArgsWithScores(ctx, goredis.ZRangeArgs{
				Key: r.sessionsKey(u), ByScore: true,
				Start: "(" + strconv.FormatInt(now, 10), Stop: "+inf",
			})
			data[i] = p.HGetAll(ctx, r.sessionKey(u))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("presence redis: sessions of %d users: %w", len(users), err)
	}

	var stale []string
	for i, u := range users {
		entries, fields := live[i].Val(), data[i].Val()
		var ss []presence.Session
		for _, e := range entries {
			id, _ := e.Member.(string)
			device, gateway, ok := decodeSession(fields[id])
			if !ok {
				// Data and entry are written together; a missing or
				// garbled one is treated as no session, not an error.
				continue
			}
			ss = append(ss, presence.Session{
				UserID:    u,
				DeviceID:  device,
				SessionID: id,
				GatewayID: gateway,
				Expires:   time.UnixMilli(int64(e.Score)),
			})
		}
		if len(fields) > len(entries) {
			stale = append(stale, u)
		}
		if len(ss) > 0 {
			slices.SortFunc(ss, func(a, b presence.Session) int { return cmp.Compare(a.SessionID, b.SessionID) })
			out[u] = ss
		}
	}
	if len(stale) > 0 {
		r.prune(ctx, stale, now)
	}
	return out, nil
}

// prune deletes the expired entries of users. It is an optimisation (Touch
// prunes and keys expire anyway), so failures are only logged. EVAL, not
// EVALSHA: a pipeline cannot fall back on NOSCRIPT, and pruning is rare.
func (r *Registry) prune(ctx context.Context, users []string, now int64) {
	_, err := r.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, u := range users {
			p.Eval(ctx, pruneLua, []string{r.sessionsKey(u), r.sessionKey(u)}, now)
		}
		return nil
	})
	if err != nil {
		slog.Debug("presence redis: prune expired sessions", "users", len(users), "err", err)
	}
}

// SetStatus stores userID's status for ttl (kept to the millisecond; ttl <= 0:
// until replaced). LastActive is kept to the millisecond.
func (r *Registry) SetStatus(ctx context.Context, userID string, st presence.Status, ttl time.Duration) error {
	if userID == "" {
		return errors.New("presence redis: set status: empty user id")
	}
	ctx, cancel, err := r.begin(ctx)
	if err != nil {
		return fmt.Errorf("presence redis: set status of %s: %w", userID, err)
	}
	defer cancel()
	if err := r.c.Set(ctx, r.presenceKey(userID), encodeStatus(st), statusTTL(ttl)).Err(); err != nil {
		return fmt.Errorf("presence redis: set status of %s: %w", userID, err)
	}
	return nil
}

// SetStatuses stores each user's status of sts for ttl as SetStatus does,
// pipelined: one round trip for the lot.
func (r *Registry) SetStatuses(ctx context.Context, sts map[string]presence.Status, ttl time.Duration) error {
	if _, empty := sts[""]; empty {
		return errors.New("presence redis: set statuses: empty user id")
	}
	ctx, cancel, err := r.begin(ctx)
	if err != nil {
		return fmt.Errorf("presence redis: set statuses of %d users: %w", len(sts), err)
	}
	defer cancel()
	if len(sts) == 0 {
		return nil
	}
	px := statusTTL(ttl)
	_, err = r.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for u, st := range sts {
			p.Set(ctx, r.presenceKey(u), encodeStatus(st), px)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("presence redis: set statuses of %d users: %w", len(sts), err)
	}
	return nil
}

// statusTTL is the expiry SET is given for ttl: at least a millisecond (PX
// needs 1; 0 would mean "keep"), and 0 (no expiry) for ttl <= 0.
func statusTTL(ttl time.Duration) time.Duration {
	switch {
	case ttl <= 0:
		return 0
	case ttl < time.Millisecond:
		return time.Millisecond
	}
	return ttl
}

// Statuses returns the stored, unexpired statuses of userIDs (absent when
// unknown), read in one pipelined round trip. A garbled value counts as
// unknown.
func (r *Registry) Statuses(ctx context.Context, userIDs []string) (map[string]presence.Status, error) {
	out := make(map[string]presence.Status)
	users := unique(userIDs)
	if len(users) == 0 {
		if r.closed.Load() {
			return nil, fmt.Errorf("presence redis: statuses: %w", ErrClosed)
		}
		return out, nil
	}
	ctx, cancel, err := r.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("presence redis: statuses of %d users: %w", len(users), err)
	}
	defer cancel()
	// GETs in a pipeline rather than one MGET: a cluster cannot MGET keys of
	// different slots, and the round trip is the same.
	gets := make([]*goredis.StringCmd, len(users))
	_, err = r.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, u := range users {
			gets[i] = p.Get(ctx, r.presenceKey(u))
		}
		return nil
	})
	if err != nil && !errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("presence redis: statuses of %d users: %w", len(users), err)
	}
	for i, u := range users {
		v, err := gets[i].Result()
		if errors.Is(err, goredis.Nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("presence redis: status of %s: %w", u, err)
		}
		if st, ok := decodeStatus(v); ok {
			out[u] = st
		} else {
			slog.Warn("presence redis: ignoring a garbled status", "user", u, "value", v)
		}
	}
	return out, nil
}

// Close closes the connections; later calls return ErrClosed. Idempotent.
// Client is the registry's Redis client, for other region-wide state on the
// same server (limits.Shared).
func (r *Registry) Client() goredis.UniversalClient { return r.c }

// Prefix is the registry's key prefix (Config.KeyPrefix).
func (r *Registry) Prefix() string { return r.prefix }

func (r *Registry) Close() error {
	r.closeOnce.Do(func() {
		r.closed.Store(true)
		r.w.close()
		if err := r.c.Close(); err != nil {
			r.closeErr = fmt.Errorf("presence redis: close: %w", err)
		}
	})
	return r.closeErr
}

// unique returns ids without duplicates, in first-seen order.
func unique(ids []string) []string {
	if len(ids) <= 1 {
		return ids
	}
	seen := make(map[string]struct{}, len(ids))
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if _, dup := seen[id]; !dup {
			seen[id] = struct{}{}
			out = append(out, id)
		}
	}
	return out
}

// encodeSession is "<len(device)>:<device>|<gateway>": the length makes any
// bytes safe in the device id, and it stays readable in redis-cli.
func encodeSession(device, gateway string) string {
	return strconv.Itoa(len(device)) + ":" + device + "|" + gateway
}

func decodeSession(v string) (device, gateway string, ok bool) {
	n, rest, found := strings.Cut(v, ":")
	if !found {
		return "", "", false
	}
	l, err := strconv.Atoi(n)
	if err != nil || l < 0 || l >= len(rest) || rest[l] != '|' {
		return "", "", false
	}
	return rest[:l], rest[l+1:], true
}

// encodeStatus is "<0|1>:<last active Unix ms>", 0 ms for a zero LastActive.
func encodeStatus(st presence.Status) string {
	online := "0"
	if st.Online {
		online = "1"
	}
	var ms int64
	if !st.LastActive.IsZero() {
		ms = st.LastActive.UnixMilli()
	}
	return online + ":" + strconv.FormatInt(ms, 10)
}

func decodeStatus(v string) (presence.Status, bool) {
	online, ms, found := strings.Cut(v, ":")
	if !found || (online != "0" && online != "1") {
		return presence.Status{}, false
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return presence.Status{}, false
	}
	st := presence.Status{Online: online == "1"}
	if n != 0 {
		st.LastActive = time.UnixMilli(n)
	}
	return st, true
}
