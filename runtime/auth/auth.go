// Package auth verifies the JWTs that clients present to the gateway and, in
// dev mode, issues them.
//
// Two verifiers exist. In dev mode NewHMACVerifier checks HS256 tokens signed
// with a per-install secret (LoadOrCreateDevSecret) that DevIssuer mints. In
// production NewJWKSVerifier checks RS256, ES256 or EdDSA tokens from an
// identity provider against its JSON Web Key Set. Both return *wire.Error
// with code wire.CodeUnauthenticated or wire.CodeTokenExpired, whose message
// names the problem, because clients branch on the code (refresh the token or
// give up) and people read the message.
package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleychat/parley/runtime/wire"
)

// Claims are what Parley takes from a verified token.
type Claims struct {
	// UserID is the token's "sub" claim; ValidID holds for it.
	UserID string
	// DeviceID is the token's "did" claim, or DefaultDeviceID when the
	// token has none (identity providers rarely know about devices).
	DeviceID string
	// HomeRegion is the token's "home_region" claim ("" when absent): the
	// user's home region in a multi-region deployment
	// (docs/multi-region.md); ValidRegion holds for it.
	HomeRegion string
	// ExpiresAt is the token's "exp" claim (every accepted token has one).
	// The gateway closes a connection whose token expires while it is open.
	ExpiresAt time.Time
}

// Verifier checks a token and returns its claims.
type Verifier interface {
	// Verify returns the claims of a valid token. Otherwise it returns a
	// *wire.Error: wire.CodeTokenExpired when the token's only fault is that
	// exp has passed (a fresh token will do), wire.CodeUnauthenticated for
	// anything else (no token, malformed, forged, wrong algorithm, unknown
	// key, wrong issuer or audience, not yet valid, bad subject or device).
	// A JWKS verifier may also return ctx's error when ctx ends while it
	// refreshes its keys for an unknown kid.
	Verify(ctx context.Context, token string) (Claims, error)
}

// Leeway is the clock skew tolerated on exp and nbf: a token counts as
// expired only Leeway after its exp and is valid from Leeway before its nbf.
// It is small because it lengthens the life of every token, and 30s covers
// the drift of NTP-synchronised hosts.
const Leeway = 30 * time.Second

// MaxTokenBytes bounds the token length accepted, so that a client cannot make
// the server decode megabytes of base64 before it is rejected. Real tokens
// are well under 2 KiB.
const MaxTokenBytes = 8 << 10

// DefaultDeviceID is the device of a token without a "did" claim, and of a
// dev token issued without one.
const DefaultDeviceID = "default"

// MaxIDBytes is the longest user or device id, in bytes (wire.MaxIDBytes).
const MaxIDBytes = wire.MaxIDBytes

// ValidID reports whether s is a valid user or device id (wire.ValidID).
func ValidID(s string) bool { return wire.ValidID(s) }

// BearerToken returns the token of an HTTP request: the credentials of an
// "Authorization: Bearer <token>" header (scheme case-insensitive, RFC 6750
// §2.1), else the access_token query parameter (RFC 6750 §2.3), which
// browsers need because they cannot set headers on a WebSocket handshake.
// It returns "" when there is neither.
func BearerToken(r *http.Request) string {
	if h := strings.TrimSpace(r.Header.Get("Authorization")); h != "" {
		scheme, cred, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			if tok := strings.TrimSpace(cred); tok != "" {
				return tok
			}
		}
	}
	if r.URL == nil {
		return ""
	}
	return r.URL.Query().Get("access_token")
}

// tokenClaims is the JSON shape of a Parley token's payload.
type tokenClaims struct {
	jwt.RegisteredClaims
	// DeviceID is Parley's private "did" claim.
	DeviceID string `json:"did,omitempty"`
	// HomeRegion is Parley's private "home_region" claim.
	HomeRegion string `json:"home_region,omitempty"`
}

// verifier is the part shared by the HMAC and JWKS verifiers: one parser
// with the accepted algorithms, issuer and audience, and a key lookup.
type verifier struct {
	algs     []string
	issuer   string
	audience string
	parser   *jwt.Parser
	keyfunc  func(ctx context.Context) jwt.Keyfunc
}

func newVerifier(algs []string, issuer, audience string, keyfunc func(context.Context) jwt.Keyfunc) *verifier {
	return &verifier{
		algs:     algs,
		issuer:   issuer,
		audience: audience,
		keyfunc:  keyfunc,
		parser: jwt.NewParser(
			jwt.WithValidMethods(algs),
			jwt.WithExpirationRequired(),
			jwt.WithIssuer(issuer),
			jwt.WithAudience(audience),
			jwt.WithLeeway(Leeway),
		),
	}
}

