package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/parleychat/parley/runtime/wire"
)

const (
	testIssuer   = "https://idp.example.com/"
	testAudience = "parley-test"
)

// testKeys are the signing keys of the tests, generated once per run
// because RSA key generation is slow.
type testKeys struct {
	rsa      *rsa.PrivateKey
	rsaOther *rsa.PrivateKey // not in the set: forgeries
	rsaSmall *rsa.PrivateKey // 1024 bits: too weak
	ec       *ecdsa.PrivateKey
	ec384    *ecdsa.PrivateKey
	ed       ed25519.PrivateKey
}

var keys = sync.OnceValue(func() testKeys {
	var k testKeys
	var err error
	must := func(e error) {
		if e != nil {
			panic(e)
		}
	}
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsaOther, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsaSmall, err = rsa.GenerateKey(rand.Reader, 1024)
	must(err)
	k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	k.ec384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	must(err)
	_, k.ed, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	return k
})

// jwk is one public key of a test JWK Set.
type jwk struct {
	kid string
	alg jwkset.ALG // "" leaves alg out of the JWK
	use jwkset.USE
	key any
}

func standardSet() []jwk {
	k := keys()
	return []jwk{
		{kid: "rsa1", alg: jwkset.AlgRS256, use: jwkset.UseSig, key: &k.rsa.PublicKey},
		{kid: "ec1", key: &k.ec.PublicKey}, // no alg: the key type decides
		{kid: "ed1", alg: jwkset.AlgEdDSA, use: jwkset.UseSig, key: k.ed.Public()},
		{kid: "small", alg: jwkset.AlgRS256, key: &k.rsaSmall.PublicKey},
		{kid: "ec384", key: &k.ec384.PublicKey},
		{kid: "enc1", use: jwkset.UseEnc, key: &k.rsaOther.PublicKey},
	}
}

