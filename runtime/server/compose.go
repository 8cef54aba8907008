package server

// The composition root (docs/design.md §1, issue 15 item 1). Both modes build
// a Server in the same three steps, and only the first two differ:
//
//  1. Choose the backends (the backends struct). Embedded mode opens Pebble,
//     the memory bus and the memory registry (openEmbeddedBackends); a fleet
//     process opens Kafka, and Cassandra and Redis when its roles need them
//     (openFleetBackends).
//  2. Decide the roles on them (a roleSet). Embedded mode runs every role:
//     one sequencer, node 0, and the presence service in process, which
//     pushes changes straight to the gateway (embeddedRoles). A fleet process
//     runs the roles its flags choose: its gateway reports sessions through
//     a relay.Reporter to the presence role, and with peers it joins the
//     region mesh (fleetRoles, which also builds the fleet-only parts: the
//     announcer, the push publisher and worker, the outbox and relay).
//  3. Wire what both modes share, once (wire): the sequencer's config from
//     the server's, the gateway with its verifier, ingress client, queries,
//     limits, media and REST API, and the HTTP mux with health, readiness,
//     metrics and the admin endpoints.
//
// The differences stay in the first two steps, where a reader sees each
// mode's choices together; everything after them is one path, so the two
// modes cannot drift apart again (they had: issue 15).

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/chat"
	"github.com/parleychat/parley/runtime/chat/ingress"
	"github.com/parleychat/parley/runtime/gateway"
	"github.com/parleychat/parley/runtime/httpapi"
	"github.com/parleychat/parley/runtime/limits"
	"github.com/parleychat/parley/runtime/media"
	"github.com/parleychat/parley/runtime/metrics"
	"github.com/parleychat/parley/runtime/presence"
	"github.com/parleychat/parley/runtime/presence/redis"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/web"
)

// backends are the store, bus and session registry a mode chose. A fleet
// process opens only those its roles need: a nil field is a backend it does
// not use. closeAll closes them.
type backends struct {
	store    store.MessageStore
	bus      bus.Bus
	registry presence.Registry
}

// roleSet is what a mode decided to run on its backends; wire builds each
// role that is set the same way in both modes.
type roleSet struct {
	// router routes deliveries to the gateways that hold a user's sessions;
	// nil without the gateway and chat roles.
	router *chat.Router
	// sequencer, when set, is the chat role.
	sequencer *sequencerRole
	// gateway, when set, is the gateway role.
	gateway *gatewayRole
	// routes, when set, adds the mode's own endpoints (the fleet's chat
	// role: its partitions and outbox).
	routes func(mux *http.ServeMux)
}

// sequencerRole is a mode's choice for the chat role; the rest of the
// sequencer's config comes from the server's (sequencerConfig).
type sequencerRole struct {
	// nodeID is the Snowflake node: 0 in embedded mode, RegionID<<7 |
	// ordinal in a fleet.
	nodeID int64
	// member is the consumer-group member id of the ingress topic's group.
	member string
	// regions is the region mesh; nil in a region that runs alone.
	regions chat.Regions
}

// gatewayRole is a mode's choice for the gateway role; wireGateway builds
// the rest.
type gatewayRole struct {
	// id is the gateway's id; its trailing -N is its deliver partition.
	id string
	// requestTimeout is the deadline of a request to the chat role.
	requestTimeout time.Duration
	// sessions is where the gateway registers its sessions: the in-process
	// presence.Service (embedded) or a relay.Reporter, which tells the
	// presence role through the presence topic (fleet).
	sessions gateway.PresenceService
	// presence answers the REST API's presence reads.
	presence *presence.Service
	// homes, set in a mesh of regions, resolves a user's home region; the
	// ingress client then stamps its requests with this region, so a
	// forwarded request is answered here.
	homes func(ctx context.Context, user, claim string) (string, error)
}

// newServer is a Server of cfg (defaults filled in) with its metrics, before
// any backend is chosen.
func newServer(cfg Config) (*Server, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	return &Server{cfg: cfg, ready: make(chan struct{}), Metrics: metrics.New(reg)}, reg
}

