package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleychat/parley/runtime/wire"
)

func TestLoadOrCreateDevSecretPersists(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not", "yet", "there")
	first, err := LoadOrCreateDevSecret(dir)
	if err != nil {
		t.Fatalf("first LoadOrCreateDevSecret: %v", err)
	}
	if len(first) != DevSecretBytes {
		t.Fatalf("secret is %d bytes, want %d", len(first), DevSecretBytes)
	}
	path := filepath.Join(dir, DevSecretFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
	second, err := LoadOrCreateDevSecret(dir)
	if err != nil {
		t.Fatalf("second LoadOrCreateDevSecret: %v", err)
	}
	if !bytes.Equal(first, second) {
		t.Errorf("secret changed between starts")
	}
	// A token issued before the "restart" verifies after it.
	tok, err := NewDevIssuer(first).Issue("alice", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewHMACVerifier(second).Verify(t.Context(), tok); err != nil {
		t.Errorf("token from before the restart: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("data dir has %d entries, want only %s (temp files left?)", len(entries), DevSecretFile)
	}
}

func TestLoadOrCreateDevSecretConcurrentStartsAgree(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	secrets := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { secrets[i], errs[i] = LoadOrCreateDevSecret(dir) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("start %d: %v", i, errs[i])
		}
		if !bytes.Equal(secrets[i], secrets[0]) {
			t.Fatalf("start %d got a different secret than start 0", i)
		}
	}
}

func TestLoadOrCreateDevSecretTightensMode(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix modes")
	}
	dir := t.TempDir()
	if _, err := LoadOrCreateDevSecret(dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, DevSecretFile)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateDevSecret(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
}

func TestLoadOrCreateDevSecretRejectsCorruptFile(t *testing.T) {
	for name, content := range map[string]string{
		"not hex":   "this is not hex at all",
		"too short": "abcd\n",
		"empty":     "",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, DevSecretFile), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadOrCreateDevSecret(dir); err == nil || !strings.Contains(err.Error(), "delete it") {
				t.Errorf("err = %v, want an error telling to delete the file", err)
			}
		})
	}
}

func TestDevIssuerRejectsBadInput(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, DevSecretBytes)
	tests := []struct {
		name, user, device string
		ttl                time.Duration
		secret             []byte
		wantCode           string
	}{
		{"bad user", "a:b", "", time.Hour, secret, wire.CodeInvalid},
		{"empty user", "", "", time.Hour, secret, wire.CodeInvalid},
		{"bad device", "alice", "dev ice", time.Hour, secret, wire.CodeInvalid},
		{"zero ttl", "alice", "", 0, secret, wire.CodeInvalid},
		{"negative ttl", "alice", "", -time.Second, secret, wire.CodeInvalid},
		{"short secret", "alice", "", time.Hour, []byte("short"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := NewDevIssuer(tt.secret).Issue(tt.user, tt.device, tt.ttl)
			if err == nil {
				t.Fatalf("Issue = %q, want an error", tok)
			}
			if tt.wantCode != "" {
				var we *wire.Error
				if !errors.As(err, &we) || we.Code != tt.wantCode {
					t.Errorf("err = %v, want code %s", err, tt.wantCode)
				}
			}
		})
	}
}