func jwksJSON(t *testing.T, set []jwk) []byte {
	t.Helper()
	var m jwkset.JWKSMarshal
	for _, j := range set {
		k, err := jwkset.NewJWKFromKey(j.key, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: j.kid, ALG: j.alg, USE: j.use}})
		if err != nil {
			t.Fatalf("JWK %s: %v", j.kid, err)
		}
		m.Keys = append(m.Keys, k.Marshal())
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeJWKSFile(t *testing.T, body []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// jwksServer serves whatever body holds and counts the requests.
type jwksServer struct {
	*httptest.Server
	body     atomic.Pointer[[]byte]
	status   atomic.Int32
	requests atomic.Int64
}

func newJWKSServer(t *testing.T, body []byte) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.body.Store(&body)
	s.status.Store(http.StatusOK)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(int(s.status.Load()))
		w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

func TestJWKSVerifier(t *testing.T) {
	k := keys()
	body := jwksJSON(t, standardSet())
	srv := newJWKSServer(t, body)

	good := func(mods ...func(jwt.MapClaims)) jwt.MapClaims { return claimsFor(testIssuer, testAudience, mods...) }
	rs := func(mods ...func(jwt.MapClaims)) string {
		return sign(t, jwt.SigningMethodRS256, k.rsa, "rsa1", good(mods...))
	}
	pubPEM, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubPEM})
	expiredAt := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	expiresAt := time.Now().Add(30 * time.Minute).Truncate(time.Second)
	alice := Claims{UserID: "alice", DeviceID: "phone"}

	cases := []verifyCase{
		{name: "RS256", token: rs(set("exp", expiresAt.Unix())), want: Claims{UserID: "alice", DeviceID: "phone", ExpiresAt: expiresAt}},
		{name: "ES256", token: sign(t, jwt.SigningMethodES256, k.ec, "ec1", good()), want: alice},
		{name: "EdDSA", token: sign(t, jwt.SigningMethodEdDSA, k.ed, "ed1", good()), want: alice},
		{name: "no did gets default device", token: rs(del("did")), want: Claims{UserID: "alice", DeviceID: DefaultDeviceID}},
		{name: "audience among several", token: rs(set("aud", []string{"other", testAudience})), want: alice},
		{name: "empty token", token: "", wantCode: wire.CodeUnauthenticated, wantMsg: "no token"},
		{name: "alg none", token: sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "rsa1", good()), wantCode: wire.CodeUnauthenticated, wantMsg: `algorithm "none" is not accepted`},
		{name: "HS256 with the RSA public key as secret", token: sign(t, jwt.SigningMethodHS256, pemBytes, "rsa1", good()), wantCode: wire.CodeUnauthenticated, wantMsg: `algorithm "HS256" is not accepted`},
		{name: "HS256 with the RSA modulus as secret", token: sign(t, jwt.SigningMethodHS256, k.rsa.N.Bytes(), "rsa1", good()), wantCode: wire.CodeUnauthenticated, wantMsg: `algorithm "HS256" is not accepted`},
		{name: "PS256 not accepted", token: sign(t, jwt.SigningMethodPS256, k.rsa, "rsa1", good()), wantCode: wire.CodeUnauthenticated, wantMsg: `algorithm "PS256" is not accepted`},
		{name: "RS256 with an EC kid", token: sign(t, jwt.SigningMethodRS256, k.rsa, "ec1", good()), wantCode: wire.CodeUnauthenticated, wantMsg: `does not fit key "ec1"`},
		{name: "ES256 with an RSA kid", token: sign(t, jwt.SigningMethodES256, k.ec, "rsa1", good()), wantCode: wire.CodeUnauthenticated, wantMsg: `does not match key "rsa1"`},
		{name: "ES256 on P-384 key", token: sign(t, jwt.SigningMethodES256, k.ec, "ec384", good()), wantCode: wire.CodeUnauthenticated, wantMsg: "needs P-256"},
		{name: "1024-bit RSA key", token: sign(t, jwt.SigningMethodRS256, k.rsaSmall, "small", good()), wantCode: wire.CodeUnauthenticated, wantMsg: "at least 2048 bits"},
		{name: "encryption key", token: sign(t, jwt.SigningMethodRS256, k.rsaOther, "enc1", good()), wantCode: wire.CodeUnauthenticated, wantMsg: "not a signing key"},
		{name: "unknown kid", token: sign(t, jwt.SigningMethodRS256, k.rsa, "nope", good()), wantCode: wire.CodeUnauthenticated, wantMsg: `unknown kid "nope"`},
		{name: "no kid", token: sign(t, jwt.SigningMethodRS256, k.rsa, "", good()), wantCode: wire.CodeUnauthenticated, wantMsg: "no kid"},
		{name: "forged with another key", token: sign(t, jwt.SigningMethodRS256, k.rsaOther, "rsa1", good()), wantCode: wire.CodeUnauthenticated, wantMsg: "signature is invalid"},
		{name: "tampered RS256", token: tamper(rs()), wantCode: wire.CodeUnauthenticated, wantMsg: "signature is invalid"},
		{name: "tampered ES256", token: tamper(sign(t, jwt.SigningMethodES256, k.ec, "ec1", good())), wantCode: wire.CodeUnauthenticated, wantMsg: "signature is invalid"},
		{name: "tampered EdDSA", token: tamper(sign(t, jwt.SigningMethodEdDSA, k.ed, "ed1", good())), wantCode: wire.CodeUnauthenticated, wantMsg: "signature is invalid"},
		{name: "expired", token: rs(set("exp", expiredAt.Unix())), wantCode: wire.CodeTokenExpired, wantMsg: "token expired at " + expiredAt.UTC().Format(time.RFC3339)},
		{name: "nbf in the future", token: rs(set("nbf", time.Now().Add(10*time.Minute).Unix())), wantCode: wire.CodeUnauthenticated, wantMsg: "not valid before"},
		{name: "wrong issuer", token: rs(set("iss", "https://evil.example.com/")), wantCode: wire.CodeUnauthenticated, wantMsg: "issuer"},
		{name: "wrong audience", token: rs(set("aud", "someone-else")), wantCode: wire.CodeUnauthenticated, wantMsg: `does not include "parley-test"`},
		{name: "no exp", token: rs(del("exp")), wantCode: wire.CodeUnauthenticated, wantMsg: "no exp claim"},
		{name: "bad sub", token: rs(set("sub", "alice:bob")), wantCode: wire.CodeUnauthenticated, wantMsg: "not a valid user id"},
		{name: "bad sub unicode", token: rs(set("sub", "ålice")), wantCode: wire.CodeUnauthenticated, wantMsg: "not a valid user id"},
	}

	sources := []struct {
		name string
		cfg  JWKSConfig
	}{
		{"file", JWKSConfig{File: writeJWKSFile(t, body)}},
		{"url", JWKSConfig{URL: srv.URL}},
	}
	for _, src := range sources {
		t.Run(src.name, func(t *testing.T) {
			cfg := src.cfg
			cfg.Issuer, cfg.Audience = testIssuer, testAudience
			v, err := NewJWKSVerifier(t.Context(), cfg)
			if err != nil {
				t.Fatalf("NewJWKSVerifier: %v", err)
			}
			runVerifyCases(t, v, cases)
		})
	}
}

