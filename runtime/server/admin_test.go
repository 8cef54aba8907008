package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestProfilesNeedTheAdminToken: the profiles every role serves answer 403
// without a configured admin token, 401 with a wrong one, and a heap
// profile (gzipped protobuf) with the right one.
func TestProfilesNeedTheAdminToken(t *testing.T) {
	for _, tc := range []struct {
		name, configured, sent string
		want                   int
	}{
		{"disabled", "", "Bearer anything-at-all-1234", http.StatusForbidden},
		{"no token", "0123456789abcdef-admin", "", http.StatusUnauthorized},
		{"wrong token", "0123456789abcdef-admin", "Bearer 0123456789abcdef-nope", http.StatusUnauthorized},
		{"admin token", "0123456789abcdef-admin", "Bearer 0123456789abcdef-admin", http.StatusOK},
	} {
		mux := http.NewServeMux()
		(&admin{token: tc.configured}).registerProfiles(mux)
		req := httptest.NewRequest(http.MethodGet, "/debug/pprof/heap", nil)
		if tc.sent != "" {
			req.Header.Set("Authorization", tc.sent)
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, rec.Code, tc.want)
		}
		if b := rec.Body.Bytes(); tc.want == http.StatusOK && (len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b) {
			t.Errorf("%s: body is not a gzipped profile (%d bytes)", tc.name, len(b))
		}
	}
}
