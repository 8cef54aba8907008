package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/bus/kafka"
	"github.com/parleychat/parley/runtime/chat"
	"github.com/parleychat/parley/runtime/chat/ingress"
	"github.com/parleychat/parley/runtime/gateway"
	"github.com/parleychat/parley/runtime/presence"
	"github.com/parleychat/parley/runtime/presence/redis"
	"github.com/parleychat/parley/runtime/presence/relay"
	"github.com/parleychat/parley/runtime/push"
	regionmesh "github.com/parleychat/parley/runtime/region"
	"github.com/parleychat/parley/runtime/store/cassandra"
)

// Role is one process kind of the distributed mode (docs/design.md §2).
type Role string

// Roles. RoleAll runs every role in one process: on embedded storage when
// no backend is configured (New), on the real backends otherwise.
const (
	RoleAll      Role = "all"
	RoleGateway  Role = "gateway"
	RoleChat     Role = "chat"
	RolePresence Role = "presence"
	// RolePush runs only the offline-push worker (runtime/push); the other
	// roles run it too when FleetConfig.Push.Webhook is set and they are
	// RoleAll or RoleChat.
	RolePush Role = "push"
)

// ParseRole parses a --role value.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAll, RoleGateway, RoleChat, RolePresence, RolePush:
		return r, nil
	case "":
		return RoleAll, nil
	}
	return "", fmt.Errorf("unknown role %q: want all, gateway, chat, presence or push", s)
}

// MaxRegionID is the largest region id: 3 bits of the Snowflake node id.
const MaxRegionID = 7

// MaxChatOrdinal is the largest chat pod ordinal: 7 bits of the node id.
const MaxChatOrdinal = 127

// DefaultFleetPublishTimeout is the Kafka publish timeout of the distributed
// mode: below the gateway's request timeout (10s), so a send that cannot be
// enqueued while Kafka is down is answered unavailable (safe to retry) rather
// than timeout.
const DefaultFleetPublishTimeout = 4 * time.Second

// FleetConfig configures the distributed mode: which role this process
// plays and where the backends are. The rest (listen address, auth,
// presence timings, limits) comes from Config as in embedded mode.
//
// What each role builds:
//
//	gateway   WebSocket + REST, ingress.Client (requests), chat.Router (typing),
//	          Queries on Cassandra, relay.Reporter (sessions in Redis, events
//	          to the presence topic); reads its deliver partition.
//	chat      chat.Sequencer on the ingress topic (group parley.chat) with
//	          Cassandra and a chat.Router over Redis; push publishing when
//	          Push.Webhook is set.
//	presence  relay.Announcer on the presence topic (group parley.presence):
//	          grace, expiry, offline announcements to every gateway.
//	push      push.Worker on the push topic (group parley.push): webhook.
//	all       everything above in one process.
type FleetConfig struct {
	Role Role
	// Cassandra: Hosts (required for gateway, chat, all), Keyspace, LocalDC.
	Cassandra cassandra.Config
	// Kafka: Brokers (required); SessionTimeout of the consumer groups;
	// PublishTimeout (default DefaultFleetPublishTimeout).
	Kafka kafka.Config
	// Redis: Addr (required except for push), KeyPrefix.
	Redis redis.Config
	// RegionID is this region's id, 0..7 (the top 3 bits of Snowflake node ids).
	RegionID int
	// GatewayID is the gateway's id; its trailing -N is its deliver
	// partition. Default: $POD_NAME, else the host name.
	GatewayID string
	// Member is the consumer-group member id (static membership) of the
	// chat, presence and push roles, stable across restarts: the pod name.
	// Default: $POD_NAME, else the host name.
	Member string
	// NodeID is the chat role's Snowflake node, 0..1023; negative derives it
	// as RegionID<<7 | the ordinal of Member (its trailing -N).
	NodeID int64
	// IngressPartitions and DeliverPartitions, when positive, are checked
	// against the topics `parley migrate` created.
	IngressPartitions, DeliverPartitions int32
	// RouteTimeout bounds a session-registry lookup on the message path
	// (default DefaultRouteTimeout).
	RouteTimeout time.Duration
	// RequestTimeout is the gateway's deadline of a request to the chat
	// role (default 10s): an unanswered send gets timeout, and the
	// sequencer drops a request whose deadline has passed.
	RequestTimeout time.Duration
	// Push configures offline push; no Webhook turns it off.
	Push push.Config
	// Peers are the other regions of a multi-region deployment
	// (docs/multi-region.md). Empty: this region runs alone.
	Peers []regionmesh.Peer
	// PeerFile, when set, lists more peers (regionmesh.ParsePeers) and is
	// re-read every PeerFileEvery: regions join and leave the mesh
	// without a restart. A missing file lists none.
	PeerFile string
}

