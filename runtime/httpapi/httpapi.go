// Package httpapi serves Parley's REST API (docs/design.md §6): JSON over
// HTTP with JWT bearer auth, the same operations and idempotency as the
// WebSocket frames, and errors as {"error":{"code","message"}} with the
// HTTP status of wire.HTTPStatus.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/chat"
	"github.com/parleychat/parley/runtime/chat/ingress"
	"github.com/parleychat/parley/runtime/chat/rules"
	"github.com/parleychat/parley/runtime/limits"
	"github.com/parleychat/parley/runtime/media"
	"github.com/parleychat/parley/runtime/metrics"
	"github.com/parleychat/parley/runtime/presence"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// MaxBodyBytes bounds a request body; larger bodies get too_large.
const MaxBodyBytes = 64 << 10

// MaxPresenceUsers bounds the users of one GET /v1/presence.
const MaxPresenceUsers = 100

// API holds the REST handlers' dependencies.
type API struct {
	Verifier       auth.Verifier
	Chat           *ingress.Client
	Queries        *chat.Queries
	Presence       *presence.Service
	Limits         limits.Limiter
	Metrics        *metrics.Metrics
	GatewayID      string
	RequestTimeout time.Duration
	// MaxMessageBytes bounds message text, bytes.
	MaxMessageBytes int
	// Media presigns uploads (POST /v1/media/uploads) and checks media
	// messages before they are sent; nil refuses both.
	Media *media.Service
	// DevIssuer, set only in dev mode, enables POST /v1/dev/token, which
	// issues a token for any user; DevTokenTTL is its lifetime (default 24h).
	DevIssuer   *auth.DevIssuer
	DevTokenTTL time.Duration
	// ReadLimits, when set, is the per-user budget of history, inbox and
	// receipts requests (shared with the gateway's sync and history).
	ReadLimits limits.Limiter
	// Homes, when set (multi-region), resolves the caller's home region
	// from the token's home_region claim as the gateway does at connect
	// (gateway.Config.Homes): an unknown region refuses the request, and a
	// claim is stored as the user's home even for a user who only ever
	// uses REST.
	Homes func(ctx context.Context, user, claim string) (string, error)
	// PresencePublic answers GET /v1/presence for any user; by default a
	// user who shares no conversation with the caller reads "unknown"
	// (chat.Queries.PresenceVisible).
	PresencePublic bool
}

// Register adds the REST routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/messages", a.authed(a.send))
	mux.HandleFunc("PATCH /v1/messages/{conv}/{seq}", a.authed(a.editMessage))
	mux.HandleFunc("DELETE /v1/messages/{conv}/{seq}", a.authed(a.deleteMessage))
	mux.HandleFunc("POST /v1/messages/{conv}/{seq}/reactions", a.authed(a.react(false)))
	mux.HandleFunc("DELETE /v1/messages/{conv}/{seq}/reactions", a.authed(a.react(true)))
	mux.HandleFunc("GET /v1/history/{conv}", a.authed(a.limitReads(a.history)))
	mux.HandleFunc("POST /v1/conversations", a.authed(a.createGroup))
	mux.HandleFunc("GET /v1/conversations", a.authed(a.limitReads(a.inbox)))
	mux.HandleFunc("GET /v1/conversations/{conv}/members", a.authed(a.limitReads(a.members)))
	mux.HandleFunc("POST /v1/conversations/{conv}/members", a.authed(a.addMembers))
	mux.HandleFunc("DELETE /v1/conversations/{conv}/members/{user}", a.authed(a.removeMember))
	mux.HandleFunc("PATCH /v1/conversations/{conv}/members/{user}", a.authed(a.setRole))
	mux.HandleFunc("PATCH /v1/conversations/{conv}", a.authed(a.rename))
	mux.HandleFunc("GET /v1/conversations/{conv}/receipts", a.authed(a.limitReads(a.receipts)))
	mux.HandleFunc("POST /v1/conversations/{conv}/read", a.authed(a.read))
	mux.HandleFunc("PUT /v1/conversations/{conv}/mute", a.authed(a.mute(false)))
	mux.HandleFunc("DELETE /v1/conversations/{conv}/mute", a.authed(a.mute(true)))
	mux.HandleFunc("GET /v1/blocks", a.authed(a.limitReads(a.blocks)))
	mux.HandleFunc("PUT /v1/blocks/{user}", a.authed(a.block(false)))
	mux.HandleFunc("DELETE /v1/blocks/{user}", a.authed(a.block(true)))
	// No user at all: invalid like an empty user_id over the WebSocket,
	// not a missing route.
	mux.HandleFunc("PUT /v1/blocks/{$}", a.authed(a.block(false)))
	mux.HandleFunc("DELETE /v1/blocks/{$}", a.authed(a.block(true)))
	mux.HandleFunc("GET /v1/presence", a.authed(a.presence))
	mux.HandleFunc("POST /v1/media/uploads", a.authed(a.mediaUpload))
	if a.DevIssuer != nil {
		// Dev mode only: in production the route does not exist (404).
		mux.HandleFunc("POST /v1/dev/token", a.devToken)
	}
}