// fail closes what s has opened and returns err: the error to report.
func (s *Server) fail(err error) (*Server, error) {
	_ = s.closeAll()
	return nil, err
}

// wire builds the roles of r on s's backends, and the HTTP mux: the
// gateway's WebSocket, REST API and admin endpoints when r has a gateway
// (the runtime profiles alone otherwise), the mode's own routes, health,
// readiness and metrics.
func (s *Server) wire(ctx context.Context, reg *prometheus.Registry, r roleSet) error {
	if r.sequencer != nil {
		var err error
		if s.seq, err = chat.NewSequencer(s.sequencerConfig(*r.sequencer), s.store, s.bus, r.router); err != nil {
			return fmt.Errorf("sequencer: %w", err)
		}
	}
	mux := http.NewServeMux()
	s.admin = &admin{s: s, token: s.cfg.AdminToken}
	noRoute := fmt.Sprintf(": this process runs the %s role", s.Role())
	if r.gateway != nil {
		if err := s.wireGateway(ctx, mux, r.router, *r.gateway); err != nil {
			return err
		}
		s.admin.register(mux)
		noRoute = ""
	} else {
		s.admin.registerProfiles(mux)
	}
	if r.routes != nil {
		r.routes(mux)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.metricsHandler(reg))
	mux.HandleFunc("/", httpapi.NoRoute(mux, noRoute))
	s.handler = mux
	return nil
}

// sequencerConfig is the chat role's config: r's identity, the rest from
// the server's config.
func (s *Server) sequencerConfig(r sequencerRole) chat.Config {
	cfg := s.cfg
	ccfg := chat.DefaultConfig()
	ccfg.Region = cfg.Region
	ccfg.NodeID = r.nodeID
	ccfg.IngressTopic, ccfg.DeliverTopic = ingress.IngressTopic(cfg.Region), ingress.DeliverTopic(cfg.Region)
	ccfg.Member = r.member
	ccfg.MaxGroupMembers = cfg.MaxGroupMembers
	ccfg.MaxMessageBytes = cfg.MaxMessageBytes
	ccfg.EditWindow = cfg.EditWindow
	ccfg.Metrics = s.Metrics
	ccfg.Regions = r.regions
	return ccfg
}

// wireGateway builds the gateway role: its verifier, ingress client,
// queries, limits and media, the gateway itself, and its WebSocket, REST
// and web client endpoints on mux.
func (s *Server) wireGateway(ctx context.Context, mux *http.ServeMux, router *chat.Router, g gatewayRole) error {
	cfg := s.cfg
	verifier, err := s.newVerifier(ctx)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir %s: %w", cfg.DataDir, err)
	}
	queries := chat.NewQueries(s.store)
	s.chat = ingress.NewClient(s.bus, g.id, ingress.IngressTopic(cfg.Region))
	queries.NotifyBlocksTo(s.chat)
	s.chat.ObserveWith(s.Metrics)
	if g.homes != nil {
		s.chat.SetRegion(cfg.Region)
	}
	s.presence = g.presence

	// Media: an S3-compatible service (shared by a fleet's gateways); without
	// one, the gateway serves its own embedded store (one gateway only).
	mediaSvc, err := s.openMedia(cfg)
	if err != nil {
		return err
	}
	sendLimits, readLimits := s.userLimits()
	gcfg := cfg.gatewayConfig(g.id, g.requestTimeout, s.bus, ingress.DeliverTopic(cfg.Region), sendLimits, readLimits, mediaSvc)
	gcfg.Homes = g.homes
	s.gateway = gateway.New(gcfg, gateway.Deps{Verifier: verifier, Ingress: s.chat, Queries: queries, Router: router, Presence: g.sessions, Metrics: s.Metrics})
	api := &httpapi.API{
		Verifier: verifier, Chat: s.chat, Queries: queries, Presence: s.presence,
		Limits: sendLimits, ReadLimits: readLimits, Metrics: s.Metrics, GatewayID: g.id,
		RequestTimeout: gcfg.RequestTimeout, MaxMessageBytes: cfg.MaxMessageBytes,
		Media: mediaSvc, DevIssuer: s.DevIssuer, PresencePublic: cfg.PresencePublic, Homes: g.homes,
	}
	api.Register(mux)
	if s.mediaStore != nil {
		mux.Handle(media.EmbeddedPath+"/", s.mediaStore)
	}
	web.New(web.Config{DevSignIn: s.DevIssuer != nil, MediaTypes: mediaSvc.AllowedTypes(), MediaMaxBytes: mediaSvc.MaxBytes()}).Register(mux)
	mux.Handle("GET /v1/ws", s.gateway)
	return nil
}