// PeerFileEvery is how often FleetConfig.PeerFile is re-read. The kubelet
// itself updates a mounted ConfigMap within about a minute.
const PeerFileEvery = 10 * time.Second

// multiRegion reports whether this process is part of a mesh of regions.
func (fc *FleetConfig) multiRegion() bool { return len(fc.Peers) > 0 || fc.PeerFile != "" }

// fleet is the distributed-mode part of a Server.
type fleet struct {
	fc        FleetConfig
	roles     map[Role]bool
	bus       *watchedBus
	reporter  *relay.Reporter
	announce  *relay.Announcer
	pusher    *push.Worker
	publisher *push.Publisher
	mesh      *regionmesh.Mesh   // nil without peers
	homeCache homeCache          // gateway: resolved user homes (regions.go)
	outbox    *regionmesh.Outbox // chat role with peers
	relayIn   *regionmesh.Relay  // chat role with peers
}

func (f *fleet) has(r Role) bool { return f.roles[r] }

// podName is the default of --member and --gateway-id.
func podName() string {
	if n := os.Getenv("POD_NAME"); n != "" {
		return n
	}
	h, _ := os.Hostname()
	return h
}

// ordinal returns the trailing -N of a pod-style name.
func ordinal(name string) (int64, error) {
	n, err := ingress.GatewayPartition(name) // parses the trailing -N of any name
	return int64(n), err
}

// resolve fills fc's defaults for role and checks it.
func (fc *FleetConfig) resolve(cfg Config) (map[Role]bool, error) {
	roles, err := fc.roles()
	if err != nil {
		return nil, err
	}
	errs := fc.checkBackends(roles)
	if fc.Member == "" {
		fc.Member = podName()
	}
	if fc.GatewayID == "" {
		fc.GatewayID = podName()
	}
	errs = append(errs, fc.resolveIdentity(roles)...)
	if fc.multiRegion() && !auth.ValidRegion(cfg.Region) {
		errs = append(errs, fmt.Errorf("--region %q: with --peer-region a region name is 1..63 bytes of a-z0-9- starting with a letter", cfg.Region))
	}
	if fc.RequestTimeout <= 0 {
		fc.RequestTimeout = gateway.DefaultRequestTimeout
	}
	if fc.Kafka.PublishTimeout <= 0 {
		fc.Kafka.PublishTimeout = DefaultFleetPublishTimeout
	}
	if cfg.Region == "" || strings.ContainsAny(cfg.Region, ". /:") {
		errs = append(errs, fmt.Errorf("--region %q must be a non-empty name without dots, slashes, colons or spaces", cfg.Region))
	}
	return roles, errors.Join(errs...)
}

// roles returns the roles this process runs: fc.Role, all of them for
// RoleAll (""), and the push role beside chat when a webhook is set.
func (fc *FleetConfig) roles() (map[Role]bool, error) {
	roles := map[Role]bool{}
	switch fc.Role {
	case RoleAll, "":
		fc.Role = RoleAll
		roles[RoleGateway], roles[RoleChat], roles[RolePresence] = true, true, true
		roles[RolePush] = fc.Push.Webhook != ""
	case RoleChat:
		roles[RoleChat] = true
		roles[RolePush] = fc.Push.Webhook != ""
	case RoleGateway, RolePresence, RolePush:
		roles[fc.Role] = true
	default:
		return nil, fmt.Errorf("unknown role %q", fc.Role)
	}
	return roles, nil
}

// checkBackends says which backend settings roles need and lack.
func (fc *FleetConfig) checkBackends(roles map[Role]bool) []error {
	var errs []error
	need := func(ok bool, msg string) {
		if !ok {
			errs = append(errs, errors.New(msg))
		}
	}
	need(len(fc.Kafka.Brokers) > 0, "--kafka-brokers is required")
	if roles[RoleGateway] || roles[RoleChat] {
		need(len(fc.Cassandra.Hosts) > 0, "--cassandra-hosts is required for the gateway and chat roles")
	}
	if roles[RoleGateway] || roles[RoleChat] || roles[RolePresence] {
		need(fc.Redis.Addr != "", "--redis-addr is required for the gateway, chat and presence roles")
	}
	if roles[RolePush] && fc.Role == RolePush {
		need(fc.Push.Webhook != "", "--push-webhook is required for the push role")
	}
	need(fc.RegionID >= 0 && fc.RegionID <= MaxRegionID, fmt.Sprintf("--region-id must be 0..%d, got %d", MaxRegionID, fc.RegionID))
	return errs
}

