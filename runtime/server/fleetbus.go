package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/presence"
)

// DefaultRouteTimeout bounds one session-registry lookup on the message
// path (chat.Router); a slower registry is treated as down.
const DefaultRouteTimeout = 300 * time.Millisecond

// routeBreak is how long routing skips a registry that just failed: it
// routes to every gateway at once instead of waiting for each lookup to
// time out (docs/design.md §4, degraded routing).
const routeBreak = time.Second

// errRouteBreak is returned by routeRegistry.Sessions while it skips a
// failed registry.
var errRouteBreak = errors.New("session registry failed recently; routing to every gateway")

// routeRegistry is the registry the routers of the distributed mode use:
// Sessions gets a short timeout and, after a failure, fails at once for
// routeBreak, so a down or hung Redis slows no message. Routing then falls
// back to every gateway of the region (chat.Router), which is a superset of
// the right ones: nothing is lost, gateways just drop users they do not hold.
type routeRegistry struct {
	presence.Registry
	timeout  time.Duration
	failedAt atomic.Int64 // unix ns of the last failure, 0 when healthy
}

func newRouteRegistry(reg presence.Registry, timeout time.Duration) *routeRegistry {
	if timeout <= 0 {
		timeout = DefaultRouteTimeout
	}
	return &routeRegistry{Registry: reg, timeout: timeout}
}

func (r *routeRegistry) Sessions(ctx context.Context, userIDs []string) (map[string][]presence.Session, error) {
	if at := r.failedAt.Load(); at != 0 && time.Since(time.Unix(0, at)) < routeBreak {
		return nil, errRouteBreak
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	m, err := r.Registry.Sessions(ctx, userIDs)
	if err != nil {
		r.failedAt.Store(time.Now().UnixNano())
		return nil, err
	}
	r.failedAt.Store(0)
	return m, nil
}

// Close does not close the shared registry: the server does.
func (r *routeRegistry) Close() error { return nil }

// watchedBus is the process's bus as the roles of the distributed mode see
// it. It scopes consumer groups to the region — group "parley.chat" of
// region eu is Kafka group "parley.chat.eu" (GroupID) — because a Kafka
// group spans every topic its members consume: two regions (or two test
// clusters) sharing one Kafka would otherwise rebalance together and their
// static members of the same name would fence each other. It also records
// which partitions the chat role's member owns (GET /v1/chat/partitions)
// and signals when the gateway's deliver subscription has its start offset.
type watchedBus struct {
	bus.Bus
	region         string
	subscribed     chan struct{}
	subscribedOnce sync.Once

	mu    sync.Mutex
	owned map[string][]int32 // group -> owned partitions
}

func newWatchedBus(b bus.Bus, region string) *watchedBus {
	return &watchedBus{Bus: b, region: region, subscribed: make(chan struct{}), owned: make(map[string][]int32)}
}

// GroupID returns the Kafka consumer group of a role's group in region:
// "<group>.<region>".
func GroupID(group, region string) string { return group + "." + region }

func (w *watchedBus) Subscribe(ctx context.Context, topic string, partition int32, fn func(bus.Record)) error {
	err := w.Bus.Subscribe(ctx, topic, partition, fn)
	if err == nil {
		w.subscribedOnce.Do(func() { close(w.subscribed) })
	}
	return err
}

func (w *watchedBus) Join(ctx context.Context, group, topic, member string, h bus.GroupHandler) (bus.Membership, error) {
	return w.Bus.Join(ctx, GroupID(group, w.region), topic, member, &watchedHandler{GroupHandler: h, w: w, group: group})
}

// Lag implements bus.Lagger for group scoped to the region as Join scopes it.
func (w *watchedBus) Lag(ctx context.Context, group, topic string) (int64, error) {
	lg, ok := w.Bus.(bus.Lagger)
	if !ok {
		return 0, fmt.Errorf("bus %T cannot report a group's lag", w.Bus)
	}
	return lg.Lag(ctx, GroupID(group, w.region), topic)
}

// Owned returns the partitions this process owns in group, sorted.
func (w *watchedBus) Owned(group string) []int32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.owned[group])
}

type watchedHandler struct {
	bus.GroupHandler
	w     *watchedBus
	group string
}

func (h *watchedHandler) Assigned(ps []int32) {
	h.w.mu.Lock()
	for _, p := range ps {
		if !slices.Contains(h.w.owned[h.group], p) {
			h.w.owned[h.group] = append(h.w.owned[h.group], p)
		}
	}
	slices.Sort(h.w.owned[h.group])
	h.w.mu.Unlock()
	h.GroupHandler.Assigned(ps)
}

func (h *watchedHandler) Revoked(ps []int32) {
	h.GroupHandler.Revoked(ps)
	h.w.mu.Lock()
	h.w.owned[h.group] = slices.DeleteFunc(h.w.owned[h.group], func(p int32) bool { return slices.Contains(ps, p) })
	h.w.mu.Unlock()
}
