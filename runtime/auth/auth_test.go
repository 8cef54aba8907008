package auth

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleychat/parley/runtime/wire"
)

func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"alice", true},
		{"a", true},
		{"Alice.Smith_99@example-corp.com", true},
		{strings.Repeat("x", 64), true},
		{"", false},
		{strings.Repeat("x", 65), false},
		{"dm:alice:bob", false},
		{"has space", false},
		{"slash/y", false},
		{"émile", false},
		{"nul\x00", false},
	}
	for _, tt := range tests {
		if got := ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		name   string
		header string
		query  string
		want   string
	}{
		{"header", "Bearer abc.def.ghi", "", "abc.def.ghi"},
		{"scheme case-insensitive", "bEaReR tok", "", "tok"},
		{"extra spaces", "  Bearer   tok  ", "", "tok"},
		{"header wins over query", "Bearer fromheader", "access_token=fromquery", "fromheader"},
		{"query only", "", "access_token=fromquery", "fromquery"},
		{"other scheme falls back to query", "Basic dXNlcjpwYXNz", "access_token=q", "q"},
		{"other scheme, no query", "Basic dXNlcjpwYXNz", "", ""},
		{"empty bearer falls back to query", "Bearer ", "access_token=q", "q"},
		{"nothing", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/ws?"+tt.query, nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			if got := BearerToken(r); got != tt.want {
				t.Errorf("BearerToken = %q, want %q", got, tt.want)
			}
		})
	}
}

// verifyCase is one row of the verifier tables.
type verifyCase struct {
	name  string
	token string
	// wantCode is "" for a token that must verify.
	wantCode string
	// wantMsg must appear in the error message.
	wantMsg string
	// want are the expected claims of a valid token (ExpiresAt unchecked
	// when zero).
	want Claims
}

func runVerifyCases(t *testing.T, v Verifier, cases []verifyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Verify(context.Background(), tc.token)
			if tc.wantCode == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if got.UserID != tc.want.UserID || got.DeviceID != tc.want.DeviceID {
					t.Errorf("claims = %+v, want user %q device %q", got, tc.want.UserID, tc.want.DeviceID)
				}
				if !tc.want.ExpiresAt.IsZero() && !got.ExpiresAt.Equal(tc.want.ExpiresAt) {
					t.Errorf("ExpiresAt = %v, want %v", got.ExpiresAt, tc.want.ExpiresAt)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify accepted the token, claims %+v; want %s", got, tc.wantCode)
			}
			var we *wire.Error
			if !errors.As(err, &we) {
				t.Fatalf("Verify error %v (%T) is not a *wire.Error", err, err)
			}
			if we.Code != tc.wantCode {
				t.Errorf("code = %q (%s), want %q", we.Code, we.Message, tc.wantCode)
			}
			if !strings.Contains(we.Message, tc.wantMsg) {
				t.Errorf("message %q does not contain %q", we.Message, tc.wantMsg)
			}
		})
	}
}

// sign returns a token of claims signed with method and key, with a kid
// header unless kid is "".
func sign(t *testing.T, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

// claimsFor returns valid claims for user alice on device phone, valid for
// an hour, changed by mods.
func claimsFor(iss, aud string, mods ...func(jwt.MapClaims)) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"iss": iss,
		"aud": aud,
		"sub": "alice",
		"did": "phone",
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
	for _, m := range mods {
		m(c)
	}
	return c
}

func set(k string, v any) func(jwt.MapClaims) { return func(c jwt.MapClaims) { c[k] = v } }
func del(k string) func(jwt.MapClaims)        { return func(c jwt.MapClaims) { delete(c, k) } }

// tamper changes one character in the middle of the token's signature.
func tamper(tok string) string {
	i := strings.LastIndexByte(tok, '.') + (len(tok)-strings.LastIndexByte(tok, '.'))/2
	b := []byte(tok)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}