func unauthenticated(format string, args ...any) *wire.Error {
	return wire.Errorf(wire.CodeUnauthenticated, format, args...)
}

// Verify implements Verifier.
func (v *verifier) Verify(ctx context.Context, token string) (Claims, error) {
	if token == "" {
		return Claims{}, unauthenticated("no token: send Authorization: Bearer <token> or the access_token query parameter")
	}
	if len(token) > MaxTokenBytes {
		return Claims{}, unauthenticated("token is %d bytes, over the limit of %d", len(token), MaxTokenBytes)
	}
	var tc tokenClaims
	t, err := v.parser.ParseWithClaims(token, &tc, v.keyfunc(ctx))
	if err != nil {
		return Claims{}, v.explain(ctx, t, &tc, err)
	}
	if !ValidID(tc.Subject) {
		return Claims{}, unauthenticated("token subject %.80q is not a valid user id (1..64 bytes of A-Za-z0-9._@-)", tc.Subject)
	}
	device := tc.DeviceID
	if device == "" {
		device = DefaultDeviceID
	} else if !ValidID(device) {
		return Claims{}, unauthenticated("token device (did) %.80q is not a valid device id (1..64 bytes of A-Za-z0-9._@-)", device)
	}
	if tc.HomeRegion != "" && !ValidRegion(tc.HomeRegion) {
		return Claims{}, unauthenticated("token home_region %.80q is not a valid region name (1..63 bytes of a-z0-9-)", tc.HomeRegion)
	}
	return Claims{UserID: tc.Subject, DeviceID: device, HomeRegion: tc.HomeRegion, ExpiresAt: tc.ExpiresAt.Time}, nil
}

// ValidRegion reports whether name is a well-formed region name: 1..63
// bytes of a-z, 0-9 and '-', starting with a letter (a DNS label, as the
// ChatCluster's region names are). Whether the region exists is the
// gateway's question, not the token's.
func ValidRegion(name string) bool {
	if len(name) == 0 || len(name) > 63 || name[0] < 'a' || name[0] > 'z' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// explain turns a jwt parse error into a *wire.Error naming the problem. t
// and tc are whatever the parser could decode (t may be nil).
func (v *verifier) explain(ctx context.Context, t *jwt.Token, tc *tokenClaims, err error) error {
	// The key lookup returns *wire.Error itself, with the most precise message.
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("verify token: %w", ctxErr)
		}
	}
	if errors.Is(err, jwt.ErrTokenMalformed) {
		return unauthenticated("malformed token: %s", strings.TrimPrefix(err.Error(), jwt.ErrTokenMalformed.Error()+": "))
	}
	// Name the algorithm before the signature: "none" and algorithm
	// confusion attempts should be reported as such.
	if t != nil {
		alg, _ := t.Header["alg"].(string)
		if !slices.Contains(v.algs, alg) {
			return unauthenticated("algorithm %.20q is not accepted (accepted: %s)", alg, strings.Join(v.algs, ", "))
		}
	}
	switch {
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if errors.Is(err, jwt.ErrInvalidKeyType) {
			return unauthenticated("the key of the token does not fit its algorithm")
		}
		return unauthenticated("token signature is invalid")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return unauthenticated("token cannot be verified: %v", err)
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return v.explainClaims(tc, err)
	}
	return unauthenticated("invalid token: %v", err)
}

// explainClaims names the first claim problem. Expiry comes last: a token
// that is both expired and, say, for another audience must not send the
// client off to refresh it.
func (v *verifier) explainClaims(tc *tokenClaims, err error) error {
	switch {
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && tc.ExpiresAt == nil:
		return unauthenticated("token has no exp claim; only tokens that expire are accepted")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && tc.Issuer == "":
		return unauthenticated("token has no iss claim; want %q", v.issuer)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && (len(tc.Audience) == 0 || len(tc.Audience) == 1 && tc.Audience[0] == ""):
		return unauthenticated("token has no aud claim; want %q", v.audience)
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return unauthenticated("token issuer %.80q is not the expected %q", tc.Issuer, v.issuer)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return unauthenticated("token audience %.80q does not include %q", strings.Join(tc.Audience, ","), v.audience)
	case errors.Is(err, jwt.ErrTokenNotValidYet) && tc.NotBefore != nil:
		return unauthenticated("token is not valid before %s (nbf)", tc.NotBefore.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued) && tc.IssuedAt != nil:
		return unauthenticated("token is issued in the future (iat %s)", tc.IssuedAt.UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrTokenExpired) && tc.ExpiresAt != nil:
		return wire.Errorf(wire.CodeTokenExpired, "token expired at %s", tc.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return unauthenticated("invalid token claims: %v", err)
}
