// Package gateway owns client connections: the WebSocket endpoint /v1/ws,
// one session per connection, heartbeats, token expiry, backpressure, fan-out
// of deliveries to local sessions, and draining (docs/design.md §2; costs in
// docs/benchmarks.md).
//
// Cost model, because a gateway holds tens of thousands of mostly idle
// sockets: an idle connection has no goroutine at all. Its reader is started
// by the upgrade handler, which then returns so that net/http's per-request
// buffers are freed; between bursts of frames the transport parks the socket
// in the process's epoll set and ends the reader, and the next bytes start a
// fresh one. A writer goroutine exists only while a session has frames
// queued. One shared ticker (Run) drives idle timeouts, token
// expiry and presence heartbeats for every session; there is no timer per
// connection. gorilla's read buffer is its minimum (125 bytes, a control
// frame's payload), the transport reads ahead into a pooled 512-byte buffer
// only while a frame is being read, and write buffers come from a pool.
// A delivery is encoded once per subprotocol and the same prepared frame is
// written to every recipient. The socket itself (the parked read path, the
// writev of prepared frames) is
// package transport's; a session sees only messages and a small interface.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/chat/ingress"
	"github.com/parleychat/parley/runtime/gateway/transport"
	"github.com/parleychat/parley/runtime/limits"
	"github.com/parleychat/parley/runtime/metrics"
	"github.com/parleychat/parley/runtime/presence"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

// Path is the WebSocket endpoint a Gateway serves.
const Path = "/v1/ws"

// Defaults for Config's zero fields.
const (
	DefaultID              = "gateway-0"
	DefaultHeartbeat       = 30 * time.Second
	DefaultSendQueue       = 256
	DefaultSendQueueBytes  = 4 << 20
	DefaultMaxPresenceSubs = 100
	DefaultRequestTimeout  = ingress.DefaultRequestTimeout
	DefaultWriteTimeout    = 10 * time.Second
	// DefaultTypingInterval is Config.TypingInterval's default.
	DefaultTypingInterval = time.Second
)

// IdleFactor times Config.Heartbeat is how long a session may stay silent
// (no frame, ping or pong read) before it is closed with
// wire.CloseHeartbeatTimeout: two missed pings and some slack.
const IdleFactor = 2.5

// MaxInvalidFrames is how many undecodable or mistyped frames in a row a
// session may send (each answered with an invalid error) before it is closed
// with wire.ClosePolicyViolation.
const MaxInvalidFrames = 10

