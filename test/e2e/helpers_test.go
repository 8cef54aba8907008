package e2e

// Helpers shared by the group, bad-input, token and slow-consumer tests: dev
// tokens minted in the test (with any exp), SDK clients that record their
// events, raw WebSocket connections that speak frames by hand, raw REST
// calls, and a /metrics reader.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// devSecret reads the HMAC secret the server created in its data dir
// (<dataDir>/dev-secret, hex; see runtime/auth/dev.go).
func (p *proc) devSecret() []byte {
	p.t.Helper()
	b, err := os.ReadFile(filepath.Join(p.DataDir, "dev-secret"))
	if err != nil {
		p.t.Fatalf("read dev secret: %v", err)
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		p.t.Fatalf("dev secret is not hex: %v", err)
	}
	return secret
}

// devClaims is the payload of a dev token (runtime/auth: sub, did, iss
// "parley-dev", aud "parley", iat, nbf, exp).
type devClaims struct {
	jwt.RegisteredClaims
	DeviceID string `json:"did,omitempty"`
}

func newDevClaims(user, device string, exp time.Time) devClaims {
	now := time.Now()
	return devClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    "parley-dev",
			Subject:   user,
			Audience:  jwt.ClaimStrings{"parley"},
			ExpiresAt: jwt.NewNumericDate(exp),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Hour)),
			IssuedAt:  jwt.NewNumericDate(now.Add(-time.Hour)),
		},
		DeviceID: device,
	}
}

// mint signs a dev token like `parley token` does, but with any exp
// (including one in the past), with secret.
func mint(t *testing.T, secret []byte, user, device string, exp time.Time) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, newDevClaims(user, device, exp)).SignedString(secret)
	if err != nil {
		t.Fatalf("sign token: %v", err)
	}
	return tok
}

// mintWith signs claims changed by mod with method and key.
func mintWith(t *testing.T, method jwt.SigningMethod, key any, mod func(*devClaims)) string {
	t.Helper()
	c := newDevClaims("alice", "laptop", time.Now().Add(time.Hour))
	mod(&c)
	tok, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatalf("sign token: %v", err)
	}
	return tok
}

// mintNone returns an unsigned token (alg "none") with valid-looking claims.
func mintNone(t *testing.T, user string) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodNone, newDevClaims(user, "dev", time.Now().Add(time.Hour))).
		SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatalf("make alg none token: %v", err)
	}
	return tok
}

// quietLog is the SDK logger of the tests.
var quietLog = slog.New(slog.DiscardHandler)

// sdkEvents keeps every event of one SDK client.
type sdkEvents struct {
	mu     sync.Mutex
	events []client.Event
	// count[conv][seq] is how many MessageEvents carried (conv, seq).
	count  map[string]map[uint64]int
	msgs   map[string]map[uint64]*parleyv1.Message
	closed *client.ClosedEvent
	done   chan struct{} // closed when the Events channel is closed
}

func recordEvents(c *client.Client) *sdkEvents {
	r := &sdkEvents{count: map[string]map[uint64]int{}, msgs: map[string]map[uint64]*parleyv1.Message{}, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range c.Events() {
			r.mu.Lock()
			r.events = append(r.events, ev)
			switch e := ev.(type) {
			case client.MessageEvent:
				m := e.Message
				conv := m.GetConversationId()
				if r.count[conv] == nil {
					r.count[conv] = map[uint64]int{}
					r.msgs[conv] = map[uint64]*parleyv1.Message{}
				}
				r.count[conv][m.GetSeq()]++
				r.msgs[conv][m.GetSeq()] = m
			case client.ClosedEvent:
				r.closed = &e
			}
			r.mu.Unlock()
		}
	}()
	return r
}

// times returns how many MessageEvents carried (conv, seq).
func (r *sdkEvents) times(conv string, seq uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count[conv][seq]
}

// message returns the message (conv, seq) if it was emitted.
func (r *sdkEvents) message(conv string, seq uint64) *parleyv1.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.msgs[conv][seq]
}