type handler func(w http.ResponseWriter, r *http.Request, c auth.Claims) error

// authed verifies the bearer token, runs h, and writes any error h returns.
func (a *API) authed(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := auth.BearerToken(r)
		if tok == "" {
			a.writeError(w, wire.Errorf(wire.CodeUnauthenticated, "missing bearer token (Authorization: Bearer <jwt>)"))
			return
		}
		c, err := a.Verifier.Verify(r.Context(), tok)
		if err != nil {
			a.writeError(w, err)
			return
		}
		if a.Homes != nil {
			home, err := a.Homes(r.Context(), c.UserID, c.HomeRegion)
			if err != nil {
				a.writeError(w, err)
				return
			}
			c.HomeRegion = home
		}
		if r.ContentLength > MaxBodyBytes {
			// Declared too large: answered at once, not after reading
			// (or waiting for) MaxBodyBytes of it (issue 14).
			w.Header().Set("Connection", "close")
			a.writeError(w, wire.Errorf(wire.CodeTooLarge, "request body of %d bytes is over the limit of %d", r.ContentLength, MaxBodyBytes))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		if err := h(w, r, c); err != nil {
			a.writeError(w, err)
		}
	}
}

func (a *API) writeError(w http.ResponseWriter, err error) {
	we := wire.AsError(err)
	if we.Code == wire.CodeInternal {
		slog.Error("rest request failed", "err", err)
	}
	if a.Metrics != nil {
		a.Metrics.Errors.WithLabelValues(we.Code).Inc()
	}
	if we.RetryAfterMs > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((we.RetryAfterMs+999)/1000)))
	}
	WriteError(w, we)
}

// WriteError writes we as {"error":{"code","message"}} with its HTTP status.
func WriteError(w http.ResponseWriter, we *wire.Error) {
	body := map[string]any{"code": we.Code, "message": we.Message}
	if we.RetryAfterMs > 0 {
		body["retry_after_ms"] = we.RetryAfterMs
	}
	writeJSON(w, wire.HTTPStatus(we.Code), map[string]any{"error": body})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // "<b>" stays "<b>" in a JSON body; it is no HTML page
	_ = enc.Encode(v)
}

// NoRoute answers a request no route of mux took: 405 method_not_allowed
// with an Allow header when the path exists under other methods, else 404
// not_found naming the request (suffix, when set, explains more).
func NoRoute(mux *http.ServeMux, suffix string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			if m == r.Method {
				continue
			}
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			WriteError(w, wire.Errorf(wire.CodeMethodNotAllowed, "%s %s: this path takes %s", r.Method, r.URL.Path, strings.Join(allow, ", ")))
			return
		}
		WriteError(w, wire.Errorf(wire.CodeNotFound, "no route for %s %s%s", r.Method, r.URL.Path, suffix))
	}
}

var pj = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}

// protoJSON renders a protobuf message as a json.RawMessage with proto names,
// so REST bodies and JSON WebSocket frames spell fields the same way.
func protoJSON(m proto.Message) json.RawMessage {
	b, err := pj.Marshal(m)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

// limitReads spends one of the caller's read budget (ReadLimits) before h.
func (a *API) limitReads(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
		if a.ReadLimits != nil {
			if ok, retry := a.ReadLimits.Allow(c.UserID); !ok {
				return wire.RateLimited("over the per-user rate of history, inbox and receipts requests", retry)
			}
		}
		return h(w, r, c)
	}
}

// decode reads a JSON body into v, naming the problem on failure.
func decode(r *http.Request, v any) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return wire.Errorf(wire.CodeTooLarge, "request body is over %d bytes", MaxBodyBytes)
		}
		return wire.Errorf(wire.CodeInvalid, "request body could not be read: %v", err)
	}
	return decodeBody(body, v)
}

