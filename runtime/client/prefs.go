package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// Mute mutes conv for the user until untilMs (Unix milliseconds; 0: until
// Unmute): no offline push for it, and the inbox marks it muted
// (ConversationState.muted). Retried like a send (a repeat is harmless).
// Errors: invalid (an end not in the future), not_found, not_member.
func (c *Client) Mute(ctx context.Context, conv string, untilMs int64) error {
	return c.pref(ctx, &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Mute{Mute: &parleyv1.Mute{ConversationId: conv, Until: untilMs}}}, "mute "+conv)
}

// Unmute ends the user's mute of conv; none is not an error.
func (c *Client) Unmute(ctx context.Context, conv string) error {
	return c.pref(ctx, &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Mute{Mute: &parleyv1.Mute{ConversationId: conv, Remove: true}}}, "unmute "+conv)
}

// Block blocks user: user can no longer start or write in a DM with this
// user (blocked) and reads its presence as unknown. Errors: invalid (the
// user itself, a malformed id).
func (c *Client) Block(ctx context.Context, user string) error {
	return c.pref(ctx, &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Block{Block: &parleyv1.Block{UserId: user}}}, "block "+user)
}

// Unblock lifts the user's block of user; none is not an error.
func (c *Client) Unblock(ctx context.Context, user string) error {
	return c.pref(ctx, &parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_Block{Block: &parleyv1.Block{UserId: user, Remove: true}}}, "unblock "+user)
}

// pref sends a mute or block frame, retrying as SendMessage does (both are
// idempotent).
func (c *Client) pref(ctx context.Context, f *parleyv1.ClientFrame, what string) error {
	_, err := c.retrying(ctx, what, func() *parleyv1.ClientFrame { return &parleyv1.ClientFrame{Body: f.Body} })
	return err
}

// Mute mutes conv until untilMs (PUT /v1/conversations/{conv}/mute; 0:
// until Unmute). One attempt; errors as Client.Mute.
func (r *REST) Mute(ctx context.Context, conv string, untilMs int64) error {
	var body any
	if untilMs != 0 {
		body = map[string]int64{"until": untilMs}
	}
	return r.do(ctx, http.MethodPut, mutePath(conv), nil, body, nil)
}

// Unmute ends the mute of conv (DELETE /v1/conversations/{conv}/mute).
func (r *REST) Unmute(ctx context.Context, conv string) error {
	return r.do(ctx, http.MethodDelete, mutePath(conv), nil, nil, nil)
}

// Block blocks user (PUT /v1/blocks/{user}). Errors as Client.Block.
func (r *REST) Block(ctx context.Context, user string) error {
	return r.do(ctx, http.MethodPut, "/v1/blocks/"+url.PathEscape(user), nil, nil, nil)
}

// Unblock lifts the block of user (DELETE /v1/blocks/{user}).
func (r *REST) Unblock(ctx context.Context, user string) error {
	return r.do(ctx, http.MethodDelete, "/v1/blocks/"+url.PathEscape(user), nil, nil, nil)
}

// Blocks returns the users the user blocks, sorted (GET /v1/blocks).
func (r *REST) Blocks(ctx context.Context) ([]string, error) {
	var out struct {
		Blocks []string `json:"blocks"`
	}
	if err := r.do(ctx, http.MethodGet, "/v1/blocks", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("blocks: %w", err)
	}
	return out.Blocks, nil
}

func mutePath(conv string) string { return "/v1/conversations/" + url.PathEscape(conv) + "/mute" }