// seqs returns the distinct seqs emitted for conv, ascending.
func (r *sdkEvents) seqs(conv string) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]uint64, 0, len(r.count[conv]))
	for s := range r.count[conv] {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// dupes returns the (conv, seq) pairs emitted more than once.
func (r *sdkEvents) dupes(conv string) []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []uint64
	for s, n := range r.count[conv] {
		if n > 1 {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

func (r *sdkEvents) has(match func(client.Event) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.events, match)
}

func (r *sdkEvents) closedEvent() *client.ClosedEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// last returns the last event recorded (nil if none).
func (r *sdkEvents) last() client.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		return nil
	}
	return r.events[len(r.events)-1]
}

// dial connects an SDK client as the token's user and records its events.
// The client is closed at cleanup.
func dialSDK(t *testing.T, p *proc, token, subprotocol string, mod func(*client.Options)) (*client.Client, *sdkEvents) {
	t.Helper()
	opts := client.Options{
		URL: p.WS(), Token: token, Subprotocol: subprotocol,
		Backoff: client.Backoff{Min: 50 * time.Millisecond, Max: time.Second},
		Logger:  quietLog,
	}
	if mod != nil {
		mod(&opts)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", p.WS(), err)
	}
	r := recordEvents(c)
	t.Cleanup(func() {
		_ = c.Close()
		<-r.done
	})
	return c, r
}

// errCode returns the stable code of a *wire.Error in err's chain, or "".
func errCode(err error) string {
	var we *wire.Error
	if errors.As(err, &we) {
		return we.Code
	}
	return ""
}

// wantCode fails the test unless err carries a *wire.Error with code.
func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want error %s", what, code)
	}
	if got := errCode(err); got != code {
		t.Fatalf("%s: error %v (code %q), want code %s", what, err, got, code)
	}
}

// allHistory pages through conv's log as the REST caller sees it, oldest
// first.
func allHistory(t *testing.T, ctx context.Context, r *client.REST, conv string) []*parleyv1.Message {
	t.Helper()
	var out []*parleyv1.Message
	var before uint64
	for {
		res, err := r.History(ctx, conv, before, 0, 200)
		if err != nil {
			t.Fatalf("history of %s before %d: %v", conv, before, err)
		}
		out = append(out, res.GetMessages()...)
		if !res.GetHasMore() || len(res.GetMessages()) == 0 {
			break
		}
		before = res.GetMessages()[len(res.GetMessages())-1].GetSeq()
	}
	slices.Reverse(out)
	return out
}

// head returns the newest seq of conv visible to the REST caller.
func headSeq(t *testing.T, ctx context.Context, r *client.REST, conv string) uint64 {
	t.Helper()
	res, err := r.History(ctx, conv, 0, 0, 1)
	if err != nil {
		t.Fatalf("history head of %s: %v", conv, err)
	}
	if len(res.GetMessages()) == 0 {
		return 0
	}
	return res.GetMessages()[0].GetSeq()
}

// rawConn is a WebSocket connection driven frame by frame.
type rawConn struct {
	t       *testing.T
	ws      *websocket.Conn
	codec   wire.Codec
	welcome *parleyv1.Welcome
	nextID  uint64
}

// dialRaw upgrades with token (Authorization: Bearer) offering
// subprotocols; it returns the response of a refused upgrade as is.
func dialRaw(p *proc, token string, subprotocols []string, dialer *websocket.Dialer) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second}
	if dialer != nil {
		d = *dialer
	}
	d.Subprotocols = subprotocols
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	return d.Dial(p.WS()+"/v1/ws", h)
}

// openRaw connects in subprotocol and reads the Welcome.
func openRaw(t *testing.T, p *proc, token, subprotocol string) *rawConn {
	t.Helper()
	return openRawWith(t, p, token, subprotocol, nil)
}

func openRawWith(t *testing.T, p *proc, token, subprotocol string, dialer *websocket.Dialer) *rawConn {
	t.Helper()
	ws, resp, err := dialRaw(p, token, []string{subprotocol}, dialer)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("upgrade (%s): %v (HTTP %d)", subprotocol, err, status)
	}
	if ws.Subprotocol() != subprotocol {
		t.Fatalf("negotiated subprotocol %q, want %q", ws.Subprotocol(), subprotocol)
	}
	t.Cleanup(func() { _ = ws.Close() })
	codec, _ := wire.CodecFor(subprotocol)
	c := &rawConn{t: t, ws: ws, codec: codec}
	f, err := c.next(30 * time.Second)
	if err != nil {
		t.Fatalf("waiting for welcome: %v", err)
	}
	if f.GetWelcome() == nil {
		t.Fatalf("first frame is %v, want welcome", f)
	}
	c.welcome = f.GetWelcome()
	return c
}

