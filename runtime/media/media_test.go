package media

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

const testMax = 1024

// env is an embedded store behind a real HTTP server, as parley serve
// mounts it, and a Service configured for it.
type env struct {
	store  *Embedded
	srv    *httptest.Server
	svc    *Service
	origin string
}

func newEnv(t *testing.T, dir string) *env {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	st, err := OpenEmbedded(dir, "")
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	mux := http.NewServeMux()
	mux.Handle(EmbeddedPath+"/", st)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	svc, err := New(st.Config(Config{MaxBytes: testMax}))
	if err != nil {
		t.Fatalf("new service: %v", err)
	}
	return &env{store: st, srv: srv, svc: svc, origin: srv.URL}
}

func (e *env) presign(t *testing.T, user, mime string, size int64) *Upload {
	t.Helper()
	up, err := e.svc.Presign(context.Background(), user, mime, size, e.origin)
	if err != nil {
		t.Fatalf("presign %s %s %d: %v", user, mime, size, err)
	}
	return up
}

// put sends body to the upload URL with the upload's headers, then edit's
// changes, and returns the status and body.
func put(t *testing.T, up *Upload, body []byte, edit func(*http.Request)) (int, string) {
	t.Helper()
	req, err := http.NewRequest(up.Method, up.UploadURL, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range up.Headers {
		req.Header.Set(k, v)
	}
	if edit != nil {
		edit(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PUT: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func wantCode(t *testing.T, err error, code, contains string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %s (%q)", code, contains)
	}
	we := wire.AsError(err)
	if we.Code != code || !strings.Contains(we.Message, contains) {
		t.Fatalf("got %s: %q, want %s containing %q", we.Code, we.Message, code, contains)
	}
}

func png(n int) []byte {
	b := bytes.Repeat([]byte{0x42}, n)
	copy(b, "\x89PNG\r\n\x1a\n")
	return b
}

func TestPresignTypes(t *testing.T) {
	e := newEnv(t, "")
	for _, tc := range []struct {
		mime, code, contains string
	}{
		{"image/png", "", ""},
		{"image/jpeg", "", ""},
		{"image/webp", "", ""},
		{"image/gif", "", ""},
		{" IMAGE/PNG ", "", ""},
		{"image/svg+xml", wire.CodeInvalid, `type "image/svg+xml" is not allowed; allowed types: image/png, image/jpeg, image/webp, image/gif`},
		{"text/html", wire.CodeInvalid, "not allowed"},
		{"", wire.CodeInvalid, "mime is required"},
	} {
		t.Run(tc.mime, func(t *testing.T) {
			up, err := e.svc.Presign(context.Background(), "alice", tc.mime, 10, e.origin)
			if tc.code != "" {
				wantCode(t, err, tc.code, tc.contains)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if up.Method != http.MethodPut || up.Headers["Content-Type"] != strings.ToLower(strings.TrimSpace(tc.mime)) || up.Headers["If-None-Match"] != "*" {
				t.Fatalf("upload = %+v", up)
			}
			if !strings.HasPrefix(up.Key, "u/alice/") || up.ObjectURL != "/s3/parley-media/"+up.Key {
				t.Fatalf("key %q object url %q", up.Key, up.ObjectURL)
			}
			if !strings.HasPrefix(up.UploadURL, e.origin+"/s3/parley-media/u/alice/") {
				t.Fatalf("upload url %q is not on the origin %s", up.UploadURL, e.origin)
			}
		})
	}
	// Allowed types are configurable.
	svc, err := New(e.store.Config(Config{AllowedTypes: []string{"image/avif"}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Presign(context.Background(), "alice", "image/avif", 10, e.origin); err != nil {
		t.Fatalf("configured type refused: %v", err)
	}
	_, err = svc.Presign(context.Background(), "alice", "image/png", 10, e.origin)
	wantCode(t, err, wire.CodeInvalid, "allowed types: image/avif")
}

func TestPresignSizeBoundary(t *testing.T) {
	e := newEnv(t, "")
	up := e.presign(t, "alice", "image/png", testMax)
	if status, body := put(t, up, png(testMax), nil); status != http.StatusOK {
		t.Fatalf("PUT of exactly the maximum: %d %s", status, body)
	}
	_, err := e.svc.Presign(context.Background(), "alice", "image/png", testMax+1, e.origin)
	wantCode(t, err, wire.CodeTooLarge, "the file is 1025 bytes; the limit is 1024 bytes (1 KiB)")
	for _, n := range []int64{0, -1} {
		_, err := e.svc.Presign(context.Background(), "alice", "image/png", n, e.origin)
		wantCode(t, err, wire.CodeInvalid, "size must be")
	}
}

func TestUploadIsBoundToTypeLengthAndKey(t *testing.T) {
	e := newEnv(t, "")
	up := e.presign(t, "alice", "image/png", 100)
	for _, tc := range []struct {
		name string
		body []byte
		edit func(*http.Request)
		code string
	}{
		{"other type", png(100), func(r *http.Request) { r.Header.Set("Content-Type", "text/html") }, "SignatureDoesNotMatch"},
		{"other length", png(99), nil, "SignatureDoesNotMatch"},
		{"longer body", png(101), nil, "SignatureDoesNotMatch"},
		{"no If-None-Match", png(100), func(r *http.Request) { r.Header.Del("If-None-Match") }, "signed header if-none-match is missing"},
		{"other key", png(100), func(r *http.Request) {
			r.URL.Path = strings.Replace(r.URL.Path, "/u/alice/", "/u/bob/", 1)
		}, "SignatureDoesNotMatch"},
		{"tampered expiry", png(100), func(r *http.Request) {
			q := r.URL.Query()
			q.Set("X-Amz-Expires", "604800")
			r.URL.RawQuery = q.Encode()
		}, "SignatureDoesNotMatch"},
		{"copy source smuggled", png(100), func(r *http.Request) {
			q := r.URL.Query()
			q.Set("uploads", "")
			r.URL.RawQuery = q.Encode()
		}, "unexpected query parameter"},
		{"unsigned", png(100), func(r *http.Request) { r.URL.RawQuery = "" }, "presigned URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := put(t, up, tc.body, tc.edit)
			if status != http.StatusForbidden || !strings.Contains(body, tc.code) {
				t.Fatalf("got %d %s, want 403 %s", status, body, tc.code)
			}
		})
	}
	// The untouched request still works, once: objects are never replaced.
	if status, body := put(t, up, png(100), nil); status != http.StatusOK {
		t.Fatalf("PUT: %d %s", status, body)
	}
	if status, _ := put(t, up, png(100), nil); status != http.StatusPreconditionFailed {
		t.Fatalf("second PUT of the same object: %d, want 412", status)
	}
}

func TestUploadExpiry(t *testing.T) {
	e := newEnv(t, "")
	svc, err := New(e.store.Config(Config{UploadTTL: 10 * time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	up, err := svc.Presign(context.Background(), "alice", "image/gif", 10, e.origin)
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	if exp := time.UnixMilli(up.ExpiresAt); exp.Before(before.Add(10*time.Minute).Truncate(time.Millisecond)) || exp.After(after.Add(10*time.Minute)) {
		t.Fatalf("expires_at %s, want signing time + 10m", exp)
	}
	if !strings.Contains(up.UploadURL, "X-Amz-Expires=600") {
		t.Fatalf("upload url %s does not expire in 600 s", up.UploadURL)
	}
	e.store.SetClock(func() time.Time { return after.Add(10*time.Minute + 2*time.Second) })
	if status, body := put(t, up, png(10), nil); status != http.StatusForbidden || !strings.Contains(body, "expired") {
		t.Fatalf("PUT after expiry: %d %s", status, body)
	}
	e.store.SetClock(func() time.Time { return before.Add(-2 * time.Minute) })
	if status, body := put(t, up, png(10), nil); status != http.StatusForbidden || !strings.Contains(body, "not valid yet") {
		t.Fatalf("PUT before signing: %d %s", status, body)
	}
	e.store.SetClock(func() time.Time { return before.Add(9 * time.Minute) })
	if status, body := put(t, up, png(10), nil); status != http.StatusOK {
		t.Fatalf("PUT within the TTL: %d %s", status, body)
	}

	if _, err := New(e.store.Config(Config{UploadTTL: MaxUploadTTL + time.Second})); err == nil {
		t.Fatal("a TTL over 7 days was accepted")
	}
}

func TestCheck(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	up := e.presign(t, "alice", "image/png", 64)
	if status, body := put(t, up, png(64), nil); status != http.StatusOK {
		t.Fatalf("PUT: %d %s", status, body)
	}

	// The stored type and size replace what the client claims.
	got, err := e.svc.Check(ctx, "alice", &parleyv1.Media{Url: up.ObjectURL, Mime: "image/gif", Size: 1})
	if err != nil {
		t.Fatalf("check own object: %v", err)
	}
	if got.GetUrl() != up.ObjectURL || got.GetMime() != "image/png" || got.GetSize() != 64 {
		t.Fatalf("checked media = %v", got)
	}

	other := e.presign(t, "alice", "image/png", 64) // signed, never uploaded
	for _, tc := range []struct {
		name, user, url, code, contains string
	}{
		{"another user's object", "bob", up.ObjectURL, wire.CodeInvalid, "another user uploaded"},
		{"missing object", "alice", other.ObjectURL, wire.CodeInvalid, "does not exist"},
		{"other bucket", "alice", strings.Replace(up.ObjectURL, "/parley-media/", "/other-bucket/", 1), wire.CodeInvalid, "uploaded to this server's store"},
		{"other host", "alice", "https://evil.example" + up.ObjectURL, wire.CodeInvalid, "uploaded to this server's store"},
		{"protocol-relative host", "alice", "//evil.example" + up.ObjectURL, wire.CodeInvalid, "uploaded to this server's store"},
		{"path traversal", "alice", "/s3/parley-media/u/alice/../bob/" + up.Key[len("u/alice/"):], wire.CodeInvalid, "does not name an uploaded object"},
		{"query", "alice", up.ObjectURL + "?x=1", wire.CodeInvalid, "does not name an uploaded object"},
		{"not a key", "alice", "/s3/parley-media/u/alice/x.png", wire.CodeInvalid, "does not name an uploaded object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.Check(ctx, tc.user, &parleyv1.Media{Url: tc.url, Mime: "image/png", Size: 64})
			wantCode(t, err, tc.code, tc.contains)
		})
	}
}

func TestServesObjectsReadOnly(t *testing.T) {
	e := newEnv(t, "")
	up := e.presign(t, "alice", "image/webp", 32)
	if status, body := put(t, up, png(32), nil); status != http.StatusOK {
		t.Fatalf("PUT: %d %s", status, body)
	}
	resp, err := http.Get(e.srv.URL + up.ObjectURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, png(32)) || resp.Header.Get("Content-Type") != "image/webp" ||
		resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("GET object: %d %q type %q nosniff %q", resp.StatusCode, body, resp.Header.Get("Content-Type"), resp.Header.Get("X-Content-Type-Options"))
	}
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/s3/parley-media/", http.StatusNotFound}, // no listing
		{"GET", "/s3/parley-media?list-type=2", http.StatusNotFound},
		{"GET", "/s3/", http.StatusNotFound},                  // no bucket list
		{"GET", "/s3/other/" + up.Key, http.StatusNotFound},   // one bucket
		{"DELETE", up.ObjectURL, http.StatusMethodNotAllowed}, // no deletes
		{"POST", up.ObjectURL + "?uploads", http.StatusMethodNotAllowed},
		{"GET", "/s3/parley-media/u/alice/missing.png", http.StatusNotFound},
	} {
		req, _ := http.NewRequest(tc.method, e.srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
		}
	}
}

func TestOddUserIDs(t *testing.T) {
	e := newEnv(t, "")
	for _, user := range []string{"a.b@c-d_e", "..", ".", "UPPER"} {
		t.Run(user, func(t *testing.T) {
			up := e.presign(t, user, "image/jpeg", 8)
			if status, body := put(t, up, png(8), nil); status != http.StatusOK {
				t.Fatalf("PUT %s: %d %s", up.UploadURL, status, body)
			}
			if _, err := e.svc.Check(context.Background(), user, &parleyv1.Media{Url: up.ObjectURL, Mime: "image/jpeg", Size: 8}); err != nil {
				t.Fatalf("check: %v", err)
			}
		})
	}
	// "." may not claim ".."'s objects, nor the reverse.
	up := e.presign(t, "..", "image/jpeg", 8)
	if status, _ := put(t, up, png(8), nil); status != http.StatusOK {
		t.Fatal("PUT failed")
	}
	_, err := e.svc.Check(context.Background(), ".", &parleyv1.Media{Url: up.ObjectURL, Mime: "image/jpeg", Size: 8})
	wantCode(t, err, wire.CodeInvalid, "another user")
}

func TestStorePersists(t *testing.T) {
	dir := t.TempDir()
	e := newEnv(t, dir)
	up := e.presign(t, "alice", "image/png", 16)
	if status, body := put(t, up, png(16), nil); status != http.StatusOK {
		t.Fatalf("PUT: %d %s", status, body)
	}
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	e2 := newEnv(t, dir)
	if _, err := e2.svc.Check(context.Background(), "alice", &parleyv1.Media{Url: up.ObjectURL, Mime: "image/png", Size: 16}); err != nil {
		t.Fatalf("object lost across a restart: %v", err)
	}
	if e2.store.creds.SecretAccessKey != e.store.creds.SecretAccessKey {
		t.Fatal("the signing secret changed across a restart")
	}
}

// TestExternalEndpoint uses the store as any S3-compatible service is used in
// production: a path-style endpoint over real HTTP, header-signed HEADs.
func TestExternalEndpoint(t *testing.T) {
	e := newEnv(t, "")
	svc, err := New(Config{
		Endpoint:    e.srv.URL + EmbeddedPath,
		Bucket:      DefaultBucket,
		Credentials: credentials.StaticCredentialsProvider{Value: e.store.creds},
		MaxBytes:    testMax,
	})
	if err != nil {
		t.Fatal(err)
	}
	up, err := svc.Presign(context.Background(), "alice", "image/png", 20, "https://ignored.example")
	if err != nil {
		t.Fatal(err)
	}
	wantPrefix := e.srv.URL + "/s3/parley-media/u/alice/"
	if !strings.HasPrefix(up.UploadURL, wantPrefix) || !strings.HasPrefix(up.ObjectURL, wantPrefix) {
		t.Fatalf("upload %s object %s, want both under %s", up.UploadURL, up.ObjectURL, wantPrefix)
	}
	if status, body := put(t, up, png(20), nil); status != http.StatusOK {
		t.Fatalf("PUT: %d %s", status, body)
	}
	got, err := svc.Check(context.Background(), "alice", &parleyv1.Media{Url: up.ObjectURL, Mime: "image/png", Size: 20})
	if err != nil || got.GetSize() != 20 {
		t.Fatalf("check: %v %v", got, err)
	}
	// The embedded store's relative URLs are not this store's.
	_, err = svc.Check(context.Background(), "alice", &parleyv1.Media{Url: "/s3/parley-media/" + up.Key, Mime: "image/png", Size: 20})
	wantCode(t, err, wire.CodeInvalid, "uploaded to this server's store")

	if _, err := New(Config{Endpoint: "http://x"}); err == nil || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
		t.Fatalf("no credentials: %v", err)
	}
}
