package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// REST calls Parley's REST API (docs/design.md §6): JSON with a bearer
// token. Every error the server names comes back as a *wire.Error (its
// {"error":{"code","message"}} body); other failures are wrapped with the
// method and path. Set the fields before use; a REST is then safe for
// concurrent use.
type REST struct {
	// BaseURL is the server root, "http://host:port" (ws:// and wss:// are
	// accepted as http:// and https://).
	BaseURL string
	// Token is the bearer JWT.
	Token string
	// HTTP is the HTTP client, default one with a 30s timeout.
	HTTP *http.Client
}

// NewREST returns a REST client of the server at baseURL with token.
func NewREST(baseURL, token string) *REST {
	b := strings.TrimRight(baseURL, "/")
	switch {
	case strings.HasPrefix(b, "ws://"):
		b = "http://" + strings.TrimPrefix(b, "ws://")
	case strings.HasPrefix(b, "wss://"):
		b = "https://" + strings.TrimPrefix(b, "wss://")
	case !strings.Contains(b, "://"):
		b = "http://" + b
	}
	b = strings.TrimSuffix(b, "/v1/ws")
	return &REST{BaseURL: b, Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// Receipt is one member's pointers in a conversation.
type Receipt struct {
	UserID       string `json:"user_id"`
	DeliveredSeq uint64 `json:"delivered_seq"`
	ReadSeq      uint64 `json:"read_seq"`
}

var restJSON = protojson.UnmarshalOptions{DiscardUnknown: true}

// do sends one request and decodes a 2xx JSON body into out (when non-nil).
func (r *REST) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	u := r.BaseURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s %s: encode body: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+r.Token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := r.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxServerFrame))
	if err != nil {
		return fmt.Errorf("%s %s: read body: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return restError(resp.StatusCode, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode body: %w", method, path, err)
	}
	return nil
}