// decodeBody decodes one JSON object into v, strictly (issue 14): the body
// must be valid UTF-8 with no lone surrogate escape (encoding/json would
// turn either into U+FFFD and store it), hold exactly one JSON value, and
// name only v's fields. The WebSocket JSON subprotocol refuses the same
// bytes, so every entry point answers them alike.
func decodeBody(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return wire.Errorf(wire.CodeInvalid, "request body is empty; expected a JSON object")
	}
	if err := wire.CheckJSONText(body); err != nil {
		return wire.Errorf(wire.CodeInvalid, "request body %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return wire.Errorf(wire.CodeInvalid, "request body is not valid JSON for this endpoint: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return wire.Errorf(wire.CodeInvalid, "request body holds more than one JSON value; send exactly one object")
	}
	return nil
}

// call sends rec to the conversation's sequencer and waits for its reply.
func (a *API) call(ctx context.Context, c auth.Claims, rec *parleyv1.IngressRecord) (*parleyv1.Reply, error) {
	timeout := a.RequestTimeout
	if timeout <= 0 {
		timeout = ingress.DefaultRequestTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	now := time.Now()
	rec.Origin = &parleyv1.Origin{UserId: c.UserID, DeviceId: c.DeviceID, SessionId: "rest", HomeRegion: c.HomeRegion}
	rec.SentAt = now.UnixMilli()
	rec.Deadline = now.Add(timeout).UnixMilli()
	rep, err := a.Chat.Call(ctx, rec)
	if err != nil {
		return nil, err
	}
	if rep.GetError() != nil {
		e := rep.GetError()
		return nil, &wire.Error{Code: e.Code, Message: e.Message, RetryAfterMs: e.RetryAfterMs}
	}
	return rep, nil
}

type sendBody struct {
	ConversationID string `json:"conversation_id"`
	ClientMsgID    string `json:"client_msg_id"`
	Text           string `json:"text"`
	Media          *struct {
		URL  string `json:"url"`
		Mime string `json:"mime"`
		Size int64  `json:"size"`
	} `json:"media"`
	// ReplyTo is the seq of the message this one answers (optional), a
	// number or a string like every seq the API answers with.
	ReplyTo json.Number `json:"reply_to"`
}

func (a *API) send(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	var b sendBody
	if err := decode(r, &b); err != nil {
		return err
	}
	if b.ConversationID == "" {
		return wire.Errorf(wire.CodeInvalid, "conversation_id is required")
	}
	s := &parleyv1.Send{ConversationId: b.ConversationID, ClientMsgId: b.ClientMsgID}
	if b.ReplyTo != "" {
		// Parsed as the WebSocket's JSON subprotocol parses it (protojson:
		// a number or a string; 3, "3" and 3.0 are the same seq), so both
		// entry points take the same values.
		var rt parleyv1.Send
		if err := protojson.Unmarshal([]byte(`{"reply_to":`+string(b.ReplyTo)+`}`), &rt); err != nil {
			got := string(b.ReplyTo)
			if len(got) > 32 {
				got = got[:32] + "…"
			}
			return wire.Errorf(wire.CodeInvalid, "reply_to must be the seq of a message (a non-negative integer, as a number or a string), got %s", got)
		}
		s.ReplyTo = rt.GetReplyTo()
	}
	if b.Media != nil {
		s.Content = &parleyv1.Send_Media{Media: &parleyv1.Media{Url: b.Media.URL, Mime: b.Media.Mime, Size: b.Media.Size}}
	} else {
		s.Content = &parleyv1.Send_Text{Text: b.Text}
	}
	// The same checks as a WebSocket send (rules.ValidateSend), before the
	// send costs a token or a trip to the sequencer.
	if err := rules.ValidateSend(s, a.maxMessageBytes()); err != nil {
		return err
	}
	if ok, retry := a.Limits.Allow(c.UserID); !ok {
		return wire.RateLimited("send rate exceeded", retry)
	}
	if md := s.GetMedia(); md != nil {
		// The sender must have uploaded the object (media.Service.Check).
		checked, err := a.checkMedia(r.Context(), c.UserID, md)
		if err != nil {
			return err
		}
		s.Content = &parleyv1.Send_Media{Media: checked}
	}
	rep, err := a.call(r.Context(), c, &parleyv1.IngressRecord{ConversationId: b.ConversationID, Op: &parleyv1.IngressRecord_Send{Send: s}})
	if err != nil {
		return err
	}
	if acc := rep.GetSendAccepted(); acc != nil {
		// Taken into this region's outbox; sequenced once the home region
		// is reachable again (docs/multi-region.md).
		writeJSON(w, http.StatusAccepted, protoJSON(acc))
		return nil
	}
	writeJSON(w, http.StatusOK, protoJSON(rep.GetSendOk()))
	return nil
}

// seqPath parses the {seq} path value: a positive integer.
func seqPath(r *http.Request) (uint64, error) {
	v, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || v == 0 {
		return 0, wire.Errorf(wire.CodeInvalid, "seq must be a positive integer, got %q", r.PathValue("seq"))
	}
	return v, nil
}

// editMessage is PATCH /v1/messages/{conv}/{seq} {"text": "…"}: the
// WebSocket edit, answered 200 {"event": the EDITED event} (for a retry of
// an edit already applied, the earlier event).
func (a *API) editMessage(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	seq, err := seqPath(r)
	if err != nil {
		return err
	}
	var b struct {
		Text string `json:"text"`
	}
	if err := decode(r, &b); err != nil {
		return err
	}
	conv := r.PathValue("conv")
	e := &parleyv1.Edit{ConversationId: conv, Seq: seq, Text: b.Text}
	if err := rules.ValidateEdit(e, a.maxMessageBytes()); err != nil {
		return err
	}
	return a.change(w, r, c, &parleyv1.IngressRecord{ConversationId: conv, Op: &parleyv1.IngressRecord_Edit{Edit: e}})
}

// deleteMessage is DELETE /v1/messages/{conv}/{seq}: the WebSocket delete,
// answered 200 {"event": the DELETED event} (again for a message already
// deleted).
func (a *API) deleteMessage(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	seq, err := seqPath(r)
	if err != nil {
		return err
	}
	conv := r.PathValue("conv")
	return a.change(w, r, c, &parleyv1.IngressRecord{ConversationId: conv,
		Op: &parleyv1.IngressRecord_Delete{Delete: &parleyv1.Delete{ConversationId: conv, Seq: seq}}})
}

// react is POST (remove false) or DELETE (remove true)
// /v1/messages/{conv}/{seq}/reactions {"emoji": "👍"}: the WebSocket react,
// answered 200 {"event": the REACTION event}, or for a reaction that
// changes nothing (already there, or already absent) a REACTION message
// with no seq and the message's reactions.
func (a *API) react(remove bool) handler {
	return func(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
		seq, err := seqPath(r)
		if err != nil {
			return err
		}
		var b struct {
			Emoji string `json:"emoji"`
		}
		if err := decode(r, &b); err != nil {
			return err
		}
		conv := r.PathValue("conv")
		re := &parleyv1.React{ConversationId: conv, Seq: seq, Emoji: b.Emoji, Remove: remove}
		if err := rules.ValidateReact(re); err != nil {
			return err
		}
		return a.change(w, r, c, &parleyv1.IngressRecord{ConversationId: conv, Op: &parleyv1.IngressRecord_React{React: re}})
	}
}

// change sends an edit, delete, reaction, role change or rename like a
// send (it spends a send token).
func (a *API) change(w http.ResponseWriter, r *http.Request, c auth.Claims, rec *parleyv1.IngressRecord) error {
	if err := rules.CheckConversationID(rec.GetConversationId()); err != nil {
		return err
	}
	if ok, retry := a.Limits.Allow(c.UserID); !ok {
		return wire.RateLimited("send rate exceeded (edits, deletes, reactions and group changes count as sends)", retry)
	}
	rep, err := a.call(r.Context(), c, rec)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"event": protoJSON(rep.GetEvent())})
	return nil
}

