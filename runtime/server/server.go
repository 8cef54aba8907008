// Package server wires Parley's roles into one process: in embedded mode
// (the default) the gateway, chat and presence roles share a Pebble store, the
// in-memory partitioned bus and the in-memory presence registry, through the
// same interfaces the distributed fleets use. Both modes choose their
// backends, then go through one wiring path (compose.go).
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/bus"
	busmemory "github.com/parleychat/parley/runtime/bus/memory"
	"github.com/parleychat/parley/runtime/chat"
	"github.com/parleychat/parley/runtime/chat/ingress"
	"github.com/parleychat/parley/runtime/gateway"
	"github.com/parleychat/parley/runtime/limits"
	"github.com/parleychat/parley/runtime/media"
	"github.com/parleychat/parley/runtime/metrics"
	"github.com/parleychat/parley/runtime/presence"
	presencememory "github.com/parleychat/parley/runtime/presence/memory"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store/pebble"
	"github.com/parleychat/parley/runtime/wire"
)

// Config configures an embedded server. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	// Addr is the listen address, default ":8080".
	Addr string
	// DataDir holds the Pebble store and the dev signing secret, default "./parley-data".
	DataDir string
	// Region names the region in topic names, default "local".
	Region string
	// IngressPartitions is the ingress topic's partition count, default 16.
	IngressPartitions int32
	// JWKS, when File or URL is set, switches auth from dev mode (HS256 with
	// the generated secret) to production verification.
	JWKS auth.JWKSConfig
	// Presence holds heartbeat, TTL and grace (defaults 30s, 75s, 5s).
	Presence presence.Config
	// MaxGroupMembers caps a group, default 500.
	MaxGroupMembers int
	// MaxMessageBytes caps message text in bytes, default 4096.
	MaxMessageBytes int
	// EditWindow is how long after sending a sender may edit or delete a
	// message, default 48h (chat.Config.EditWindow).
	EditWindow time.Duration
	// SendRate and SendBurst are the per-user token bucket, default 20/s and 40.
	SendRate  float64
	SendBurst int
	// ReadRate and ReadBurst are the per-user token bucket of reads (sync,
	// history, inbox, receipts), default 20/s and 100; a negative ReadRate
	// disables it (issue 14: 20 connections made 1,840 history requests a
	// second).
	ReadRate  float64
	ReadBurst int
	// SendQueue bounds each connection's queue of outgoing frames, default 256.
	SendQueue int
	// DrainWindow spreads reconnects over this window on shutdown, default 5s.
	DrainWindow time.Duration
	// Media configures image uploads. With no Endpoint and no Bucket, Parley
	// serves an embedded S3-compatible store from DataDir/media at /s3/;
	// otherwise it uses that S3-compatible service (Credentials required).
	Media media.Config
	// AdminToken guards /v1/admin/* (drain, connections); empty disables them.
	AdminToken string
	// MaxConnections caps the gateway's open sessions; 0 means no cap.
	MaxConnections int
	// HTTPReadTimeout bounds reading one HTTP request, body included
	// (default 2m: a 10 MiB upload at 1 Mbit/s takes 80 s); a client that
	// declares a body and stalls is cut off after it. WebSocket connections
	// clear it on upgrade and live by their heartbeats.
	HTTPReadTimeout time.Duration
	// HTTPWriteTimeout bounds writing one HTTP response, from the request's
	// start (default 2m; WebSocket upgrades are exempt): a client that asks
	// for a large answer and stops reading cannot hold the connection and
	// its handler forever.
	HTTPWriteTimeout time.Duration
	// HTTPIdleTimeout closes a keep-alive connection idle between requests
	// for this long (default 90s).
	HTTPIdleTimeout time.Duration
	// TypingInterval is the least time between two typing fan-outs of one
	// user in one conversation (default 1s; gateway.Config.TypingInterval).
	TypingInterval time.Duration
	// MaxSessionsPerUser caps one user's live WebSocket sessions (default
	// 16; negative: no cap); past it the newest connection is refused with
	// too_many_sessions (gateway.Config.MaxSessionsPerUser).
	MaxSessionsPerUser int
	// MetricsPrivate puts /metrics behind the admin token (Authorization:
	// Bearer, as /debug/pprof); by default it is open to anyone who reaches
	// the port (issue 14).
	MetricsPrivate bool
	// AllowedOrigins, when set, are the only browser origins
	// ("https://chat.example.com") besides the server's own that may open a
	// WebSocket (gateway.Config.AllowedOrigins).
	AllowedOrigins []string
	// PresencePublic lets every user read and subscribe to every user's
	// presence. By default only users who share a conversation see each
	// other's (chat.Queries.PresenceVisible); others read "unknown".
	PresencePublic bool
}