func TestJWKSVerifierFileAndURL(t *testing.T) {
	k := keys()
	// The file holds the EC key, the URL the RSA key: both are usable.
	file := writeJWKSFile(t, jwksJSON(t, []jwk{{kid: "ec1", key: &k.ec.PublicKey}}))
	srv := newJWKSServer(t, jwksJSON(t, []jwk{{kid: "rsa1", key: &k.rsa.PublicKey}}))
	v, err := NewJWKSVerifier(t.Context(), JWKSConfig{File: file, URL: srv.URL, Issuer: testIssuer, Audience: testAudience})
	if err != nil {
		t.Fatal(err)
	}
	alice := Claims{UserID: "alice", DeviceID: "phone"}
	runVerifyCases(t, v, []verifyCase{
		{name: "kid from file", token: sign(t, jwt.SigningMethodES256, k.ec, "ec1", claimsFor(testIssuer, testAudience)), want: alice},
		{name: "kid from url", token: sign(t, jwt.SigningMethodRS256, k.rsa, "rsa1", claimsFor(testIssuer, testAudience)), want: alice},
	})
}

func TestJWKSVerifierRefreshesInBackground(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, jwksJSON(t, []jwk{{kid: "old", key: &k.rsa.PublicKey}}))
	v, err := NewJWKSVerifier(t.Context(), JWKSConfig{URL: srv.URL, Issuer: testIssuer, Audience: testAudience, Refresh: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	oldTok := sign(t, jwt.SigningMethodRS256, k.rsa, "old", claimsFor(testIssuer, testAudience))
	newTok := sign(t, jwt.SigningMethodEdDSA, k.ed, "new", claimsFor(testIssuer, testAudience))
	if _, err := v.Verify(t.Context(), oldTok); err != nil {
		t.Fatalf("old key before rotation: %v", err)
	}

	// Rotate: the old key is revoked. Only a background refresh can notice,
	// since the old kid is still cached.
	rotated := jwksJSON(t, []jwk{{kid: "new", key: k.ed.Public()}})
	srv.body.Store(&rotated)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := v.Verify(t.Context(), oldTok)
		var we *wire.Error
		if errors.As(err, &we) && strings.Contains(we.Message, "unknown kid") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("old key still accepted after rotation (last result %v, %d fetches)", err, srv.requests.Load())
		}
		time.Sleep(5 * time.Millisecond) // poll interval, not a wait for an event
	}
	if _, err := v.Verify(t.Context(), newTok); err != nil {
		t.Errorf("new key after rotation: %v", err)
	}
}