// newVerifier is the gateway's token verifier: JWKS when Config.JWKS names
// a file or URL, else dev mode (HS256 with the secret in the data dir, and
// s.DevIssuer to sign tokens with it).
func (s *Server) newVerifier(ctx context.Context) (auth.Verifier, error) {
	cfg := s.cfg
	if cfg.JWKS.File != "" || cfg.JWKS.URL != "" {
		v, err := auth.NewJWKSVerifier(ctx, cfg.JWKS)
		if err != nil {
			return nil, fmt.Errorf("jwks auth: %w", err)
		}
		return v, nil
	}
	// Dev mode: every gateway of a fleet must share the secret, so they
	// share a data dir (or its dev-secret file).
	secret, err := auth.LoadOrCreateDevSecret(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("dev secret: %w", err)
	}
	s.DevIssuer = auth.NewDevIssuer(secret)
	return auth.NewHMACVerifier(secret), nil
}

// openMedia opens the embedded media store, or checks the external S3
// settings, and returns the media service.
func (s *Server) openMedia(cfg Config) (*media.Service, error) {
	mcfg := cfg.Media
	if mcfg.Endpoint == "" && mcfg.Bucket == "" {
		st, err := media.OpenEmbedded(filepath.Join(cfg.DataDir, "media"), "")
		if err != nil {
			return nil, err
		}
		s.mediaStore = st
		mcfg = st.Config(mcfg)
	} else if mcfg.Credentials == nil {
		creds, err := media.EnvCredentials()
		if err != nil {
			return nil, err
		}
		mcfg.Credentials = creds
	}
	svc, err := media.New(mcfg)
	if err != nil {
		return nil, err
	}
	return svc, nil
}

// userLimits are the gateway's per-user send and read budgets (read nil
// when disabled). On a Redis registry (the fleet) they are kept in the
// region's Redis (limits.Shared), so a user's budget holds across every
// gateway (issue 14), under "<key prefix>limits:send:" and "...read:";
// otherwise (embedded mode) they are per process.
func (s *Server) userLimits() (send, read limits.Limiter) {
	cfg := s.cfg
	reg, ok := s.registry.(*redis.Registry)
	if !ok {
		return limits.NewUsers(cfg.SendRate, cfg.SendBurst), cfg.readLimits()
	}
	send = limits.NewShared(reg.Client(), reg.Prefix()+"limits:send:", cfg.SendRate, cfg.SendBurst)
	if cfg.ReadRate >= 0 {
		read = limits.NewShared(reg.Client(), reg.Prefix()+"limits:read:", cfg.ReadRate, cfg.ReadBurst)
	}
	return send, read
}

// readyz answers 200 once Run has started the roles (in a fleet: joined its
// consumer groups and subscribed its deliver partition), 503 before and
// while the gateway drains.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	select {
	case <-s.ready:
	default:
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("starting\n"))
		return
	}
	if s.gateway != nil && s.gateway.Draining() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("draining\n"))
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

// metricsHandler serves reg's collectors, behind the admin token (s.admin,
// set by wire before it) when Config.MetricsPrivate is set.
func (s *Server) metricsHandler(reg *prometheus.Registry) http.Handler {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	if !s.cfg.MetricsPrivate {
		return h
	}
	return s.admin.authed(h.ServeHTTP)
}