// DefaultConfig returns the embedded defaults.
func DefaultConfig() Config {
	return Config{
		Addr:               ":8080",
		DataDir:            "./parley-data",
		Region:             "local",
		IngressPartitions:  16,
		Presence:           presence.DefaultConfig(),
		MaxGroupMembers:    chat.DefaultMaxGroupMembers,
		MaxMessageBytes:    wire.DefaultMaxMessageBytes,
		EditWindow:         chat.DefaultEditWindow,
		SendRate:           limits.DefaultRate,
		SendBurst:          limits.DefaultBurst,
		SendQueue:          gateway.DefaultSendQueue,
		ReadRate:           limits.DefaultReadRate,
		ReadBurst:          limits.DefaultReadBurst,
		DrainWindow:        5 * time.Second,
		HTTPReadTimeout:    2 * time.Minute,
		MaxSessionsPerUser: 16,
		TypingInterval:     gateway.DefaultTypingInterval,
		HTTPIdleTimeout:    90 * time.Second,
		HTTPWriteTimeout:   2 * time.Minute,
	}
}

func (c *Config) fillDefaults() {
	d := DefaultConfig()
	if c.Addr == "" {
		c.Addr = d.Addr
	}
	if c.DataDir == "" {
		c.DataDir = d.DataDir
	}
	if c.Region == "" {
		c.Region = d.Region
	}
	if c.IngressPartitions <= 0 {
		c.IngressPartitions = d.IngressPartitions
	}
	if c.Presence.Heartbeat <= 0 {
		c.Presence.Heartbeat = d.Presence.Heartbeat
	}
	if c.Presence.TTL <= 0 {
		c.Presence.TTL = d.Presence.TTL
	}
	if c.Presence.Grace <= 0 {
		c.Presence.Grace = d.Presence.Grace
	}
	if c.MaxGroupMembers <= 0 {
		c.MaxGroupMembers = d.MaxGroupMembers
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = d.MaxMessageBytes
	}
	if c.ReadRate == 0 {
		c.ReadRate = d.ReadRate
	}
	if c.ReadBurst <= 0 {
		c.ReadBurst = d.ReadBurst
	}
	if c.MaxSessionsPerUser == 0 {
		c.MaxSessionsPerUser = d.MaxSessionsPerUser
	}
	if c.HTTPReadTimeout <= 0 {
		c.HTTPReadTimeout = d.HTTPReadTimeout
	}
	if c.HTTPWriteTimeout <= 0 {
		c.HTTPWriteTimeout = d.HTTPWriteTimeout
	}
	if c.HTTPIdleTimeout <= 0 {
		c.HTTPIdleTimeout = d.HTTPIdleTimeout
	}
	if c.SendRate == 0 {
		c.SendRate = d.SendRate
	}
	if c.SendBurst <= 0 {
		c.SendBurst = d.SendBurst
	}
	if c.SendQueue <= 0 {
		c.SendQueue = d.SendQueue
	}
	if c.DrainWindow <= 0 {
		c.DrainWindow = d.DrainWindow
	}
}

// Server is one Parley process: embedded (New) or one process of a fleet
// (NewFleet).
type Server struct {
	cfg       Config
	DevIssuer *auth.DevIssuer // nil when auth is not in dev mode
	Metrics   *metrics.Metrics

	backends // chosen by the mode: openEmbeddedBackends, openFleetBackends
	presence *presence.Service
	chat     *ingress.Client
	seq      *chat.Sequencer
	gateway  *gateway.Gateway
	handler  http.Handler

	mediaStore *media.Embedded // nil with an external S3 service

	admin    *admin
	fleet    *fleet // distributed mode only (roles.go)
	ready    chan struct{}
	stopOnce sync.Once
}

// GatewayID is the embedded gateway's id: ordinal 0, deliver partition 0.
const GatewayID = "gateway-0"

// New builds an embedded server: it opens the embedded backends and wires
// every role on them (compose.go). It starts nothing: call Run.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg.fillDefaults()
	s, reg := newServer(cfg)
	if err := s.openEmbeddedBackends(ctx); err != nil {
		return s.fail(err)
	}
	if err := s.wire(ctx, reg, s.embeddedRoles()); err != nil {
		return s.fail(err)
	}
	return s, nil
}

// openEmbeddedBackends opens embedded mode's backends: Pebble in
// DataDir/store, the in-memory bus with the ingress and deliver topics, and
// the in-memory presence registry.
func (s *Server) openEmbeddedBackends(ctx context.Context) error {
	cfg := s.cfg
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w", cfg.DataDir, err)
	}
	st, err := pebble.Open(filepath.Join(cfg.DataDir, "store"))
	if err != nil {
		return fmt.Errorf("open store in %s: %w", cfg.DataDir, err)
	}
	s.store = st
	s.bus = busmemory.New()
	topics := []bus.Topic{{Name: ingress.IngressTopic(cfg.Region), Partitions: cfg.IngressPartitions}, {Name: ingress.DeliverTopic(cfg.Region), Partitions: 1}}
	for _, t := range topics {
		if err := s.bus.CreateTopic(ctx, t); err != nil {
			return fmt.Errorf("create topic %s: %w", t.Name, err)
		}
	}
	s.registry = presencememory.New()
	return nil
}

