package limits

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	goredis "github.com/redis/go-redis/v9"

	"github.com/parleychat/parley/runtime/coalesce"
)

// Limiter is a per-user budget: Allow spends one of user's tokens, or says
// how long until one is there. *Users (one process) and *Shared (every
// gateway of a region) implement it.
type Limiter interface {
	Allow(user string) (ok bool, retryAfter time.Duration)
}

// sharedTimeout bounds one budget check in Redis; past it the local bucket
// decides (a send must not wait on a slow Redis).
const sharedTimeout = 50 * time.Millisecond

// sharedBackoff is how long after a failed check the local bucket decides
// alone, so a Redis that drops packets costs one timeout per second, not one
// per request (like the session registry's, server.routeRegistry).
const sharedBackoff = time.Second

// Shared is a per-user budget kept in Redis, so that it holds across every
// gateway of a region (issue 14: a user connected to two gateways had twice
// the budget). It is GCRA by github.com/go-redis/redis_rate, one Lua call
// per Allow, under keys "rate:<prefix><user>"; the calls of concurrent
// Allows reach Redis together in one pipeline (pipelinedScripts). A local
// *Users bucket of the same rate and burst answers first — a refusal costs
// no round trip, and a user within budget on this gateway is checked
// region-wide — and decides alone while Redis fails (for a second after
// each failure, logged at most every 10 s), so an outage loosens the
// budget to per gateway, as before, rather than refusing everyone. It is
// safe for concurrent use.
type Shared struct {
	lim    *redis_rate.Limiter
	limit  redis_rate.Limit
	prefix string
	local  *Users
	off    bool // perSecond <= 0: no limit
	log    *slog.Logger
	warned atomic.Int64 // unix ns of the last failure logged
	failed atomic.Int64 // unix ns of the last failed check (sharedBackoff)
}

// NewShared returns a budget of perSecond tokens per second and burst at
// most per user, kept in c under prefix (the region's Redis key prefix
// plus what the budget is for, e.g. "parley:eu:send:"). perSecond <= 0
// disables limiting.
func NewShared(c goredis.UniversalClient, prefix string, perSecond float64, burst int) *Shared {
	burst = max(burst, 1)
	s := &Shared{lim: redis_rate.NewLimiter(newPipelinedScripts(c)), prefix: prefix, local: NewUsers(perSecond, burst), off: perSecond <= 0,
		log: slog.Default().With("component", "limits.shared", "prefix", prefix)}
	if !s.off {
		// One token every 1/perSecond: a Rate of 1 per that Period keeps
		// fractional rates exact.
		s.limit = redis_rate.Limit{Rate: 1, Period: time.Duration(float64(time.Second) / perSecond), Burst: burst}
	}
	return s
}

// Allow implements Limiter.
func (s *Shared) Allow(user string) (bool, time.Duration) {
	if s.off {
		return true, 0
	}
	if ok, wait := s.local.Allow(user); !ok {
		return false, wait
	}
	if time.Now().UnixNano()-s.failed.Load() < int64(sharedBackoff) {
		return true, 0 // Redis failed just now: the local bucket decides
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	res, err := s.lim.Allow(ctx, s.prefix+user, s.limit)
	if err != nil {
		now := time.Now().UnixNano()
		s.failed.Store(now)
		if last := s.warned.Load(); now-last >= int64(10*time.Second) && s.warned.CompareAndSwap(last, now) {
			s.log.Warn("shared budget unavailable; this gateway's budget decides for a second", "err", err)
		}
		return true, 0 // the local bucket already allowed it
	}
	if res.Allowed == 0 {
		return false, max(res.RetryAfter, time.Millisecond)
	}
	return true, 0
}

// pipelinedScripts is the client redis_rate runs its GCRA script on:
// concurrent EvalSha calls (one per Allow that reaches Redis) go to Redis
// together in one pipeline, through a coalesce.Batcher: a lone call goes at
// once, as a plain command, and the calls arriving while one is in flight go
// together in the next. A check per DM send, one round trip each, was a
// tenth of the fleet gateway's CPU at 2,000 sends/s (issue 11). Everything
// else redis_rate calls (Eval after a NOSCRIPT, ScriptLoad) goes to the
// embedded client directly.
//
// A pipeline runs with its own sharedTimeout, so a call that waits behind
// one in flight returns within two.
type pipelinedScripts struct {
	goredis.UniversalClient
	evals *coalesce.Batcher[evalSha, *goredis.Cmd]
}

// evalSha is one EvalSha call's arguments.
type evalSha struct {
	sha  string
	keys []string
	args []any
}

func newPipelinedScripts(c goredis.UniversalClient) *pipelinedScripts {
	return &pipelinedScripts{UniversalClient: c, evals: coalesce.New(func(ctx context.Context, calls []evalSha) []*goredis.Cmd {
		ctx, cancel := context.WithTimeout(ctx, sharedTimeout)
		defer cancel()
		if len(calls) == 1 {
			return []*goredis.Cmd{c.EvalSha(ctx, calls[0].sha, calls[0].keys, calls[0].args...)}
		}
		pipe := c.Pipeline()
		cmds := make([]*goredis.Cmd, len(calls))
		for i, e := range calls {
			cmds[i] = pipe.EvalSha(ctx, e.sha, e.keys, e.args...)
		}
		_, _ = pipe.Exec(ctx) // each command carries its own result or error
		return cmds
	})}
}

// EvalSha runs the script sha with concurrent callers' (above).
func (p *pipelinedScripts) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *goredis.Cmd {
	return p.evals.Do(ctx, evalSha{sha: sha, keys: keys, args: args})
}