func (a *API) maxMessageBytes() int {
	if a.MaxMessageBytes > 0 {
		return a.MaxMessageBytes
	}
	return wire.DefaultMaxMessageBytes
}

// uintParam parses an optional non-negative integer query parameter.
func uintParam(r *http.Request, name string) (uint64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, wire.Errorf(wire.CodeInvalid, "%s must be a non-negative integer, got %q", name, s)
	}
	return v, nil
}

func (a *API) history(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	h := &parleyv1.History{ConversationId: r.PathValue("conv")}
	// A parameter with a value is set even when 0: ?after=0 pages forward
	// from the very start, while no after (or an empty one) means the
	// newest page.
	for _, p := range []struct {
		name string
		dst  **uint64
	}{{"before", &h.Before}, {"after", &h.After}} {
		if r.URL.Query().Get(p.name) == "" {
			continue
		}
		v, err := uintParam(r, p.name)
		if err != nil {
			return err
		}
		*p.dst = &v
	}
	limit, err := uintParam(r, "limit")
	if err != nil {
		return err
	}
	if limit > wire.MaxPageSize {
		return wire.Errorf(wire.CodeInvalid, "limit %d is over the maximum page size %d", limit, wire.MaxPageSize)
	}
	h.Limit = uint32(limit)
	res, err := a.Queries.History(r.Context(), c.UserID, h)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, protoJSON(res))
	return nil
}