// originAllowed is the upgrader's origin check (Config.AllowedOrigins).
func (g *Gateway) originAllowed(r *http.Request) bool {
	if len(g.cfg.AllowedOrigins) == 0 {
		return true
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err == nil && strings.EqualFold(u.Host, r.Host) {
		return true // the server's own pages
	}
	for _, o := range g.cfg.AllowedOrigins {
		if strings.EqualFold(strings.TrimRight(o, "/"), origin) {
			return true
		}
	}
	return false
}

// sessionCountTimeout bounds the registry lookup of a connecting user's
// sessions (Config.MaxSessionsPerUser); a slower registry lets it in.
const sessionCountTimeout = 300 * time.Millisecond

// Config configures a Gateway. Zero fields take the defaults.
type Config struct {
	// ID names the gateway; it ends in "-N" where N is its partition of the
	// deliver topic (default "gateway-0").
	ID string
	// Heartbeat is the client ping interval announced in Welcome and the
	// interval of presence heartbeats per session (default 30s). A session
	// that sends nothing for IdleFactor×Heartbeat is closed.
	Heartbeat time.Duration
	// SendQueue bounds the frames queued for one connection (default 256).
	// Typing and presence frames are dropped first when it is full; a
	// session whose messages still overflow it is closed with
	// wire.CloseSlowConsumer and catches up by sync.
	SendQueue int
	// SendQueueBytes bounds the encoded bytes queued for one connection
	// (default 4 MiB), with the same policy as SendQueue: a frame count
	// alone lets a client that asks for large replies (history pages of
	// big messages) and never reads them pin gigabytes. One frame larger
	// than the bound is still queued when the queue is empty.
	SendQueueBytes int
	// AllowedOrigins, when not empty, limits browser WebSocket upgrades to
	// these origins ("https://chat.example.com", compared without regard
	// to case) and the server's own; requests without an Origin header
	// (non-browser clients) are not affected. Others get 403.
	AllowedOrigins []string
	// ReadLimits, when set, is the per-user budget of sync and history
	// requests (one token each; REST's inbox, history and receipts share
	// it). Over it a request is answered rate_limited (issue 14).
	ReadLimits limits.Limiter
	// TypingInterval is the least time between two typing fan-outs of one
	// user in one conversation, from any of its sessions on this gateway
	// (default DefaultTypingInterval; typing frames in between are dropped
	// silently). A typing frame reaches up to 500 members, so a client must
	// not be able to flood them (issue 14).
	TypingInterval time.Duration
	// MaxSessionsPerUser caps one user's live WebSocket sessions over the
	// region (the session registry's count; 0: no cap). Past it the newest
	// connection is refused with too_many_sessions (HTTP 429) and the older
	// ones are kept: a stolen token cannot push its owner's devices off.
	// Checked before the upgrade, so concurrent connects of one user may
	// overshoot by those in flight; a registry that fails lets connects in.
	MaxSessionsPerUser int
	// Homes, when set (multi-region), resolves a connecting user's home
	// region from the token's home_region claim (claim, "" when absent):
	// it returns the home their requests carry, or an error that refuses
	// the connection (an unknown region). Nil: no home regions.
	Homes func(ctx context.Context, user, claim string) (string, error)
	// MaxPresenceSubs caps the users one connection may subscribe to with
	// presence_sub (default 100).
	MaxPresenceSubs int
	// PresencePublic lets a connection subscribe to anyone's presence; by
	// default only to users who share a conversation with its user (the
	// others are answered once with status unknown and not subscribed).
	PresencePublic bool
	// SendRate and SendBurst are the per-user send token bucket, sends per
	// second and bucket size (defaults limits.DefaultRate and
	// limits.DefaultBurst). A negative SendRate disables the limit.
	SendRate  float64
	SendBurst int
	// Limits, when set, is the per-user bucket to use instead of one built
	// from SendRate and SendBurst, so the REST API and the gateway of one
	// process share a user's budget (in the distributed mode a
	// limits.Shared: every gateway of the region shares it).
	Limits limits.Limiter
	// MaxMessageBytes caps a message's text, bytes of UTF-8 (default
	// wire.DefaultMaxMessageBytes); larger sends get too_large.
	MaxMessageBytes int
	// RequestTimeout bounds requests to the chat role and read queries
	// (default 10s); an unanswered send gets timeout.
	RequestTimeout time.Duration
	// WriteTimeout is the write deadline of every frame (default 10s). A
	// write that misses it ends the connection.
	WriteTimeout time.Duration
	// MaxConnections caps this gateway's open sessions (0: no cap, only
	// the open-file limit). Past it an upgrade gets 503 unavailable with
	// Retry-After, so clients go to another gateway instead of pushing the
	// process past its file or memory limits (ChatCluster
	// gateway.maxConnections).
	MaxConnections int

	// Bus and DeliverTopic are where Run reads this gateway's partition
	// (ingress.GatewayPartition(ID)) of the deliver topic (default
	// ingress.DeliverTopic(ingress.DefaultRegion)). Run fails without a Bus.
	Bus          bus.Bus
	DeliverTopic string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Media checks a media send before it enters the send pipeline (the
	// sender uploaded the object; see media.Service.Check); nil refuses
	// media sends.
	Media MediaChecker
}

// MediaChecker vouches for the media of a send: it returns the media as
// stored, or a *wire.Error saying why userID may not send it.
type MediaChecker interface {
	Check(ctx context.Context, userID string, m *parleyv1.Media) (*parleyv1.Media, error)
}

func (c Config) withDefaults() Config {
	if c.ID == "" {
		c.ID = DefaultID
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.SendQueue <= 0 {
		c.SendQueue = DefaultSendQueue
	}
	if c.SendQueueBytes <= 0 {
		c.SendQueueBytes = DefaultSendQueueBytes
	}
	if c.MaxPresenceSubs <= 0 {
		c.MaxPresenceSubs = DefaultMaxPresenceSubs
	}
	if c.TypingInterval <= 0 {
		c.TypingInterval = DefaultTypingInterval
	}
	if c.SendRate == 0 {
		c.SendRate = limits.DefaultRate
	}
	if c.SendBurst <= 0 {
		c.SendBurst = limits.DefaultBurst
	}
	if c.Limits == nil {
		c.Limits = limits.NewUsers(c.SendRate, c.SendBurst)
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = wire.DefaultMaxMessageBytes
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.DeliverTopic == "" {
		c.DeliverTopic = ingress.DeliverTopic(ingress.DefaultRegion)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// The gateway's view of its collaborators, declared where they are consumed
// so the hot paths read as what they need; Deps carries them to New.
type (
	// Ingress publishes requests to the chat role and hands it the replies
	// read from this gateway's deliver partition (*ingress.Client).
	Ingress interface {
		Do(ctx context.Context, rec *parleyv1.IngressRecord, cb func(*parleyv1.Reply))
		Receipt(rec *parleyv1.IngressRecord, cb func(*parleyv1.Reply))
		HandleReply(rep *parleyv1.Reply)
	}
	// Queries serves the reads a session makes, with their membership
	// checks, and the mute and block settings (*chat.Queries). Errors are
	// *wire.Error values a session forwards to its client.
	Queries interface {
		Sync(ctx context.Context, userID string, s *parleyv1.Sync) (*parleyv1.SyncResult, error)
		History(ctx context.Context, userID string, h *parleyv1.History) (*parleyv1.HistoryResult, error)
		CheckMember(ctx context.Context, userID, conv string) (store.Member, error)
		// MemberIDs lists conv's current members for typing fan-out; the
		// caller has checked membership with CheckMember.
		MemberIDs(ctx context.Context, conv string) ([]string, error)
		PresenceVisible(ctx context.Context, viewer string, targets []string) (map[string]bool, error)
		PresenceUnblocked(ctx context.Context, viewer string, targets []string) (map[string]bool, error)
		PresenceAudience(ctx context.Context, user string) (peers []string, hidden map[string]bool, err error)
		SetMute(ctx context.Context, user string, m *parleyv1.Mute) (*parleyv1.Mute, error)
		SetBlock(ctx context.Context, user string, b *parleyv1.Block) (*parleyv1.Block, error)
	}
	// Router fans out typing to users' sessions on any gateway and looks
	// up users' live sessions (*chat.Router).
	Router interface {
		Deliver(ctx context.Context, userIDs []string, d *parleyv1.Delivery) error
		Sessions(ctx context.Context, userIDs []string) (map[string][]presence.Session, error)
	}
	// PresenceService is what a gateway needs of presence: register,
	// refresh and remove its sessions, and read users' presence.
	// *presence.Service is one (embedded mode: the decisions are made in
	// process); relay.Reporter is the distributed mode's (the presence role
	// decides, see runtime/presence/relay), where presence changes reach the
	// gateway as deliveries with a presence body and no user ids (broadcast
	// by the presence role), which the gateway hands to PresenceChanged.
	PresenceService interface {
		Connected(ctx context.Context, s presence.Session) error
		Heartbeat(ctx context.Context, s presence.Session) error
		Disconnected(ctx context.Context, s presence.Session) error
		Get(ctx context.Context, userIDs []string) (map[string]*parleyv1.Presence, error)
	}
)

// Deps are a gateway's collaborators. All are required.
type Deps struct {
	// Verifier authenticates the bearer token of an upgrade.
	Verifier auth.Verifier
	// Ingress publishes requests to the chat role; the caller runs it
	// (ingress.Client.Run), which expires unanswered requests.
	Ingress Ingress
	// Queries serves reads and membership checks.
	Queries Queries
	// Router fans out typing and counts a user's sessions.
	Router Router
	// Presence tracks sessions and reads presence.
	Presence PresenceService
	// Metrics receives the gateway's metrics.
	Metrics *metrics.Metrics
}

// Cache lifetimes. Typing fan-out and presence pushes tolerate a few seconds
// of stale membership; messages never use these caches.
const (
	membersTTL = 5 * time.Second
	dmPeersTTL = 10 * time.Second
	cacheMax   = 100_000
)

// Gateway serves WebSocket sessions. Create it with New, serve it at Path,
// run Run, and Drain it before shutdown.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	verifier auth.Verifier
	cc       Ingress
	q        Queries
	r        Router
	typing   typingGate // one typing fan-out per user and conversation per interval
	admits   admissions // handshakes past the session cap check, not yet registered
	ps       PresenceService
	m        *metrics.Metrics
	sendRate limits.Limiter

	upgrader websocket.Upgrader
	hub      hub
	members  *ttlCache[[]string] // conversation -> member user ids (typing)
	dmPeers  *ttlCache[audience] // user -> whom its presence is pushed to
	// fanout runs broadcast presence changes (distributed mode) off the
	// deliver partition's goroutine (fleet.go).
	fanout presenceFanout

	// idle is IdleFactor×Heartbeat in nanoseconds.
	idle     int64
	draining atomic.Bool
	// gone is signalled after a session is removed, for Drain.
	gone chan struct{}
	// beats hands sessions due for a presence heartbeat from the ticker to
	// the heartbeat worker.
	beats chan []*session
	// ctx is the base of per-request contexts. Requests are bounded by
	// RequestTimeout, not by Run's lifetime, so that a reply in flight at
	// shutdown still reaches its client during a drain.
	ctx context.Context
}

// New returns a gateway configured by cfg with the collaborators d.
func New(cfg Config, d Deps) *Gateway {
	cfg = cfg.withDefaults()
	g := &Gateway{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "gateway", "gateway_id", cfg.ID),
		verifier: d.Verifier,
		cc:       d.Ingress,
		q:        d.Queries,
		r:        d.Router,
		ps:       d.Presence,
		m:        d.Metrics,
		sendRate: cfg.Limits,
		members:  newTTLCache[[]string](membersTTL, cacheMax),
		dmPeers:  newTTLCache[audience](dmPeersTTL, cacheMax),
		idle:     int64(float64(cfg.Heartbeat) * IdleFactor),
		gone:     make(chan struct{}, 1),
		beats:    make(chan []*session, 1),
		ctx:      context.Background(),
	}
	g.hub.init()
	g.upgrader = websocket.Upgrader{
		// gorilla only does the handshake; the transport reads and writes
		// the frames and drops gorilla's Conn. With ReadBufferSize 0 and
		// a write buffer pool, that Conn takes over the server's
		// buffers instead of allocating its own (garbage once the
		// handshake is done). No compression is negotiated: the
		// transport refuses RSV bits.
		WriteBufferPool: &sync.Pool{},
		Subprotocols:    []string{wire.SubprotocolProto, wire.SubprotocolJSON},
		// By default any origin may connect: the session is authorized by
		// a bearer token the page must hold, never by ambient cookies, so
		// a cross-site page gains nothing (cross-site WebSocket hijacking
		// needs cookie auth), and third-party web clients are welcome. An
		// operator may pin origins (Config.AllowedOrigins).
		CheckOrigin: g.originAllowed,
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			code := wire.CodeInvalid
			switch {
			case status == http.StatusForbidden:
				code = wire.CodeForbidden // an origin outside Config.AllowedOrigins
			case status >= 500:
				code = wire.CodeInternal
			}
			g.writeHTTPError(w, status, &wire.Error{Code: code, Message: reason.Error()})
		},
	}
	return g
}

// Draining reports whether Drain has been called; a draining gateway refuses
// new connections with 503 unavailable (and /readyz should report false).
func (g *Gateway) Draining() bool { return g.draining.Load() }

// Connections returns the number of open sessions.
func (g *Gateway) Connections() int { return int(g.hub.count.Load()) }

// retryAfterDraining is the Retry-After of a refused upgrade while draining:
// another gateway takes the client at once.
const retryAfterDraining = time.Second

// ServeHTTP upgrades GET /v1/ws to a WebSocket session and returns; the
// session is served on a goroutine of its own until it ends (Drain ends
// them all). Before upgrading it answers with a JSON error body
// {"error":{"code","message"}}: 404 not_found for another path, 405 invalid
// for another method, 400 invalid without a WebSocket handshake or without a
// supported subprotocol (Sec-WebSocket-Protocol parley.v1.proto or
// parley.v1.json), 503 unavailable with Retry-After while draining, and 401
// unauthenticated or token_expired when the bearer token (auth.BearerToken)
// does not verify.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != Path {
		g.writeHTTPError(w, http.StatusNotFound, wire.Errorf(wire.CodeNotFound, "no endpoint %.100q; the WebSocket endpoint is %s", r.URL.Path, Path))
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		g.writeHTTPError(w, http.StatusMethodNotAllowed, wire.Errorf(wire.CodeInvalid, "method %.20s not allowed; %s takes a GET WebSocket upgrade", r.Method, Path))
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		g.writeHTTPError(w, http.StatusBadRequest, wire.Errorf(wire.CodeInvalid, "%s takes a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)", Path))
		return
	}
	if g.draining.Load() {
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfterDraining/time.Second)))
		g.writeHTTPError(w, http.StatusServiceUnavailable, &wire.Error{Code: wire.CodeUnavailable,
			Message: "this gateway is draining; reconnect to another", RetryAfterMs: uint32(retryAfterDraining.Milliseconds())})
		return
	}
	// Checked before the upgrade, so a burst may overshoot by the upgrades
	// in flight; the cap protects the process, it is not an exact quota.
	if max := g.cfg.MaxConnections; max > 0 && g.Connections() >= max {
		w.Header().Set("Retry-After", strconv.Itoa(int(retryAfterDraining/time.Second)))
		g.writeHTTPError(w, http.StatusServiceUnavailable, &wire.Error{Code: wire.CodeUnavailable,
			Message: fmt.Sprintf("this gateway holds its maximum of %d connections; reconnect to another", max), RetryAfterMs: uint32(retryAfterDraining.Milliseconds())})
		return
	}
	if !offersSupported(r) {
		g.writeHTTPError(w, http.StatusBadRequest, wire.Errorf(wire.CodeInvalid,
			"no supported subprotocol in Sec-WebSocket-Protocol %.100q; supported: %s, %s",
			strings.Join(websocket.Subprotocols(r), ", "), wire.SubprotocolProto, wire.SubprotocolJSON))
		return
	}
	claims, err := g.verifier.Verify(r.Context(), auth.BearerToken(r))
	if err != nil {
		we := wire.AsError(err)
		if we.Code == wire.CodeInternal {
			g.log.Warn("verify token", "err", err)
		}
		g.writeHTTPError(w, wire.HTTPStatus(we.Code), we)
		return
	}
	if max := g.cfg.MaxSessionsPerUser; max > 0 {
		// Handshakes of the user in flight on this gateway count too: the
		// registry shows a session only once it is served, so concurrent
		// handshakes would all pass the check (the load-and-abuse suite let
		// 17 of 300 in under a cap of 16). Released once this handler
		// returns, after the session registered itself (s.start).
		inFlight := g.admits.begin(claims.UserID)
		defer g.admits.end(claims.UserID)
		ctx, cancel := context.WithTimeout(r.Context(), sessionCountTimeout)
		ss, err := g.r.Sessions(ctx, []string{claims.UserID})
		cancel()
		if n := len(ss[claims.UserID]); err == nil && n+inFlight >= max {
			g.writeHTTPError(w, http.StatusTooManyRequests, wire.Errorf(wire.CodeTooManySessions,
				"user %s already has %d sessions (and %d connecting), the most allowed is %d; close one (the newest connection is the one refused)",
				claims.UserID, n, inFlight, max))
			return
		}
	}
	if g.cfg.Homes != nil {
		ctx, cancel := context.WithTimeout(r.Context(), sessionCountTimeout)
		home, err := g.cfg.Homes(ctx, claims.UserID, claims.HomeRegion)
		cancel()
		if err != nil {
			we := wire.AsError(err)
			g.writeHTTPError(w, wire.HTTPStatus(we.Code), we)
			return
		}
		claims.HomeRegion = home
	}
	conn, err := transport.Upgrade(&g.upgrader, w, r, wire.MaxFrameBytes)
	if err != nil {
		// The upgrader has answered with an error already.
		g.log.Debug("upgrade", "err", err)
		return
	}
	codec, _ := wire.CodecFor(conn.Subprotocol())
	s := newSession(g, conn, claims, codec.Binary)
	// The session's reader gets a goroutine of its own and the handler
	// returns. While a handler runs, net/http keeps its per-connection
	// state alive (a 4 KiB read and a 4 KiB write buffer, the parsed
	// request with its headers and context, about 11 KiB in all), and the
	// handler's stack has grown through header parsing and token
	// verification. Returning frees both; the reader then parks the idle
	// socket and ends too (transport.Conn.Serve, docs/benchmarks.md).
	s.start()
	go s.serve()
}

