package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/parleychat/parley/runtime/bus"
)

// Config configures a Worker. Zero fields take the defaults named per field.
type Config struct {
	// Webhook is the URL notifications are POSTed to (http or https).
	Webhook string
	// Topic is the push topic (Topic of the region); Member the worker's
	// static member id in GroupName (the pod name).
	Topic, Member string
	// Timeout bounds one POST (default 5s).
	Timeout time.Duration
	// MaxAttempts bounds the POSTs of one notification (default 6).
	MaxAttempts int
	// BackoffMin and BackoffMax bound the jittered exponential delay between
	// attempts (defaults 200ms and 10s).
	BackoffMin, BackoffMax time.Duration
	// Client sends the requests (default: an http.Client with Timeout).
	Client *http.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if err := validWebhook(c.Webhook); err != nil {
		return c, err
	}
	if c.Topic == "" || c.Member == "" {
		return c, errors.New("push worker: topic and member are required")
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 6
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = 200 * time.Millisecond
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 10 * time.Second
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: c.Timeout}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// commitEvery is how often the worker commits handled offsets.
const commitEvery = time.Second

// Worker consumes the push topic as a member of GroupName and POSTs each
// notification to the webhook, retrying with backoff. Partitions are
// handled in parallel, each in order; a notification being retried holds
// up the ones behind it on its partition (so a down receiver is not
// flooded), up to Config.MaxAttempts.
type Worker struct {
	cfg Config
	b   bus.Bus
	log *slog.Logger

	joined chan struct{}

	mu      sync.Mutex
	m       bus.Membership
	offsets bus.Offsets // handled progress per owned partition
}

// NewWorker returns a worker; it fails on an invalid Config.
func NewWorker(b bus.Bus, cfg Config) (*Worker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Worker{
		cfg:    cfg,
		b:      b,
		log:    cfg.Logger.With("component", "push.worker", "member", cfg.Member),
		joined: make(chan struct{}),
	}, nil
}

// Joined is closed once Run has joined the consumer group.
func (w *Worker) Joined() <-chan struct{} { return w.joined }

// Run joins the group and posts notifications until ctx ends; then it
// commits, leaves the group and returns nil.
func (w *Worker) Run(ctx context.Context) error {
	m, err := w.b.Join(context.WithoutCancel(ctx), GroupName, w.cfg.Topic, w.cfg.Member, w)
	if err != nil {
		return fmt.Errorf("join %s on %s: %w", GroupName, w.cfg.Topic, err)
	}
	w.mu.Lock()
	w.m = m
	w.mu.Unlock()
	close(w.joined)
	t := time.NewTicker(commitEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := m.Leave(); err != nil && !errors.Is(err, bus.ErrClosed) {
				w.log.Warn("leave group", "err", err)
			}
			return nil
		case <-t.C:
			w.commit(nil)
		}
	}
}

// Assigned is a bus.GroupHandler callback (nothing to load).
func (w *Worker) Assigned([]int32) {}

// Revoked commits the revoked partitions' handled offsets.
func (w *Worker) Revoked(ps []int32) {
	w.commit(ps)
	w.offsets.Forget(ps)
}

// Handle posts one notification, retrying until it succeeds, fails for
// good, runs out of attempts or ctx ends (revoke: the next owner posts it
// again, as it is not committed).
func (w *Worker) Handle(ctx context.Context, rec bus.Record) {
	var n Notification
	if err := json.Unmarshal(rec.Value, &n); err != nil {
		w.log.Warn("undecodable push record", "partition", rec.Partition, "offset", rec.Offset, "err", err)
	} else if !w.deliver(ctx, &n, rec.Value) {
		return // ctx ended: leave it uncommitted
	}
	w.offsets.Handled(rec)
}

// deliver posts body until done; it returns false only when ctx ended first.
func (w *Worker) deliver(ctx context.Context, n *Notification, body []byte) bool {
	for attempt := 1; ; attempt++ {
		retry, wait, err := w.post(ctx, n, body)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if !retry || attempt >= w.cfg.MaxAttempts {
			w.log.Warn("push notification dropped", "id", n.ID(), "attempts", attempt, "err", err)
			return true
		}
		d := w.backoff(attempt)
		if wait > d {
			d = min(wait, w.cfg.BackoffMax)
		}
		w.log.Debug("push webhook failed; retrying", "id", n.ID(), "attempt", attempt, "in", d, "err", err)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// backoff is the full-jitter delay before attempt+1: uniform in
// [min, min(max, min·2^attempt)].
func (w *Worker) backoff(attempt int) time.Duration {
	hi := w.cfg.BackoffMin << min(attempt, 20)
	if hi > w.cfg.BackoffMax || hi <= 0 {
		hi = w.cfg.BackoffMax
	}
	lo := w.cfg.BackoffMin
	return lo + time.Duration(rand.Int64N(int64(hi-lo)+1))
}

// post makes one attempt. retry says whether a failure may succeed later;
// wait is the receiver's Retry-After.
func (w *Worker) post(ctx context.Context, n *Notification, body []byte) (retry bool, wait time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.Webhook, bytes.NewReader(body))
	if err != nil {
		return false, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "parley-push")
	req.Header.Set("X-Parley-Delivery", n.ID())
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		return true, 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return false, 0, nil
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		wait = time.Duration(s) * time.Second
	}
	retry = resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
	return retry, wait, fmt.Errorf("webhook answered %s", resp.Status)
}

func (w *Worker) commit(ps []int32) {
	w.mu.Lock()
	m := w.m
	w.mu.Unlock()
	if m == nil {
		return
	}
	if err := w.offsets.Commit(m, ps); err != nil {
		w.log.Debug("commit push offsets", "err", err)
	}
}