type membersBody struct {
	Title   string   `json:"title"`
	Members []string `json:"members"`
	UserIDs []string `json:"user_ids"`
}

func (a *API) createGroup(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	var b membersBody
	if err := decode(r, &b); err != nil {
		return err
	}
	if len(b.UserIDs) > 0 {
		b.Members = append(b.Members, b.UserIDs...)
	}
	// The sequencer mints the group id (g:<snowflake>) and returns it in the event.
	rep, err := a.call(r.Context(), c, &parleyv1.IngressRecord{
		Op: &parleyv1.IngressRecord_CreateGroup{CreateGroup: &parleyv1.CreateGroup{Title: b.Title, Members: b.Members}}})
	if err != nil {
		return err
	}
	id := rep.GetEvent().GetConversationId()
	writeJSON(w, http.StatusCreated, map[string]any{
		"conversation": map[string]any{"id": id, "kind": "group", "title": b.Title},
		"event":        protoJSON(rep.GetEvent()),
	})
	return nil
}

func (a *API) addMembers(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	var b membersBody
	if err := decode(r, &b); err != nil {
		return err
	}
	users := append(b.UserIDs, b.Members...)
	if len(users) == 0 {
		return wire.Errorf(wire.CodeInvalid, "user_ids is required: the users to add")
	}
	conv := r.PathValue("conv")
	rep, err := a.call(r.Context(), c, &parleyv1.IngressRecord{ConversationId: conv,
		Op: &parleyv1.IngressRecord_AddMembers{AddMembers: &parleyv1.ChangeMembers{UserIds: users}}})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"event": protoJSON(rep.GetEvent())})
	return nil
}

func (a *API) removeMember(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	conv, user := r.PathValue("conv"), r.PathValue("user")
	rep, err := a.call(r.Context(), c, &parleyv1.IngressRecord{ConversationId: conv,
		Op: &parleyv1.IngressRecord_RemoveMembers{RemoveMembers: &parleyv1.ChangeMembers{UserIds: []string{user}}}})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"event": protoJSON(rep.GetEvent())})
	return nil
}

// setRole is PATCH /v1/conversations/{conv}/members/{user} {"role":
// "admin"|"member"}: the WebSocket set_role, answered 200 {"event": the
// ROLE_CHANGED event}, or for a member that has the role already a
// ROLE_CHANGED message with no seq.
func (a *API) setRole(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	var b struct {
		Role string `json:"role"`
	}
	if err := decode(r, &b); err != nil {
		return err
	}
	conv := r.PathValue("conv")
	sr := &parleyv1.SetRole{ConversationId: conv, UserId: r.PathValue("user"), Role: b.Role}
	if err := rules.ValidateSetRole(sr); err != nil {
		return err
	}
	return a.change(w, r, c, &parleyv1.IngressRecord{ConversationId: conv, Op: &parleyv1.IngressRecord_SetRole{SetRole: sr}})
}

// rename is PATCH /v1/conversations/{conv} {"title": "…"}: the WebSocket
// rename, answered 200 {"event": the RENAMED event}, or for the title the
// group has already a RENAMED message with no seq.
func (a *API) rename(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	var b struct {
		Title string `json:"title"`
	}
	if err := decode(r, &b); err != nil {
		return err
	}
	conv := r.PathValue("conv")
	rn := &parleyv1.Rename{ConversationId: conv, Title: b.Title}
	if err := rules.ValidateRename(rn); err != nil {
		return err
	}
	return a.change(w, r, c, &parleyv1.IngressRecord{ConversationId: conv, Op: &parleyv1.IngressRecord_Rename{Rename: rn}})
}

func (a *API) inbox(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	states, err := a.Queries.Inbox(r.Context(), c.UserID)
	if err != nil {
		return err
	}
	out := make([]json.RawMessage, 0, len(states))
	for _, s := range states {
		out = append(out, protoJSON(s))
	}
	writeJSON(w, http.StatusOK, map[string]any{"conversations": out})
	return nil
}

