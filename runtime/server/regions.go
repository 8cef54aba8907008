package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/bus/kafka"
	"github.com/parleychat/parley/runtime/region"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

// newMesh connects this region to its peers: one Kafka client per peer
// region (producer only), with this region's publish timeout.
func (s *Server) newMesh(ctx context.Context, reg prometheus.Registerer, fc FleetConfig) (*region.Mesh, error) {
	peers := fc.Peers
	if fc.PeerFile != "" {
		fromFile, _, err := readPeerFile(fc.PeerFile)
		if err != nil {
			return nil, err
		}
		peers = append(slices.Clone(peers), fromFile...)
	}
	return region.NewMesh(region.Config{
		Local: s.cfg.Region, LocalID: fc.RegionID, Own: s.bus, Peers: peers,
		PublishTimeout: fc.Kafka.PublishTimeout,
		Metrics:        region.NewMetrics(reg),
		Logger:         slog.Default(),
		Dial: func(p region.Peer) (bus.Bus, error) {
			kcfg := fc.Kafka
			kcfg.Brokers = p.Brokers
			kcfg.ClientID = fmt.Sprintf("parley-%s-%s-to-%s", fc.Role, s.cfg.Region, p.Name)
			kcfg.OnRequest = func(api string) { s.Metrics.KafkaRequests.WithLabelValues(api).Inc() }
			// A region starts while a peer is unreachable: its forwards wait
			// in the outbox and its relays are dropped until the link is up.
			kcfg.NoPing = true
			// While the link is down the client warns at every dial attempt;
			// the mesh says it once ("link to region down"), so only the
			// client's errors are logged.
			kcfg.Logger = slog.New(errorsOnly{slog.Default().Handler()})
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			return kafka.New(pctx, kcfg)
		},
	})
}

// userHomes is the gateway's Homes hook with peers: a token's home_region
// claim must name a region of the mesh, and is stored as the user's home;
// without a claim the stored home holds, else this region becomes it (the
// region of the user's first connection).
func (s *Server) userHomes(ctx context.Context, user, claim string) (string, error) {
	homes, ok := s.store.(store.UserHomes)
	if !ok {
		return claim, nil
	}
	if claim != "" && !s.fleet.mesh.Known(claim) {
		return "", wire.Errorf(wire.CodeUnauthenticated, "token home_region %q is not a region of this deployment (regions: %s)",
			claim, strings.Join(append([]string{s.cfg.Region}, s.fleet.mesh.Peers()...), ", "))
	}
	key := user + "\x00" + claim
	if h, ok := s.fleet.homeCache.get(key); ok {
		return h, nil
	}
	h, err := s.resolveHome(ctx, homes, user, claim)
	if err == nil {
		s.fleet.homeCache.put(key, h)
	}
	return h, err
}

// resolveHome is userHomes without the cache.
func (s *Server) resolveHome(ctx context.Context, homes store.UserHomes, user, claim string) (string, error) {
	// One read per connection; a write only when the home changes.
	h, err := homes.UserHome(ctx, user)
	switch {
	case err == nil && (claim == "" || claim == h):
		return h, nil
	case err != nil && !errors.Is(err, store.ErrNotFound):
		if claim != "" {
			return claim, nil // the claim is the truth; storing it can wait for the next connection
		}
		slog.Warn("read a user's home region", "user", user, "err", err)
		return "", wire.Errorf(wire.CodeUnavailable, "cannot read the home region of %s; retry later", user)
	case claim != "":
		if _, err := homes.SetUserHome(ctx, user, claim, false); err != nil {
			slog.Warn("store user home", "user", user, "home", claim, "err", err)
		}
		return claim, nil
	}
	h, err = homes.SetUserHome(ctx, user, s.cfg.Region, true)
	if err != nil {
		slog.Warn("store the home region of a first connection", "user", user, "region", s.cfg.Region, "err", err)
		return "", wire.Errorf(wire.CodeUnavailable, "cannot store the home region of %s; retry later", user)
	}
	return h, nil
}

// readPeerFile parses the peers listed in path; a missing file lists none.
func readPeerFile(path string) ([]region.Peer, string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("--peer-region-file: %w", err)
	}
	ps, err := region.ParsePeers(string(b))
	if err != nil {
		return nil, "", fmt.Errorf("--peer-region-file %s: %w", path, err)
	}
	return ps, string(b), nil
}

// watchPeers re-reads the peer file every PeerFileEvery until ctx ends and
// applies a changed list to the mesh (with the --peer-region flags' peers).
// A file that does not parse, or a list the mesh refuses, is logged and the
// mesh keeps its peers.
func (s *Server) watchPeers(ctx context.Context) {
	f := s.fleet
	_, last, _ := readPeerFile(f.fc.PeerFile)
	t := time.NewTicker(PeerFileEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ps, text, err := readPeerFile(f.fc.PeerFile)
		if err != nil {
			slog.Warn("peer region file", "err", err)
			continue
		}
		if text == last {
			continue
		}
		if err := f.mesh.SetPeers(append(slices.Clone(f.fc.Peers), ps...)); err != nil {
			slog.Warn("peer region file: keeping the current peers", "file", f.fc.PeerFile, "err", err)
			continue
		}
		last = text
	}
}

// homeCache remembers resolved homes (user and claim → home) for a while, so
// REST requests and reconnects do not read Cassandra each time. Bounded: when
// full it starts over.
type homeCache struct {
	mu sync.Mutex
	m  map[string]cachedHome
}

type cachedHome struct {
	home string
	at   time.Time
}

const (
	homeCacheMax = 100_000
	homeCacheTTL = 10 * time.Minute
)

func (c *homeCache) get(key string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || time.Since(e.at) > homeCacheTTL {
		return "", false
	}
	return e.home, true
}

func (c *homeCache) put(key, home string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= homeCacheMax {
		c.m = make(map[string]cachedHome)
	}
	c.m[key] = cachedHome{home: home, at: time.Now()}
}

// errorsOnly passes a handler only records at error level and above.
type errorsOnly struct{ slog.Handler }

func (h errorsOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelError && h.Handler.Enabled(ctx, l)
}

func (h errorsOnly) WithAttrs(as []slog.Attr) slog.Handler {
	return errorsOnly{h.Handler.WithAttrs(as)}
}
func (h errorsOnly) WithGroup(name string) slog.Handler { return errorsOnly{h.Handler.WithGroup(name)} }