func TestJWKSVerifierUnknownKIDRefetch(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, jwksJSON(t, []jwk{{kid: "old", key: &k.rsa.PublicKey}}))
	// Hourly refresh: only the unknown-kid refetch can find the new key.
	v, err := NewJWKSVerifier(t.Context(), JWKSConfig{URL: srv.URL, Issuer: testIssuer, Audience: testAudience})
	if err != nil {
		t.Fatal(err)
	}
	rotated := jwksJSON(t, []jwk{{kid: "old", key: &k.rsa.PublicKey}, {kid: "new", key: &k.ec.PublicKey}})
	srv.body.Store(&rotated)
	newTok := sign(t, jwt.SigningMethodES256, k.ec, "new", claimsFor(testIssuer, testAudience))
	if _, err := v.Verify(t.Context(), newTok); err != nil {
		t.Fatalf("key added after start: %v", err)
	}
	// Made-up kids cannot make it fetch again and again.
	before := srv.requests.Load()
	for i := range 5 {
		bogus := sign(t, jwt.SigningMethodES256, k.ec, "bogus"+string(rune('a'+i)), claimsFor(testIssuer, testAudience))
		if _, err := v.Verify(t.Context(), bogus); err == nil {
			t.Fatal("bogus kid accepted")
		}
	}
	if got := srv.requests.Load() - before; got > 1 {
		t.Errorf("%d fetches for 5 unknown kids, want at most 1", got)
	}
}

func TestNewJWKSVerifierErrors(t *testing.T) {
	k := keys()
	good := jwksJSON(t, []jwk{{kid: "rsa1", key: &k.rsa.PublicKey}})
	goodFile := writeJWKSFile(t, good)
	failing := newJWKSServer(t, good)
	failing.status.Store(http.StatusInternalServerError)
	empty := newJWKSServer(t, []byte(`{"keys":[]}`))
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	tests := []struct {
		name    string
		cfg     JWKSConfig
		wantMsg string
	}{
		{"no issuer", JWKSConfig{File: goodFile, Audience: testAudience}, "Issuer is required"},
		{"no audience", JWKSConfig{File: goodFile, Issuer: testIssuer}, "Audience is required"},
		{"no source", JWKSConfig{Issuer: testIssuer, Audience: testAudience}, "set File or URL"},
		{"negative refresh", JWKSConfig{URL: empty.URL, Issuer: testIssuer, Audience: testAudience, Refresh: -time.Second}, "negative"},
		{"missing file", JWKSConfig{File: filepath.Join(t.TempDir(), "nope.json"), Issuer: testIssuer, Audience: testAudience}, "read JWKS file"},
		{"garbage file", JWKSConfig{File: writeJWKSFile(t, []byte("{not json")), Issuer: testIssuer, Audience: testAudience}, "parse JWKS file"},
		{"empty file", JWKSConfig{File: writeJWKSFile(t, []byte(`{"keys":[]}`)), Issuer: testIssuer, Audience: testAudience}, "no usable keys"},
		{"url 500", JWKSConfig{URL: failing.URL, Issuer: testIssuer, Audience: testAudience}, "fetch"},
		{"url refused", JWKSConfig{URL: closedURL, Issuer: testIssuer, Audience: testAudience}, "fetch"},
		{"url empty set", JWKSConfig{URL: empty.URL, Issuer: testIssuer, Audience: testAudience}, "no usable keys"},
		{"bad url", JWKSConfig{URL: "::not a url", Issuer: testIssuer, Audience: testAudience}, "fetch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewJWKSVerifier(t.Context(), tt.cfg)
			if err == nil {
				t.Fatalf("NewJWKSVerifier = %v, want an error", v)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %v, want it to contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestJWKSVerifierCanceledContext(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, jwksJSON(t, []jwk{{kid: "rsa1", key: &k.rsa.PublicKey}}))
	v, err := NewJWKSVerifier(t.Context(), JWKSConfig{URL: srv.URL, Issuer: testIssuer, Audience: testAudience})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	// An unknown kid would refetch; with ctx gone the caller learns that,
	// rather than a verdict on the token.
	_, err = v.Verify(ctx, sign(t, jwt.SigningMethodRS256, k.rsa, "other", claimsFor(testIssuer, testAudience)))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}