// resolveIdentity derives the gateway's deliver partition and the chat
// role's Snowflake node id from the pod names, and checks them.
func (fc *FleetConfig) resolveIdentity(roles map[Role]bool) []error {
	var errs []error
	if roles[RoleGateway] {
		if _, err := ingress.GatewayPartition(fc.GatewayID); err != nil {
			if fc.Role == RoleAll {
				fc.GatewayID = GatewayID // one process: gateway 0
			} else {
				errs = append(errs, fmt.Errorf("--gateway-id: %w (its trailing -N is its deliver partition)", err))
			}
		}
	}
	if !roles[RoleChat] {
		return errs
	}
	if fc.NodeID < 0 {
		n, err := ordinal(fc.Member)
		switch {
		case err != nil && fc.Role == RoleAll:
			n = 0
		case err != nil:
			errs = append(errs, fmt.Errorf("chat node id: set --node-id (or PARLEY_NODE_ID), or give --member a trailing -N ordinal: %w", err))
		case n > MaxChatOrdinal:
			errs = append(errs, fmt.Errorf("chat node id: ordinal %d of member %q is over %d", n, fc.Member, MaxChatOrdinal))
		}
		fc.NodeID = int64(fc.RegionID)<<7 | n
	}
	if fc.multiRegion() && fc.NodeID>>7 != int64(fc.RegionID) {
		// Group ids carry their home region in these bits (chat.GroupRegionID).
		errs = append(errs, fmt.Errorf("--node-id %d: with --peer-region its top bits must be the region id %d (node = region id << 7 | ordinal)", fc.NodeID, fc.RegionID))
	}
	if fc.NodeID > 1023 {
		errs = append(errs, fmt.Errorf("--node-id must be 0..1023, got %d", fc.NodeID))
	}
	return errs
}

// NewFleet builds one process of the distributed mode: it opens the
// backends of fc's roles (Cassandra, Kafka, Redis) and wires the roles on
// them (compose.go). Like New it starts nothing: call Run. It fails when a
// backend does not answer, or when the keyspace or a topic is missing (run
// `parley migrate` first).
func NewFleet(ctx context.Context, cfg Config, fc FleetConfig) (*Server, error) {
	cfg.fillDefaults()
	roles, err := fc.resolve(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s role: %w", fc.Role, err)
	}
	f := &fleet{fc: fc, roles: roles}
	s, reg := newServer(cfg)
	s.fleet = f
	owned := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "parley_chat_partitions_owned", Help: "Ingress partitions this chat process sequences.",
	}, func() float64 {
		if f.bus == nil {
			return 0
		}
		return float64(len(f.bus.Owned(chat.GroupName)))
	})
	reg.MustRegister(owned)

	parts, err := s.openFleetBackends(ctx)
	if err != nil {
		return s.fail(err)
	}
	rs, err := s.fleetRoles(ctx, reg)
	if err != nil {
		return s.fail(err)
	}
	if err := s.wire(ctx, reg, rs); err != nil {
		return s.fail(err)
	}
	region := cfg.Region
	slog.Default().Info("distributed mode", "role", fc.Role, "region", region, "region_id", fc.RegionID, "gateway", fc.GatewayID,
		"member", fc.Member, "node_id", fc.NodeID, "ingress_partitions", parts[ingress.IngressTopic(region)],
		"deliver_partitions", parts[ingress.DeliverTopic(region)])
	return s, nil
}