func (a *API) receipts(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	seq, err := uintParam(r, "seq")
	if err != nil {
		return err
	}
	if seq == 0 {
		return wire.Errorf(wire.CodeInvalid, "seq is required: the message whose readers to list")
	}
	rs, err := a.Queries.ReadBy(r.Context(), c.UserID, r.PathValue("conv"), seq)
	if err != nil {
		return err
	}
	type receipt struct {
		UserID       string `json:"user_id"`
		DeliveredSeq uint64 `json:"delivered_seq"`
		ReadSeq      uint64 `json:"read_seq"`
	}
	out := make([]receipt, 0, len(rs))
	for _, x := range rs {
		out = append(out, receipt{x.UserID, x.DeliveredSeq, x.ReadSeq})
	}
	writeJSON(w, http.StatusOK, map[string]any{"conversation_id": r.PathValue("conv"), "seq": seq, "receipts": out})
	return nil
}

// members answers GET /v1/conversations/{conv}/members for a member:
// {"conversation_id", "members": [{"user_id", "role"
// ("owner"|"admin"|"member"), "joined_seq"}]}, the owner first, then
// admins (chat.Queries.Members).
func (a *API) members(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	ms, err := a.Queries.Members(r.Context(), c.UserID, r.PathValue("conv"))
	if err != nil {
		return err
	}
	type member struct {
		UserID    string `json:"user_id"`
		Role      string `json:"role"`
		JoinedSeq uint64 `json:"joined_seq"`
	}
	out := make([]member, 0, len(ms))
	for _, m := range ms {
		out = append(out, member{m.UserID, m.Role, m.JoinedSeq})
	}
	writeJSON(w, http.StatusOK, map[string]any{"conversation_id": r.PathValue("conv"), "members": out})
	return nil
}

func (a *API) read(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	var b struct {
		// A number or, as every seq in the API's own answers is spelled
		// (protojson writes 64-bit integers as strings), a string.
		Seq json.Number `json:"seq"`
	}
	if err := decode(r, &b); err != nil {
		return err
	}
	seq, err := strconv.ParseUint(string(b.Seq), 10, 64)
	if b.Seq == "" || err != nil || seq == 0 {
		return wire.Errorf(wire.CodeInvalid, "seq is required: read up to this seq (a positive integer, as a number or a string)")
	}
	conv := r.PathValue("conv")
	rep, err := a.call(r.Context(), c, &parleyv1.IngressRecord{ConversationId: conv,
		Op: &parleyv1.IngressRecord_Read{Read: &parleyv1.Read{ConversationId: conv, Seq: seq}}})
	if err != nil {
		return err
	}
	// The stored pointer, stored before the answer (read-your-writes): it
	// may be above seq (an earlier read went further) or below it (a seq
	// beyond the head is clamped to the head).
	readSeq := seq
	if rc := rep.GetReceipt(); rc != nil {
		readSeq = rc.GetSeq()
	}
	writeJSON(w, http.StatusOK, map[string]any{"conversation_id": conv, "read_seq": readSeq})
	return nil
}

func (a *API) presence(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	users := r.URL.Query()["user"]
	if len(users) == 0 {
		return wire.Errorf(wire.CodeInvalid, "at least one user query parameter is required (?user=alice&user=bob)")
	}
	if len(users) > MaxPresenceUsers {
		return wire.Errorf(wire.CodeInvalid, "at most %d users per request, got %d", MaxPresenceUsers, len(users))
	}
	for _, u := range users {
		if !auth.ValidID(u) {
			return wire.Errorf(wire.CodeInvalid, "user %q is not a valid user id", u)
		}
	}
	// Public presence still hides users who block the caller.
	check := a.Queries.PresenceVisible
	if a.PresencePublic {
		check = a.Queries.PresenceUnblocked
	}
	visible, err := check(r.Context(), c.UserID, users)
	if err != nil {
		return err
	}
	ps, err := a.Presence.Get(r.Context(), users)
	if err != nil {
		return fmt.Errorf("presence of %d users: %w", len(users), err)
	}
	out := make([]json.RawMessage, 0, len(users))
	for _, u := range users {
		p := ps[u]
		if !visible[u] {
			p = nil // no conversation in common, or u blocks the caller: unknown, as for a user nobody knows of
		}
		if p == nil {
			p = &parleyv1.Presence{UserId: u}
		}
		out = append(out, protoJSON(p))
	}
	writeJSON(w, http.StatusOK, map[string]any{"presence": out})
	return nil
}
