package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	return region.NewMesh(region.Config{
		Local: s.cfg.Region, LocalID: fc.RegionID, Own: s.bus, Peers: fc.Peers,
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
		return "", wire.Errorf(wire.CodeUnauthenticated, "token home_region %q is not a region of this deployment (regions: %s and %v)",
			claim, s.cfg.Region, s.fleet.mesh.Peers())
	}
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
