package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// mute is PUT (remove false) or DELETE (remove true)
// /v1/conversations/{conv}/mute, the WebSocket mute. PUT takes no body (mute
// until unmuted) or {"until": <Unix ms>} (a number or a string). Both answer
// 200 {"conversation_id", "muted", "until"} as stored. Like a change, it
// spends a send token.
func (a *API) mute(remove bool) handler {
	return func(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
		m := &parleyv1.Mute{ConversationId: r.PathValue("conv"), Remove: remove}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return wire.Errorf(wire.CodeTooLarge, "request body is over %d bytes", MaxBodyBytes)
		}
		if len(bytes.TrimSpace(body)) > 0 {
			var b struct {
				Until json.Number `json:"until"`
			}
			if err := decodeBody(body, &b); err != nil {
				return err
			}
			if b.Until != "" {
				if m.Until, err = strconv.ParseInt(string(b.Until), 10, 64); err != nil || m.Until < 0 {
					return wire.Errorf(wire.CodeInvalid, "until must be Unix milliseconds (a non-negative integer, as a number or a string)")
				}
			}
		}
		if err := a.prefAllowed(c); err != nil {
			return err
		}
		got, err := a.Queries.SetMute(r.Context(), c.UserID, m)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"conversation_id": got.GetConversationId(), "muted": !got.GetRemove(), "until": got.GetUntil()})
		return nil
	}
}

// block is PUT (remove false) or DELETE (remove true) /v1/blocks/{user},
// the WebSocket block, answered 200 {"user_id", "blocked"}. It spends a
// send token.
func (a *API) block(remove bool) handler {
	return func(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
		b := &parleyv1.Block{UserId: r.PathValue("user"), Remove: remove}
		if err := rules.ValidateBlock(c.UserID, b); err != nil {
			return err
		}
		if err := a.prefAllowed(c); err != nil {
			return err
		}
		got, err := a.Queries.SetBlock(r.Context(), c.UserID, b)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, map[string]any{"user_id": got.GetUserId(), "blocked": !got.GetRemove()})
		return nil
	}
}

// blocks is GET /v1/blocks: {"blocks": [the users the caller blocks, sorted]}.
func (a *API) blocks(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	users, err := a.Queries.Blocks(r.Context(), c.UserID)
	if err != nil {
		return err
	}
	if users == nil {
		users = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"blocks": users})
	return nil
}

// prefAllowed spends one of the caller's send budget on a mute or block.
func (a *API) prefAllowed(c auth.Claims) error {
	if a.Limits == nil {
		return nil
	}
	if ok, retry := a.Limits.Allow(c.UserID); !ok {
		return wire.RateLimited("send rate exceeded (mutes and blocks count as sends)", retry)
	}
	return nil
}