// openFleetBackends connects to the backends the fleet's roles need — Kafka
// always, Cassandra for the gateway and chat roles, Redis for every role but
// push — and checks that every topic the roles use exists with the
// configured partitions. It returns the partitions per topic.
func (s *Server) openFleetBackends(ctx context.Context) (map[string]int32, error) {
	f, fc, region := s.fleet, s.fleet.fc, s.cfg.Region
	kcfg := fc.Kafka
	kcfg.ClientID = "parley-" + string(fc.Role)
	kcfg.OnRequest = func(api string) { s.Metrics.KafkaRequests.WithLabelValues(api).Inc() }
	kb, err := kafka.New(ctx, kcfg)
	if err != nil {
		return nil, err
	}
	f.bus = newWatchedBus(kb, region)
	s.bus = f.bus

	deliver := ingress.DeliverTopic(region)
	want := map[string]int32{ingress.IngressTopic(region): fc.IngressPartitions, deliver: fc.DeliverPartitions, relay.Topic(region): 0}
	if fc.multiRegion() && f.has(RoleChat) {
		want[ingress.RelayTopic(region)], want[ingress.OutboxTopic(region)] = 0, 0
	}
	if f.has(RolePush) || fc.Push.Webhook != "" {
		want[push.Topic(region)] = 0
	}
	parts := map[string]int32{}
	for name, w := range want {
		n, err := kb.Partitions(name)
		if err != nil {
			return nil, fmt.Errorf("topic %s: %w (run parley migrate --region %s)", name, err, region)
		}
		if w > 0 && n != w {
			return nil, fmt.Errorf("topic %s has %d partitions, not %d as configured", name, n, w)
		}
		parts[name] = n
	}
	if f.has(RoleGateway) {
		p, _ := ingress.GatewayPartition(fc.GatewayID)
		if p >= parts[deliver] {
			return nil, fmt.Errorf("gateway %s: its partition %d is not below the %d partitions of %s (raise --deliver-partitions in parley migrate)",
				fc.GatewayID, p, parts[deliver], deliver)
		}
	}

	if f.has(RoleGateway) || f.has(RoleChat) {
		ccfg := fc.Cassandra
		ccfg.Logger = slog.Default()
		ccfg.OnStatement = func(kind string) { s.Metrics.CassandraStatements.WithLabelValues(kind).Inc() }
		st, err := cassandra.Open(ctx, ccfg)
		if err != nil {
			return nil, err
		}
		s.store = st
	}
	if f.has(RoleGateway) || f.has(RoleChat) || f.has(RolePresence) {
		r, err := redis.New(ctx, fc.Redis)
		if err != nil {
			return nil, err
		}
		s.registry = r
	}
	return parts, nil
}

// fleetRoles decides the roles of the process on the opened backends (the
// shared ones are wired by wire): the router (gateway and chat), the region
// mesh (multi-region), the push publisher, the sequencer's identity with its
// outbox and relay, the gateway's relay.Reporter, the presence announcer and
// the push worker.
func (s *Server) fleetRoles(ctx context.Context, reg *prometheus.Registry) (roleSet, error) {
	f, fc, cfg, region := s.fleet, s.fleet.fc, s.cfg, s.cfg.Region
	deliver := ingress.DeliverTopic(region)
	rs := roleSet{routes: s.fleetRoutes}
	if f.has(RoleGateway) || f.has(RoleChat) {
		rs.router = chat.NewRouter(s.bus, newRouteRegistry(s.registry, fc.RouteTimeout), deliver)
	}
	if fc.multiRegion() && (rs.router != nil || f.has(RolePresence)) {
		var err error
		if f.mesh, err = s.newMesh(ctx, reg, fc); err != nil {
			return roleSet{}, err
		}
		if rs.router != nil {
			rs.router.SetRegions(f.mesh)
		}
	}
	if f.has(RoleChat) && fc.Push.Webhook != "" {
		f.publisher = push.NewPublisher(s.bus, push.Topic(region))
		rs.router.OnOffline(f.publisher.Offline)
		f.publisher.SkipMuted(chat.NewQueries(s.store).Muted)
		if f.mesh != nil {
			// The router sees this region's sessions only: a user online in
			// another region (its relayed presence) is not pushed.
			elsewhere := presence.NewService(s.registry, cfg.Presence, nil)
			elsewhere.SetRemoteRegions(f.mesh.Peers)
			f.publisher.SkipUsers(elsewhere.OnlineElsewhere)
		}
	}
	if f.has(RoleChat) {
		rs.sequencer = s.fleetSequencerRole(rs.router)
	}
	if f.has(RoleGateway) {
		rs.gateway = s.fleetGatewayRole()
	}
	if f.has(RolePresence) {
		acfg := relay.AnnouncerConfig{
			Topic: relay.Topic(region), DeliverTopic: deliver, Member: fc.Member, Presence: cfg.Presence,
		}
		if f.mesh != nil {
			acfg.Relay = f.mesh.RelayBroadcast         // presence changes reach the other regions' gateways
			acfg.Refresh = f.mesh.RelayPresenceRefresh // and are re-told every heartbeat
		}
		f.announce = relay.NewAnnouncer(s.registry, s.bus, acfg)
	}
	if f.has(RolePush) {
		pcfg := fc.Push
		pcfg.Topic, pcfg.Member = push.Topic(region), fc.Member
		var err error
		if f.pusher, err = push.NewWorker(s.bus, pcfg); err != nil {
			return roleSet{}, err
		}
	}
	return rs, nil
}