// admissions counts, per user, this gateway's handshakes between the session
// cap check and the session's registration. Across gateways of a region the
// check stays a registry read, so concurrent handshakes on several gateways
// may pass a cap by as many (docs/design.md, limits).
type admissions struct {
	mu sync.Mutex
	n  map[string]int
}

// begin counts one more handshake of user and returns how many were in
// flight before it.
func (a *admissions) begin(user string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n == nil {
		a.n = make(map[string]int)
	}
	before := a.n[user]
	a.n[user] = before + 1
	return before
}

// end ends one handshake of user.
func (a *admissions) end(user string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n[user] <= 1 {
		delete(a.n, user)
		return
	}
	a.n[user]--
}

func offersSupported(r *http.Request) bool {
	for _, p := range websocket.Subprotocols(r) {
		if _, ok := wire.CodecFor(p); ok {
			return true
		}
	}
	return false
}

// httpError is the JSON error body of a refused upgrade, the same shape as
// the REST API's.
type httpError struct {
	Error struct {
		Code         string `json:"code"`
		Message      string `json:"message"`
		RetryAfterMs uint32 `json:"retry_after_ms,omitempty"`
	} `json:"error"`
}

func (g *Gateway) writeHTTPError(w http.ResponseWriter, status int, e *wire.Error) {
	g.countError(e.Code)
	var body httpError
	body.Error.Code, body.Error.Message, body.Error.RetryAfterMs = e.Code, e.Message, e.RetryAfterMs
	b, err := json.Marshal(body)
	if err != nil {
		http.Error(w, e.Error(), status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func (g *Gateway) countError(code string) {
	g.m.Errors.WithLabelValues(code).Inc()
}

// requestCtx bounds one request to the chat role or the store.
func (g *Gateway) requestCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(g.ctx, g.cfg.RequestTimeout)
}

// errNoBus is returned by Run when Config.Bus is nil.
var errNoBus = errors.New("gateway: Config.Bus is nil")

// Run reads this gateway's deliver partition until ctx ends, handing replies
// to the chat client and deliveries to local sessions, and runs the shared
// ticker (idle timeouts, token expiry, presence heartbeats). It returns nil
// when ctx ends, or an error when the gateway id has no partition or the
// subscription fails. Sessions outlive Run; Drain ends them.
func (g *Gateway) Run(ctx context.Context) error {
	if g.cfg.Bus == nil {
		return errNoBus
	}
	part, err := ingress.GatewayPartition(g.cfg.ID)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Go(func() { g.runTicker(ctx) })
	wg.Go(func() { g.runHeartbeats(ctx) })
	// Subscribe may return at once or block until ctx ends, depending on the
	// backend; either way the subscription lives until ctx ends.
	if err := g.cfg.Bus.Subscribe(ctx, g.cfg.DeliverTopic, part, g.onDeliverRecord); err != nil && ctx.Err() == nil {
		return fmt.Errorf("gateway: subscribe %s/%d: %w", g.cfg.DeliverTopic, part, err)
	}
	<-ctx.Done()
	return nil
}
