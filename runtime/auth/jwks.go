package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// JWKS verifier defaults and limits.
const (
	// DefaultJWKSRefresh is how often a JWKS URL is fetched again when
	// JWKSConfig.Refresh is zero. Keys that appear in between are picked up
	// sooner by the unknown-kid refetch (at most once per JWKSUnknownKIDRefetch).
	DefaultJWKSRefresh = time.Hour
	// JWKSFetchTimeout bounds one fetch of a JWKS URL.
	JWKSFetchTimeout = 10 * time.Second
	// JWKSUnknownKIDRefetch is the least time between two fetches caused by
	// tokens with an unknown kid, so that made-up kids cannot hammer the
	// identity provider.
	JWKSUnknownKIDRefetch = time.Minute
	// MinRSABits is the smallest RSA key accepted (NIST SP 800-131A).
	MinRSABits = 2048
)

// jwksAlgs are the algorithms a JWKS verifier accepts: asymmetric only, so
// that no public key can ever be used as an HMAC secret.
var jwksAlgs = []string{
	jwt.SigningMethodRS256.Alg(),
	jwt.SigningMethodES256.Alg(),
	jwt.SigningMethodEdDSA.Alg(),
}

// JWKSConfig configures NewJWKSVerifier.
type JWKSConfig struct {
	// File is the path of a JWK Set JSON file, read once at construction.
	File string
	// URL is a JWK Set endpoint (an identity provider's jwks_uri), fetched
	// at construction and every Refresh after. At least one of File and URL
	// is required; with both, a kid is looked up in File first.
	URL string
	// Issuer is the required "iss" of tokens. Required.
	Issuer string
	// Audience must be among the tokens' "aud". Required.
	Audience string
	// Refresh is the interval between background fetches of URL;
	// zero means DefaultJWKSRefresh.
	Refresh time.Duration
}

// NewJWKSVerifier returns a production verifier for tokens signed with RS256,
// ES256 or EdDSA by a key of a JWK Set, chosen by the token's "kid" header.
// It checks iss and aud, requires exp, and allows Leeway on exp and nbf.
//
// With a URL it fetches the set before returning (failing if that fetch
// fails, times out after JWKSFetchTimeout, or finds no keys) and then
// refreshes it in a goroutine that stops when ctx ends; a token with an
// unknown kid also triggers a refetch, rate-limited by JWKSUnknownKIDRefetch.
// It returns an error for an incomplete config or an unreadable key set.
func NewJWKSVerifier(ctx context.Context, cfg JWKSConfig) (Verifier, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("jwks verifier: Issuer is required: an identity provider signs tokens for all its tenants and apps with the same keys, so without an issuer check a token minted by any of them would be accepted")
	}
	if cfg.Audience == "" {
		return nil, errors.New("jwks verifier: Audience is required: without an audience check, a token the identity provider issued for another service would be accepted here (and a token for Parley could be replayed elsewhere)")
	}
	if cfg.File == "" && cfg.URL == "" {
		return nil, errors.New("jwks verifier: set File or URL (or both) to the JWK Set of the identity provider")
	}
	if cfg.Refresh < 0 {
		return nil, fmt.Errorf("jwks verifier: Refresh %s is negative", cfg.Refresh)
	}

	var given jwkset.Storage
	if cfg.File != "" {
		raw, err := os.ReadFile(cfg.File)
		if err != nil {
			return nil, fmt.Errorf("jwks verifier: read JWKS file: %w", err)
		}
		kf, err := keyfunc.NewJWKSetJSON(raw)
		if err != nil {
			return nil, fmt.Errorf("jwks verifier: parse JWKS file %s: %w", cfg.File, err)
		}
		given = kf.Storage()
	}

	v := &jwksVerifier{storage: given, stop: func() {}}
	if cfg.URL != "" {
		refresh := cfg.Refresh
		if refresh == 0 {
			refresh = DefaultJWKSRefresh
		}
		// The refresh goroutine starts before the first fetch; cancelling
		// rctx stops it when construction fails.
		rctx, cancel := context.WithCancel(ctx)
		noErrorOnFirstFetch := false
		kf, err := keyfunc.NewDefaultOverrideCtx(rctx, []string{cfg.URL}, keyfunc.Override{
			Given:                     given,
			Client:                    &http.Client{Timeout: JWKSFetchTimeout},
			HTTPTimeout:               JWKSFetchTimeout,
			NoErrorReturnFirstHTTPReq: &noErrorOnFirstFetch,
			RefreshInterval:           refresh,
			// An unknown kid waits at most this long for the rate limiter
			// and the refetch; a wait that would be longer fails at once.
			RateLimitWaitMax:  JWKSFetchTimeout,
			RefreshUnknownKID: rate.NewLimiter(rate.Every(JWKSUnknownKIDRefetch), 1),
			RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
				return func(ctx context.Context, err error) {
					slog.WarnContext(ctx, "JWKS refresh failed; keeping the keys fetched before", "url", u, "err", err)
				}
			},
		})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("jwks verifier: fetch %s: %w", cfg.URL, err)
		}
		v.storage = kf.Storage()
		v.stop = cancel
	}

	keys, err := v.storage.KeyReadAll(ctx)
	if err != nil || len(keys) == 0 {
		v.stop()
		return nil, fmt.Errorf("jwks verifier: the JWK Set (file %q, url %q) has no usable keys: %v", cfg.File, cfg.URL, err)
	}
	v.verifier = newVerifier(jwksAlgs, cfg.Issuer, cfg.Audience, v.lookup)
	return v, nil
}

