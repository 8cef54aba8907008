package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/parleychat/parley/runtime/auth"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// DefaultDevTokenTTL is the lifetime of tokens from POST /v1/dev/token.
const DefaultDevTokenTTL = 24 * time.Hour

// mediaUpload serves POST /v1/media/uploads {mime, size} with a presigned
// PUT (media.Upload): upload_url, method, headers, object_url, key, mime,
// size, expires_at (Unix ms). invalid for a type that is not allowed or a
// size < 1, too_large over the maximum, unavailable without a media store.
func (a *API) mediaUpload(w http.ResponseWriter, r *http.Request, c auth.Claims) error {
	if a.Media == nil {
		return wire.Errorf(wire.CodeUnavailable, "this server has no media store configured")
	}
	var b struct {
		Mime string `json:"mime"`
		Size int64  `json:"size"`
	}
	if err := decode(r, &b); err != nil {
		return err
	}
	up, err := a.Media.Presign(r.Context(), c.UserID, b.Mime, b.Size, requestOrigin(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, up)
	return nil
}

// requestOrigin is the scheme and host the client reached this server at.
// The embedded media store signs upload URLs for it; only the uploader
// itself is affected by what it claims.
func requestOrigin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
		scheme = p
	}
	if r.Host == "" {
		return ""
	}
	return scheme + "://" + r.Host
}

// checkMedia returns m as the media store has it, or the reason it may not
// be sent (see media.Service.Check). Without a store, media is refused.
func (a *API) checkMedia(ctx context.Context, userID string, m *parleyv1.Media) (*parleyv1.Media, error) {
	if a.Media == nil {
		return nil, wire.Errorf(wire.CodeInvalid, "this server accepts no media messages (no media store configured)")
	}
	return a.Media.Check(ctx, userID, m)
}

// devToken serves POST /v1/dev/token {"user", "device"} → {"token",
// "user", "device", "expires_at"} (Unix ms). It exists only in dev mode (the
// server signs tokens with its own secret): it lets anyone be anyone, which
// is the point of dev mode and why production auth (JWKS) has no such route.
func (a *API) devToken(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	var b struct {
		User   string `json:"user"`
		Device string `json:"device"`
	}
	if err := decode(r, &b); err != nil {
		a.writeError(w, err)
		return
	}
	if b.Device == "" {
		b.Device = "web"
	}
	for _, f := range []struct{ name, v string }{{"user", b.User}, {"device", b.Device}} {
		if !auth.ValidID(f.v) {
			a.writeError(w, wire.Errorf(wire.CodeInvalid, "%s %.80q must be 1..%d characters of A-Z a-z 0-9 . _ @ -", f.name, f.v, auth.MaxIDBytes))
			return
		}
	}
	ttl := a.DevTokenTTL
	if ttl <= 0 {
		ttl = DefaultDevTokenTTL
	}
	tok, err := a.DevIssuer.Issue(b.User, b.Device, ttl)
	if err != nil {
		a.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"token": tok, "user": b.User, "device": b.Device, "expires_at": time.Now().Add(ttl).UnixMilli(),
	})
}
