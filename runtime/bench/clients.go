package bench

import (
	"github.com/gorilla/websocket"

	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/runtime/client"
)

// tokenTTL is the validity of minted tokens: longer than any run.
const tokenTTL = 24 * time.Hour

// dialConcurrency is how many SDK clients connect at once.
const dialConcurrency = 32

// runID returns a short random id that makes user ids unique per run, so a
// run against a long-lived server does not meet an earlier run's state.
func runID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// user is one SDK client of a scenario.
type user struct {
	id string // user id (from Welcome with file tokens)
	c  *client.Client
}

// connectUsers dials one SDK client per id (ids may be rewritten from the
// Welcome when the target uses file tokens), each with onEvent bound to its
// index. It returns the clients or the first error, closing what it opened.
//
// self[i], when self is not nil, is set to client i's user id once its Dial
// returns, for event handlers that skip the client's own messages.
func connectUsers(ctx context.Context, t *Target, ids []string, self []atomic.Pointer[string], onEvent func(i int, ev client.Event), opt func(*client.Options)) ([]*user, error) {
	users, _, first := dial(ctx, t, ids, self, onEvent, opt, nil, true)
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	if first != nil {
		closeUsers(users)
		return nil, first
	}
	return users, nil
}

// dialEach dials one SDK client per id, as connectUsers does, but goes on
// past failures: it returns the clients (nil where the dial failed) and the
// failures by reason, and counts successes in connected as they happen.
func dialEach(ctx context.Context, t *Target, ids []string, self []atomic.Pointer[string], onEvent func(i int, ev client.Event), opt func(*client.Options), connected *atomic.Int64) ([]*user, map[string]int64) {
	users, failures, _ := dial(ctx, t, ids, self, onEvent, opt, connected, false)
	return users, failures
}

// dial dials one SDK client per id, dialConcurrency at a time, and returns
// the clients (nil where a dial failed), the failures by reason and the
// first error; with stop, no dial starts after the first failure. self,
// onEvent, opt and connected may be nil.
func dial(ctx context.Context, t *Target, ids []string, self []atomic.Pointer[string], onEvent func(i int, ev client.Event), opt func(*client.Options), connected *atomic.Int64, stop bool) ([]*user, map[string]int64, error) {
	users := make([]*user, len(ids))
	failures := map[string]int64{}
	// Users alternate over the gateways when there are several (user i on
	// URLs[i % n]): a dm pair then spans two gateways, or two regions.
	urls := t.URLs
	if len(urls) == 0 {
		urls = []string{t.URL}
	}
	dss := make([][]*websocket.Dialer, len(urls))
	for k, u := range urls {
		dss[k] = dialers(urlHost(u), 16, 15*time.Second)
	}
	var (
		wg     sync.WaitGroup
		next   atomic.Int64
		first  error
		mu     sync.Mutex
		failed atomic.Bool
	)
	for range min(dialConcurrency, len(ids)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ids) || ctx.Err() != nil || (stop && failed.Load()) {
					return
				}
				tok, err := t.Token(ids[i], tokenTTL)
				if err == nil {
					ds := dss[i%len(urls)]
					o := client.Options{URL: urls[i%len(urls)], Token: tok, Dialer: ds[i%len(ds)], EventBuffer: 4096}
					if onEvent != nil {
						o.OnEvent = func(ev client.Event) { onEvent(i, ev) }
					}
					if opt != nil {
						opt(&o)
					}
					var c *client.Client
					if c, err = client.Dial(ctx, o); err == nil {
						id := c.UserID()
						users[i] = &user{id: id, c: c}
						if self != nil {
							self[i].Store(&id)
						}
						if connected != nil {
							connected.Add(1)
						}
						continue
					}
				}
				failed.Store(true)
				mu.Lock()
				failures[dialReason(nil, err)]++
				if first == nil {
					first = fmt.Errorf("connect %s: %w", ids[i], err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return users, failures, first
}

func closeUsers(users []*user) {
	var wg sync.WaitGroup
	for _, u := range users {
		if u != nil {
			wg.Go(func() { _ = u.c.Close() })
		}
	}
	wg.Wait()
}

// Message texts carry the send time, so latency needs no shared state:
// "bench <unix ns> <key>".
func benchText(sent time.Time, key int64) string {
	return "bench " + strconv.FormatInt(sent.UnixNano(), 10) + " " + strconv.FormatInt(key, 10)
}

// parseBench returns the send time and key of a bench text.
func parseBench(text string) (time.Time, int64, bool) {
	rest, ok := strings.CutPrefix(text, "bench ")
	if !ok {
		return time.Time{}, 0, false
	}
	ts, k, ok := strings.Cut(rest, " ")
	if !ok {
		return time.Time{}, 0, false
	}
	ns, err1 := strconv.ParseInt(ts, 10, 64)
	key, err2 := strconv.ParseInt(k, 10, 64)
	if err1 != nil || err2 != nil {
		return time.Time{}, 0, false
	}
	return time.Unix(0, ns), key, true
}

// pacer calls send(n) for each send due at rate per second from start until
// ctx ends, in 5 ms steps, and returns how many were due.
func pacer(ctx context.Context, perSec float64, send func(seq int64)) int64 {
	start := time.Now()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	var due int64
	for {
		select {
		case <-ctx.Done():
			return due
		case now := <-t.C:
			want := int64(now.Sub(start).Seconds() * perSec)
			for ; due < want; due++ {
				send(due)
			}
		}
	}
}

// sender runs sends concurrently, at most maxInFlight at once; sends past
// that are counted as skipped (the target could not keep up), not queued,
// so the offered rate does not silently fall behind.
type sender struct {
	sem      chan struct{}
	wg       sync.WaitGroup
	ok       atomic.Int64
	skipped  atomic.Int64
	errs     errCounter
	sendOkHi *Histogram // send → send_ok
}

func newSender(maxInFlight int) *sender {
	return &sender{sem: make(chan struct{}, maxInFlight), sendOkHi: NewHistogram()}
}

func (s *sender) send(ctx context.Context, c *client.Client, conv, text string, sent time.Time) {
	select {
	case s.sem <- struct{}{}:
	default:
		s.skipped.Add(1)
		return
	}
	s.wg.Go(func() {
		defer func() { <-s.sem }()
		_, err := c.Send(ctx, conv, text)
		if err != nil {
			s.errs.add(err)
			return
		}
		s.ok.Add(1)
		s.sendOkHi.Record(time.Since(sent))
	})
}

// waitFor polls cond every 10 ms until it holds or d passes.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