// restError turns an error response into a *wire.Error.
func restError(status int, body []byte) *wire.Error {
	var e struct {
		Error struct {
			Code         string `json:"code"`
			Message      string `json:"message"`
			RetryAfterMs uint32 `json:"retry_after_ms"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
		return &wire.Error{Code: e.Error.Code, Message: e.Error.Message, RetryAfterMs: e.Error.RetryAfterMs}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200]
	}
	return &wire.Error{Code: codeForStatus(status), Message: fmt.Sprintf("HTTP %d: %s", status, msg)}
}

// codeForStatus inverts wire.HTTPStatus for bodies without an error code.
func codeForStatus(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return wire.CodeUnauthenticated
	case http.StatusForbidden:
		return wire.CodeForbidden
	case http.StatusNotFound:
		return wire.CodeNotFound
	case http.StatusRequestEntityTooLarge:
		return wire.CodeTooLarge
	case http.StatusTooManyRequests:
		return wire.CodeRateLimited
	case http.StatusBadRequest, http.StatusMethodNotAllowed:
		return wire.CodeInvalid
	case http.StatusConflict:
		return wire.CodeGroupFull
	case http.StatusServiceUnavailable:
		return wire.CodeUnavailable
	case http.StatusGatewayTimeout:
		return wire.CodeTimeout
	}
	return wire.CodeInternal
}

// decodeProto decodes protojson (proto field names) into m; a JSON null or
// an absent value leaves m empty.
func decodeProto(raw json.RawMessage, m proto.Message) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return restJSON.Unmarshal(raw, m)
}

// Send sends a text message over REST (POST /v1/messages), with the same
// idempotency as the WebSocket send: a retry with the same clientMsgID
// returns the first outcome. An empty clientMsgID gets a fresh one. It makes
// one attempt; errors as Client.SendMessage.
func (r *REST) Send(ctx context.Context, conv, clientMsgID, text string) (*parleyv1.SendOk, error) {
	return r.SendReply(ctx, conv, clientMsgID, text, 0)
}

// SendReply is Send as a reply to the message at seq replyTo (0: not a
// reply); the answer carries the stored quote (SendOk.reply_to).
func (r *REST) SendReply(ctx context.Context, conv, clientMsgID, text string, replyTo uint64) (*parleyv1.SendOk, error) {
	if clientMsgID == "" {
		clientMsgID = NewClientMsgID()
	}
	var raw json.RawMessage
	body := map[string]any{"conversation_id": conv, "client_msg_id": clientMsgID, "text": text}
	if replyTo > 0 {
		body["reply_to"] = replyTo
	}
	if err := r.do(ctx, http.MethodPost, "/v1/messages", nil, body, &raw); err != nil {
		return nil, err
	}
	ok := &parleyv1.SendOk{}
	if err := decodeProto(raw, ok); err != nil {
		return nil, fmt.Errorf("POST /v1/messages: decode send_ok: %w", err)
	}
	if ok.GetSeq() == 0 {
		// 202 send_accepted (docs/multi-region.md): the same fields but no seq.
		acc := &parleyv1.SendAccepted{}
		if err := decodeProto(raw, acc); err == nil && acc.GetClientMsgId() != "" {
			return nil, &AcceptedError{Accepted: acc}
		}
	}
	return ok, nil
}

// CreateGroup creates a group titled title with members (the caller is
// added as its owner) and returns its conversation id ("g:..."). Errors:
// invalid, group_full.
func (r *REST) CreateGroup(ctx context.Context, title string, members []string) (string, error) {
	var out struct {
		Conversation struct {
			ID string `json:"id"`
		} `json:"conversation"`
	}
	if members == nil {
		members = []string{}
	}
	if err := r.do(ctx, http.MethodPost, "/v1/conversations", nil, map[string]any{"title": title, "members": members}, &out); err != nil {
		return "", err
	}
	if out.Conversation.ID == "" {
		return "", fmt.Errorf("POST /v1/conversations: reply without conversation id")
	}
	return out.Conversation.ID, nil
}

// AddMembers adds users to group conv and returns the MEMBER_ADDED event
// (sequenced in the conversation log). Errors: not_member, forbidden,
// group_full, not_found.
func (r *REST) AddMembers(ctx context.Context, conv string, users []string) (*parleyv1.Message, error) {
	return r.memberEvent(ctx, http.MethodPost, "/v1/conversations/"+url.PathEscape(conv)+"/members", map[string]any{"user_ids": users})
}

// RemoveMember removes user from group conv (a member may remove itself:
// leave; the owner removes anyone, an admin members only) and returns the
// MEMBER_REMOVED event. Errors: not_member, forbidden, not_found.
func (r *REST) RemoveMember(ctx context.Context, conv, user string) (*parleyv1.Message, error) {
	return r.memberEvent(ctx, http.MethodDelete, memberPath(conv, user), nil)
}

// Leave removes the user (the token's subject, userID) from group conv and
// returns the MEMBER_REMOVED event. When the owner leaves, ownership passes
// to the longest-standing admin, else member (an OWNER_CHANGED event
// follows in the log); the last member leaving leaves the group empty and
// read-only. Errors: not_member, not_found.
func (r *REST) Leave(ctx context.Context, conv, userID string) (*parleyv1.Message, error) {
	return r.RemoveMember(ctx, conv, userID)
}

// SetRole gives user, a member of group conv, the role "admin" or "member"
// (PATCH /v1/conversations/{conv}/members/{user}) and returns the
// ROLE_CHANGED event, or when the member has that role already a
// ROLE_CHANGED message with seq 0. Only the owner may. One attempt; errors
// as Client.SetRole.
func (r *REST) SetRole(ctx context.Context, conv, user, role string) (*parleyv1.Message, error) {
	return r.memberEvent(ctx, http.MethodPatch, memberPath(conv, user), map[string]string{"role": role})
}

// Rename sets group conv's title (PATCH /v1/conversations/{conv}) and
// returns the RENAMED event, or when the title is already this one a
// RENAMED message with seq 0. The owner and admins may. One attempt;
// errors as Client.Rename.
func (r *REST) Rename(ctx context.Context, conv, title string) (*parleyv1.Message, error) {
	return r.memberEvent(ctx, http.MethodPatch, "/v1/conversations/"+url.PathEscape(conv), map[string]string{"title": title})
}

func memberPath(conv, user string) string {
	return "/v1/conversations/" + url.PathEscape(conv) + "/members/" + url.PathEscape(user)
}

// Edit replaces the text of the user's message at seq of conv (PATCH
// /v1/messages/{conv}/{seq}) and returns the EDITED event; a retry of an
// edit already applied returns the same event. One attempt; errors as
// Client.Edit.
func (r *REST) Edit(ctx context.Context, conv string, seq uint64, text string) (*parleyv1.Message, error) {
	return r.memberEvent(ctx, http.MethodPatch, messagePath(conv, seq), map[string]string{"text": text})
}

// Delete deletes the message at seq of conv (DELETE
// /v1/messages/{conv}/{seq}) and returns the DELETED event; for a message
// already deleted, the event that deleted it. One attempt; errors as
// Client.Delete.
func (r *REST) Delete(ctx context.Context, conv string, seq uint64) (*parleyv1.Message, error) {
	return r.memberEvent(ctx, http.MethodDelete, messagePath(conv, seq), nil)
}

// React adds the user's reaction emoji to the message at seq of conv (POST
// /v1/messages/{conv}/{seq}/reactions) and returns the REACTION event, or
// when the user already has it a REACTION message with seq 0 and the
// current counts. One attempt; errors as Client.React.
func (r *REST) React(ctx context.Context, conv string, seq uint64, emoji string) (*parleyv1.Message, error) {
	return r.memberEvent(ctx, http.MethodPost, messagePath(conv, seq)+"/reactions", map[string]string{"emoji": emoji})
}

// Unreact removes the user's reaction emoji from the message at seq of conv
// (DELETE /v1/messages/{conv}/{seq}/reactions), as React adds it.
func (r *REST) Unreact(ctx context.Context, conv string, seq uint64, emoji string) (*parleyv1.Message, error) {
	return r.memberEvent(ctx, http.MethodDelete, messagePath(conv, seq)+"/reactions", map[string]string{"emoji": emoji})
}

func messagePath(conv string, seq uint64) string {
	return "/v1/messages/" + url.PathEscape(conv) + "/" + strconv.FormatUint(seq, 10)
}

func (r *REST) memberEvent(ctx context.Context, method, path string, body any) (*parleyv1.Message, error) {
	var out struct {
		Event json.RawMessage `json:"event"`
	}
	if err := r.do(ctx, method, path, nil, body, &out); err != nil {
		return nil, err
	}
	ev := &parleyv1.Message{}
	if err := decodeProto(out.Event, ev); err != nil {
		return nil, fmt.Errorf("%s %s: decode event: %w", method, path, err)
	}
	return ev, nil
}

// Inbox returns every conversation of the user with its head, read pointer,
// unread count and last message (GET /v1/conversations).
func (r *REST) Inbox(ctx context.Context) ([]*parleyv1.ConversationState, error) {
	var out struct {
		Conversations []json.RawMessage `json:"conversations"`
	}
	if err := r.do(ctx, http.MethodGet, "/v1/conversations", nil, nil, &out); err != nil {
		return nil, err
	}
	states := make([]*parleyv1.ConversationState, 0, len(out.Conversations))
	for _, raw := range out.Conversations {
		st := &parleyv1.ConversationState{}
		if err := decodeProto(raw, st); err != nil {
			return nil, fmt.Errorf("GET /v1/conversations: decode conversation: %w", err)
		}
		states = append(states, st)
	}
	return states, nil
}

// History returns a page of conv's log, as Client.History (0 means not
// set for before and after).
func (r *REST) History(ctx context.Context, conv string, before, after uint64, limit uint32) (*parleyv1.HistoryResult, error) {
	return r.history(ctx, conv, optSeq(before), optSeq(after), limit)
}

// HistoryAfter returns the messages of conv with seq > after, oldest first,
// after = 0 included (from the very start), as Client.HistoryAfter.
func (r *REST) HistoryAfter(ctx context.Context, conv string, after uint64, limit uint32) (*parleyv1.HistoryResult, error) {
	return r.history(ctx, conv, nil, &after, limit)
}

func (r *REST) history(ctx context.Context, conv string, before, after *uint64, limit uint32) (*parleyv1.HistoryResult, error) {
	q := url.Values{}
	if before != nil {
		q.Set("before", strconv.FormatUint(*before, 10))
	}
	if after != nil {
		q.Set("after", strconv.FormatUint(*after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.FormatUint(uint64(limit), 10))
	}
	var raw json.RawMessage
	path := "/v1/history/" + url.PathEscape(conv)
	if err := r.do(ctx, http.MethodGet, path, q, nil, &raw); err != nil {
		return nil, err
	}
	res := &parleyv1.HistoryResult{}
	if err := decodeProto(raw, res); err != nil {
		return nil, fmt.Errorf("GET %s: decode history: %w", path, err)
	}
	return res, nil
}

// ReadBy returns the receipt pointers of conv's members, to tell who has
// received and read message seq (GET /v1/conversations/{id}/receipts).
func (r *REST) ReadBy(ctx context.Context, conv string, seq uint64) ([]Receipt, error) {
	var out struct {
		Receipts []Receipt `json:"receipts"`
	}
	q := url.Values{"seq": {strconv.FormatUint(seq, 10)}}
	if err := r.do(ctx, http.MethodGet, "/v1/conversations/"+url.PathEscape(conv)+"/receipts", q, nil, &out); err != nil {
		return nil, err
	}
	return out.Receipts, nil
}

// Member is one member of a conversation as GET
// /v1/conversations/{id}/members answers: role "owner" or "member".
type Member struct {
	UserID    string `json:"user_id"`
	Role      string `json:"role"`
	JoinedSeq uint64 `json:"joined_seq"`
}

// Members returns conv's current members, the owner first. Errors:
// not_member, not_found.
func (r *REST) Members(ctx context.Context, conv string) ([]Member, error) {
	var out struct {
		Members []Member `json:"members"`
	}
	if err := r.do(ctx, http.MethodGet, "/v1/conversations/"+url.PathEscape(conv)+"/members", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Members, nil
}

// Read moves the user's read pointer in conv up to seq.
func (r *REST) Read(ctx context.Context, conv string, seq uint64) error {
	return r.do(ctx, http.MethodPost, "/v1/conversations/"+url.PathEscape(conv)+"/read", nil, map[string]uint64{"seq": seq}, nil)
}

// Presence returns the presence of users (at most 100), in the order asked.
func (r *REST) Presence(ctx context.Context, users []string) ([]*parleyv1.Presence, error) {
	var out struct {
		Presence []json.RawMessage `json:"presence"`
	}
	if err := r.do(ctx, http.MethodGet, "/v1/presence", url.Values{"user": users}, nil, &out); err != nil {
		return nil, err
	}
	ps := make([]*parleyv1.Presence, 0, len(out.Presence))
	for _, raw := range out.Presence {
		p := &parleyv1.Presence{}
		if err := decodeProto(raw, p); err != nil {
			return nil, fmt.Errorf("GET /v1/presence: decode presence: %w", err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}