func (c *rawConn) msgType() int {
	if c.codec.Binary {
		return websocket.BinaryMessage
	}
	return websocket.TextMessage
}

// write sends f with a fresh id and returns the id.
func (c *rawConn) write(f *parleyv1.ClientFrame) uint64 {
	c.t.Helper()
	c.nextID++
	f.Id = c.nextID
	b, err := c.codec.EncodeClient(f)
	if err != nil {
		c.t.Fatalf("encode frame: %v", err)
	}
	c.writeRaw(c.msgType(), b)
	return f.Id
}

// writeRaw sends bytes as one WebSocket message of type mt.
func (c *rawConn) writeRaw(mt int, b []byte) {
	c.t.Helper()
	_ = c.ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := c.ws.WriteMessage(mt, b); err != nil {
		c.t.Fatalf("write frame: %v", err)
	}
}

// next reads one server frame within timeout.
func (c *rawConn) next(timeout time.Duration) (*parleyv1.ServerFrame, error) {
	_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
	_, b, err := c.ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	return c.codec.DecodeServer(b)
}

// until reads frames (skipping others) until match holds, within 30s.
func (c *rawConn) until(what string, match func(*parleyv1.ServerFrame) bool) *parleyv1.ServerFrame {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		f, err := c.next(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return f
		}
	}
}

// reply reads until the frame answering request id.
func (c *rawConn) reply(id uint64) *parleyv1.ServerFrame {
	c.t.Helper()
	return c.until("reply to request "+strconv.FormatUint(id, 10), func(f *parleyv1.ServerFrame) bool { return f.GetId() == id })
}

// wantError reads until an error frame for request id (or, with anyID, for
// any request: an undecodable frame's id is unknown to the server) and
// checks its code.
func (c *rawConn) wantError(id uint64, anyID bool, code string) *parleyv1.Error {
	c.t.Helper()
	f := c.until("error "+code, func(f *parleyv1.ServerFrame) bool {
		if anyID {
			return f.GetError() != nil
		}
		return f.GetId() == id
	})
	e := f.GetError()
	if e == nil {
		c.t.Fatalf("reply to request %d is %v, want error %s", id, f, code)
	}
	if e.GetCode() != code {
		c.t.Fatalf("error %q (%s), want code %s", e.GetCode(), e.GetMessage(), code)
	}
	return e
}

// sendText writes a send frame and returns its id.
func (c *rawConn) sendText(conv, clientMsgID, text string) uint64 {
	c.t.Helper()
	return c.write(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Send{Send: &parleyv1.Send{
		ConversationId: conv, ClientMsgId: clientMsgID, Content: &parleyv1.Send_Text{Text: text}}}})
}

// closeCode reads until the connection ends and returns the close code
// (0 when it ended without a close frame).
func (c *rawConn) closeCode(timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	for {
		_ = c.ws.SetReadDeadline(deadline)
		_, _, err := c.ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, err
		}
		return 0, err
	}
}

// errorJSON is a REST or refused-upgrade error body.
type errorJSON struct {
	Error struct {
		Code         string `json:"code"`
		Message      string `json:"message"`
		RetryAfterMs uint32 `json:"retry_after_ms"`
	} `json:"error"`
}

// errorBody decodes an error body; it returns "" for the code when the
// body is not one.
func errorBody(b []byte) (code, msg string) {
	var e errorJSON
	if json.Unmarshal(b, &e) != nil {
		return "", ""
	}
	return e.Error.Code, e.Error.Message
}

// rest makes one REST request with a raw body and returns the status and
// the body.
func restCall(t *testing.T, method, url, token string, body []byte) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := &http.Client{Timeout: 60 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, b
}

// metric returns the value of an unlabelled metric on /metrics (-1 if absent).
func (p *proc) metric(name string) float64 {
	p.t.Helper()
	resp, err := http.Get(p.HTTP() + "/metrics")
	if err != nil {
		p.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				p.t.Fatalf("metric %s: %q: %v", name, line, err)
			}
			return f
		}
	}
	return -1
}

// closeCodeOf returns the close code of a read error (0 if it is not a
// close frame).
func closeCodeOf(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

func pingFrame() *parleyv1.ClientFrame {
	return &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Ping{Ping: &parleyv1.Ping{}}}
}