// embeddedRoles are embedded mode's roles, all of them in this process: the
// one sequencer, node 0 (docs/design.md §1), and the gateway GatewayID,
// whose sessions the in-process presence service tracks.
func (s *Server) embeddedRoles() roleSet {
	// The presence service pushes its changes to the gateway, which wire
	// creates after it; the indirection breaks the cycle. Run starts the
	// service, after New has set s.gateway.
	s.presence = presence.NewService(s.registry, s.cfg.Presence, func(p *parleyv1.Presence) {
		if s.gateway != nil {
			s.gateway.PresenceChanged(p)
		}
	})
	return roleSet{
		router:    chat.NewRouter(s.bus, s.registry, ingress.DeliverTopic(s.cfg.Region)),
		sequencer: &sequencerRole{nodeID: 0, member: "chat-0"},
		gateway: &gatewayRole{
			id: GatewayID, requestTimeout: ingress.DefaultRequestTimeout,
			sessions: s.presence, presence: s.presence,
		},
	}
}

// Config returns the effective configuration (defaults filled in).
func (s *Server) Config() Config { return s.cfg }

// Run serves on ln until ctx ends, then shuts down gracefully: /readyz goes
// false, clients get reconnect frames spread over DrainWindow, connections
// close, the sequencer leaves (flushing receipts) and the store is closed.
// Every message that got send_ok was synced before, so none is lost.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	if s.fleet != nil {
		return s.runFleet(ctx, ln)
	}
	c := newComponents()
	c.start("sequencer", s.seq.Run)
	// Serve only once the sequencer owns the ingress partitions: the
	// embedded bus keeps nothing for a consumer group that has not joined.
	select {
	case <-s.seq.Joined():
	case err := <-c.errc:
		return s.shutdown(nil, c, err)
	}
	c.start("gateway", s.gateway.Run)
	c.start("chat client", func(ctx context.Context) error { s.chat.Run(ctx); return nil })
	c.start("presence", func(ctx context.Context) error { s.presence.Run(ctx); return nil })
	hs := s.serveHTTP(ln, c)
	close(s.ready)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-c.errc:
	}
	return s.shutdown(hs, c, runErr)
}

// closeAll releases the bus, registry and store (store last: it is flushed).
func (s *Server) closeAll() error {
	var errs []error
	s.stopOnce.Do(func() {
		if s.fleet != nil && s.fleet.mesh != nil {
			errs = append(errs, s.fleet.mesh.Close())
		}
		if s.bus != nil {
			errs = append(errs, s.bus.Close())
		}
		if s.registry != nil {
			errs = append(errs, s.registry.Close())
		}
		if s.mediaStore != nil {
			errs = append(errs, s.mediaStore.Close())
		}
		if s.store != nil {
			if err := s.store.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close store: %w", err))
			}
		}
	})
	return errors.Join(errs...)
}

// gatewayConfig is the gateway's configuration from the server's, shared by
// the embedded server and the gateway role of the distributed mode.
func (c Config) gatewayConfig(id string, requestTimeout time.Duration, b bus.Bus, deliverTopic string,
	userLimits, readLimits limits.Limiter, mediaSvc *media.Service) gateway.Config {
	return gateway.Config{
		ID:                 id,
		Heartbeat:          c.Presence.Heartbeat,
		SendQueue:          c.SendQueue,
		MaxPresenceSubs:    gateway.DefaultMaxPresenceSubs,
		PresencePublic:     c.PresencePublic,
		MaxSessionsPerUser: max(c.MaxSessionsPerUser, 0),
		TypingInterval:     c.TypingInterval,
		AllowedOrigins:     c.AllowedOrigins,
		SendRate:           c.SendRate,
		SendBurst:          c.SendBurst,
		Limits:             userLimits,
		ReadLimits:         readLimits,
		MaxConnections:     c.MaxConnections,
		MaxMessageBytes:    c.MaxMessageBytes,
		RequestTimeout:     requestTimeout,
		Bus:                b,
		DeliverTopic:       deliverTopic,
		Media:              mediaSvc,
	}
}

// readLimits is the per-user read budget of cfg, nil when disabled.
func (c Config) readLimits() limits.Limiter {
	if c.ReadRate < 0 {
		return nil
	}
	return limits.NewUsers(c.ReadRate, c.ReadBurst)
}