type jwksVerifier struct {
	*verifier
	storage jwkset.Storage
	// stop ends the background refresh early; otherwise the end of the
	// constructor's ctx does.
	stop context.CancelFunc
}

// lookup picks the key by kid and checks that it may verify the token's
// algorithm, so that every mismatch is named rather than reported as a bad
// signature.
func (v *jwksVerifier) lookup(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		kid, _ := t.Header[jwkset.HeaderKID].(string)
		if kid == "" {
			return nil, unauthenticated("token has no kid header; the signing key is chosen by kid")
		}
		jwk, err := v.storage.KeyRead(ctx, kid)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, unauthenticated("unknown kid %.80q: no such key in the JWK Set", kid)
		}
		m := jwk.Marshal()
		if m.USE != "" && m.USE != jwkset.UseSig {
			return nil, unauthenticated("key %q is not a signing key (use %q)", kid, m.USE)
		}
		if a := m.ALG.String(); a != "" && a != alg {
			return nil, unauthenticated("token algorithm %s does not match key %q, which is for %s", alg, kid, a)
		}
		key := jwk.Key()
		if pk, ok := key.(interface{ Public() crypto.PublicKey }); ok {
			key = pk.Public()
		}
		var want string
		switch k := key.(type) {
		case *rsa.PublicKey:
			want = jwt.SigningMethodRS256.Alg()
			if n := k.N.BitLen(); n < MinRSABits {
				return nil, unauthenticated("key %q is a %d-bit RSA key; at least %d bits are required", kid, n, MinRSABits)
			}
		case *ecdsa.PublicKey:
			if k.Curve.Params().Name != "P-256" {
				return nil, unauthenticated("key %q is on curve %s; ES256 needs P-256", kid, k.Curve.Params().Name)
			}
			want = jwt.SigningMethodES256.Alg()
		case ed25519.PublicKey:
			want = jwt.SigningMethodEdDSA.Alg()
		default:
			return nil, unauthenticated("key %q (%T) cannot verify tokens", kid, key)
		}
		if alg != want {
			return nil, unauthenticated("token algorithm %s does not fit key %q, which is for %s", alg, kid, want)
		}
		return key, nil
	}
}