func TestHMACVerifier(t *testing.T) {
	secret, err := LoadOrCreateDevSecret(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	iss := NewDevIssuer(secret)
	issue := func(user, device string, ttl time.Duration) string {
		t.Helper()
		tok, err := iss.Issue(user, device, ttl)
		if err != nil {
			t.Fatalf("Issue: %v", err)
		}
		return tok
	}
	hs := func(mods ...func(jwt.MapClaims)) string {
		return sign(t, jwt.SigningMethodHS256, secret, "", claimsFor(DevIssuerName, DevAudience, mods...))
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherSecret := bytes.Repeat([]byte{1}, DevSecretBytes)
	expiredAt := time.Now().Add(-time.Hour).Truncate(time.Second)
	expiresAt := time.Now().Add(2 * time.Hour).Truncate(time.Second)

	runVerifyCases(t, NewHMACVerifier(secret), []verifyCase{
		{name: "issued token", token: issue("alice", "laptop", time.Hour), want: Claims{UserID: "alice", DeviceID: "laptop"}},
		{name: "issued token default device", token: issue("bob@example.com", "", time.Hour), want: Claims{UserID: "bob@example.com", DeviceID: DefaultDeviceID}},
		{name: "exp carried into claims", token: hs(set("exp", expiresAt.Unix())), want: Claims{UserID: "alice", DeviceID: "phone", ExpiresAt: expiresAt}},
		{name: "aud as a single string", token: hs(set("aud", DevAudience)), want: Claims{UserID: "alice", DeviceID: "phone"}},
		{name: "expired within leeway", token: hs(set("exp", time.Now().Add(-Leeway/3).Unix())), want: Claims{UserID: "alice", DeviceID: "phone"}},
		{name: "home region claim", token: hs(set("home_region", "eu-west")), want: Claims{UserID: "alice", DeviceID: "phone", HomeRegion: "eu-west"}},
		{name: "home region malformed", token: hs(set("home_region", "EU/1")), wantCode: wire.CodeUnauthenticated, wantMsg: `home_region "EU/1" is not a valid region name`},
		{name: "home region too long", token: hs(set("home_region", strings.Repeat("a", 64))), wantCode: wire.CodeUnauthenticated, wantMsg: "not a valid region name"},
		{name: "empty token", token: "", wantCode: wire.CodeUnauthenticated, wantMsg: "no token"},
		{name: "garbage", token: "not-a-jwt", wantCode: wire.CodeUnauthenticated, wantMsg: "malformed"},
		{name: "bad base64", token: "!!!.???.***", wantCode: wire.CodeUnauthenticated, wantMsg: "malformed"},
		{name: "too long", token: strings.Repeat("a", MaxTokenBytes+1), wantCode: wire.CodeUnauthenticated, wantMsg: "over the limit"},
		{name: "alg none", token: sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", claimsFor(DevIssuerName, DevAudience)), wantCode: wire.CodeUnauthenticated, wantMsg: `algorithm "none" is not accepted`},
		{name: "RS256 token", token: sign(t, jwt.SigningMethodRS256, rsaKey, "", claimsFor(DevIssuerName, DevAudience)), wantCode: wire.CodeUnauthenticated, wantMsg: `algorithm "RS256" is not accepted`},
		{name: "HS512 token", token: sign(t, jwt.SigningMethodHS512, secret, "", claimsFor(DevIssuerName, DevAudience)), wantCode: wire.CodeUnauthenticated, wantMsg: `algorithm "HS512" is not accepted`},
		{name: "forged with another secret", token: sign(t, jwt.SigningMethodHS256, otherSecret, "", claimsFor(DevIssuerName, DevAudience)), wantCode: wire.CodeUnauthenticated, wantMsg: "signature is invalid"},
		{name: "tampered signature", token: tamper(issue("alice", "", time.Hour)), wantCode: wire.CodeUnauthenticated, wantMsg: "signature is invalid"},
		{name: "expired", token: hs(set("exp", expiredAt.Unix())), wantCode: wire.CodeTokenExpired, wantMsg: "token expired at " + expiredAt.UTC().Format(time.RFC3339)},
		{name: "expired and wrong audience", token: hs(set("exp", expiredAt.Unix()), set("aud", "other")), wantCode: wire.CodeUnauthenticated, wantMsg: "audience"},
		{name: "no exp", token: hs(del("exp")), wantCode: wire.CodeUnauthenticated, wantMsg: "no exp claim"},
		{name: "nbf in the future", token: hs(set("nbf", time.Now().Add(time.Hour).Unix())), wantCode: wire.CodeUnauthenticated, wantMsg: "not valid before"},
		{name: "wrong issuer", token: hs(set("iss", "evil")), wantCode: wire.CodeUnauthenticated, wantMsg: `issuer "evil"`},
		{name: "no issuer", token: hs(del("iss")), wantCode: wire.CodeUnauthenticated, wantMsg: "no iss claim"},
		{name: "wrong audience", token: hs(set("aud", []string{"a", "b"})), wantCode: wire.CodeUnauthenticated, wantMsg: `audience "a,b" does not include "parley"`},
		{name: "no audience", token: hs(del("aud")), wantCode: wire.CodeUnauthenticated, wantMsg: "no aud claim"},
		{name: "exp not a number", token: hs(set("exp", "tomorrow")), wantCode: wire.CodeUnauthenticated, wantMsg: "malformed"},
		{name: "sub with colon", token: hs(set("sub", "dm:alice")), wantCode: wire.CodeUnauthenticated, wantMsg: "not a valid user id"},
		{name: "sub with space", token: hs(set("sub", "al ice")), wantCode: wire.CodeUnauthenticated, wantMsg: "not a valid user id"},
		{name: "sub too long", token: hs(set("sub", strings.Repeat("a", 65))), wantCode: wire.CodeUnauthenticated, wantMsg: "not a valid user id"},
		{name: "no sub", token: hs(del("sub")), wantCode: wire.CodeUnauthenticated, wantMsg: "not a valid user id"},
		{name: "bad did", token: hs(set("did", "a/b")), wantCode: wire.CodeUnauthenticated, wantMsg: "not a valid device id"},
	})
}

func TestHMACVerifierRejectsShortSecret(t *testing.T) {
	// An empty HMAC key is a key everyone knows.
	for _, secret := range [][]byte{nil, []byte("short")} {
		tok := sign(t, jwt.SigningMethodHS256, secret, "", claimsFor(DevIssuerName, DevAudience))
		runVerifyCases(t, NewHMACVerifier(secret), []verifyCase{
			{name: "signed with the short secret", token: tok, wantCode: wire.CodeUnauthenticated, wantMsg: "misconfigured"},
		})
	}
}

func TestValidRegion(t *testing.T) {
	for name, want := range map[string]bool{
		"eu": true, "us-east-1": true, "a": true, strings.Repeat("a", 63): true,
		"": false, strings.Repeat("a", 64): false, "1eu": false, "-eu": false, "EU": false, "eu.west": false, "eu west": false, "eu/1": false,
	} {
		if got := ValidRegion(name); got != want {
			t.Errorf("ValidRegion(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestIssueHome(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, DevSecretBytes)
	i := NewDevIssuer(secret)
	tok, err := i.IssueHome("alice", "", "us", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewHMACVerifier(secret).Verify(context.Background(), tok)
	if err != nil || c.HomeRegion != "us" {
		t.Fatalf("Verify = %+v, %v; want home region us", c, err)
	}
	if _, err := i.IssueHome("alice", "", "U S", time.Hour); wire.AsError(err).Code != wire.CodeInvalid {
		t.Errorf("IssueHome with a bad region = %v, want invalid", err)
	}
}