// fleetSequencerRole is the chat role's identity (node id and member from
// the flags), and with peers its outbox forwarder and relay consumer.
func (s *Server) fleetSequencerRole(router *chat.Router) *sequencerRole {
	f, fc := s.fleet, s.fleet.fc
	r := &sequencerRole{nodeID: fc.NodeID, member: fc.Member}
	if f.mesh != nil {
		r.regions = f.mesh
		f.outbox = regionmesh.NewOutbox(f.mesh, s.bus, router.Reply, fc.Member)
		f.relayIn = regionmesh.NewRelay(f.mesh, s.bus, router, fc.Member)
		f.relayIn.StorePresence(s.registry, s.cfg.Presence)
	}
	return r
}

// fleetGatewayRole is the gateway role's identity and presence: its
// sessions go through a relay.Reporter to the presence role, and with peers
// it resolves users' home regions and reads presence relayed from the other
// regions.
func (s *Server) fleetGatewayRole() *gatewayRole {
	f, fc, cfg := s.fleet, s.fleet.fc, s.cfg
	f.reporter = relay.NewReporter(s.registry, s.bus, relay.Topic(cfg.Region), cfg.Presence)
	g := &gatewayRole{
		id: fc.GatewayID, requestTimeout: fc.RequestTimeout,
		sessions: f.reporter, presence: f.reporter.Reader(),
	}
	if f.mesh != nil {
		g.presence.SetRemoteRegions(f.mesh.Peers)
		g.homes = s.userHomes
	}
	return g
}

// fleetRoutes serves the fleet's own endpoints: the chat role's partitions
// and, in a process without the gateway, its outbox.
func (s *Server) fleetRoutes(mux *http.ServeMux) {
	f, fc, region := s.fleet, s.fleet.fc, s.cfg.Region
	if !f.has(RoleChat) {
		return
	}
	mux.HandleFunc("GET /v1/chat/partitions", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"member": fc.Member, "node_id": fc.NodeID, "topic": ingress.IngressTopic(region),
			"partitions": f.bus.Owned(chat.GroupName),
		})
	})
	if !f.has(RoleGateway) {
		var pending func(context.Context) (int64, error)
		if f.outbox != nil {
			pending = f.outbox.Pending
		}
		s.admin.registerOutbox(mux, region, pending)
	}
}

// Role returns the role this server plays (RoleAll in embedded mode).
func (s *Server) Role() Role {
	if s.fleet == nil {
		return RoleAll
	}
	return s.fleet.fc.Role
}

// runFleet is Run in the distributed mode: it starts the roles, becomes
// ready once the consumer groups are joined and the deliver partition is
// subscribed, serves until ctx ends, then drains the gateway, stops the
// roles (the chat and presence roles hand their partitions over by leaving
// their groups) and closes the backends.
func (s *Server) runFleet(ctx context.Context, ln net.Listener) error {
	f := s.fleet
	c := newComponents()
	var waits []<-chan struct{}
	if s.seq != nil {
		c.start("sequencer", s.seq.Run)
		waits = append(waits, s.seq.Joined())
	}
	if f.mesh != nil {
		c.start("region mesh", func(ctx context.Context) error { f.mesh.Run(ctx); return nil })
		if f.fc.PeerFile != "" {
			c.start("peer region file", func(ctx context.Context) error { s.watchPeers(ctx); return nil })
		}
	}
	if f.outbox != nil {
		c.start("outbox", f.outbox.Run)
		c.start("relay", f.relayIn.Run)
		waits = append(waits, f.outbox.Joined(), f.relayIn.Joined())
	}
	if f.announce != nil {
		c.start("presence announcer", f.announce.Run)
		waits = append(waits, f.announce.Joined())
	}
	if f.publisher != nil {
		c.start("push publisher", func(ctx context.Context) error { f.publisher.Run(ctx); return nil })
	}
	if f.pusher != nil {
		c.start("push worker", f.pusher.Run)
		waits = append(waits, f.pusher.Joined())
	}
	if s.gateway != nil {
		c.start("gateway", s.gateway.Run)
		c.start("chat client", func(ctx context.Context) error { s.chat.Run(ctx); return nil })
		c.start("presence reporter", func(ctx context.Context) error { f.reporter.Run(ctx); return nil })
		// Replies published before the subscription has its start offset
		// would be missed: serve only after it.
		waits = append(waits, f.bus.subscribed)
	}
	hs := s.serveHTTP(ln, c)

	var runErr error
	ready := true
	for _, w := range waits {
		select {
		case <-w:
		case <-ctx.Done():
			ready = false
		case runErr = <-c.errc:
			ready = false
		}
		if !ready {
			break
		}
	}
	if ready {
		close(s.ready)
		slog.Info("ready", "role", f.fc.Role)
		select {
		case <-ctx.Done():
		case runErr = <-c.errc:
		}
	}
	return s.shutdown(hs, c, runErr)
}
