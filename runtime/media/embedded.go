package media

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3bolt"
	bolt "go.etcd.io/bbolt"
)

// EmbeddedPath is where Parley's server mounts the embedded store: object
// URLs are EmbeddedPath/<bucket>/<key> on Parley's own origin.
const EmbeddedPath = "/s3"

// embeddedKeyID is the embedded store's access key id; its secret is
// generated into the data dir on first start.
const embeddedKeyID = "parley-embedded"

// maxPresignSkew is how far in the future a presigned URL's signing time may
// be (clocks of one process agree; this only absorbs rounding).
const maxPresignSkew = time.Minute

// Embedded is an S3-compatible object store served by Parley itself, for
// the embedded mode: gofakes3 over a bolt file in the data dir. It is not a
// general S3 server. Anyone may GET or HEAD an object (URLs carry 130 random
// bits, like a bucket behind a CDN); the only write is a PUT of an object
// with a valid, unexpired SigV4 presigned URL signed by this store's secret,
// carrying exactly the signed Content-Type, Content-Length and
// If-None-Match; listing, deleting, copying and multipart uploads are
// refused.
type Embedded struct {
	bucket string
	creds  aws.Credentials
	db     *bolt.DB
	s3     http.Handler
	signer *v4.Signer
	// now is the clock presigned URLs are checked against (tests move it).
	now atomic.Pointer[func() time.Time]
}

// OpenEmbedded opens (creating if needed) the embedded store in dir: the
// objects in dir/objects.bolt, the signing secret in dir/secret (0600).
// bucket defaults to DefaultBucket. Close releases the bolt file, which one
// process at a time may hold.
func OpenEmbedded(dir, bucket string) (*Embedded, error) {
	if bucket == "" {
		bucket = DefaultBucket
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("media store dir %s: %w", dir, err)
	}
	secret, err := loadOrCreateSecret(filepath.Join(dir, "secret"))
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "objects.bolt")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open media store %s (is another parley using this data dir?): %w", path, err)
	}
	backend := s3bolt.New(db)
	ok, err := backend.BucketExists(bucket)
	if err == nil && !ok {
		err = backend.CreateBucket(bucket)
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("media store bucket %s: %w", bucket, err)
	}
	e := &Embedded{
		bucket: bucket,
		creds:  aws.Credentials{AccessKeyID: embeddedKeyID, SecretAccessKey: secret, Source: "parley embedded store"},
		db:     db,
		// Presigned URLs are checked here, not by gofakes3 (which checks no
		// signature); its header clock-skew check does not apply to them.
		s3:     gofakes3.New(backend, gofakes3.WithTimeSkewLimit(0), gofakes3.WithoutVersioning()).Server(),
		signer: v4.NewSigner(),
	}
	e.SetClock(time.Now)
	return e, nil
}

func loadOrCreateSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if s := strings.TrimSpace(string(b)); len(s) >= 32 {
			return s, nil
		}
		return "", fmt.Errorf("media store secret %s is too short; delete it to generate a new one", path)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read media store secret: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("generate media store secret: %w", err)
	}
	s := hex.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write media store secret: %w", err)
	}
	return s, nil
}

// Close releases the store's file.
func (e *Embedded) Close() error { return e.db.Close() }

// SetClock replaces the clock presigned URLs are checked against (tests).
func (e *Embedded) SetClock(now func() time.Time) { e.now.Store(&now) }

// Config returns the media configuration for this store, with the limits
// of limits (AllowedTypes, MaxBytes, UploadTTL, Logger); Parley's own calls
// (HEAD) reach the store in process, and upload URLs point at the origin the
// client used, under EmbeddedPath.
func (e *Embedded) Config(limits Config) Config {
	limits.Endpoint = "http://parley-embedded.invalid" + EmbeddedPath
	limits.Bucket = e.bucket
	limits.Region = DefaultRegion
	limits.PublicURL = EmbeddedPath + "/" + e.bucket
	limits.Credentials = credentials.StaticCredentialsProvider{Value: e.creds}
	limits.HTTPClient = &http.Client{Transport: handlerTransport{e}}
	limits.OriginPath = EmbeddedPath
	return limits
}

// handlerTransport serves requests with a handler in process: Parley's HEAD
// of an object in its own store needs no socket nor to know its address.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	if r.Body == nil {
		r.Body = http.NoBody
	}
	r.RequestURI = req.URL.RequestURI()
	if r.Host == "" {
		r.Host = req.URL.Host
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

// ServeHTTP serves the store at EmbeddedPath/<bucket>/<key>.
func (e *Embedded) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, EmbeddedPath+"/")
	bucket, key, _ := strings.Cut(rest, "/")
	if !ok || bucket != e.bucket || key == "" {
		s3Error(w, http.StatusNotFound, "NoSuchKey", "no such object; this store serves objects of bucket "+e.bucket)
		return
	}
	fwd := r.Clone(r.Context())
	fwd.URL.Path = strings.TrimPrefix(r.URL.Path, EmbeddedPath)
	fwd.URL.RawPath = strings.TrimPrefix(r.URL.RawPath, EmbeddedPath)
	fwd.URL.RawQuery = "" // no sub-resources (?acl, ?uploads, ?versions...)
	fwd.Header = http.Header{}
	h := w.Header()
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		for _, k := range []string{"Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"} {
			if v := r.Header.Values(k); len(v) > 0 {
				fwd.Header[k] = v
			}
		}
		// Objects are never replaced (If-None-Match: * on upload), so they
		// cache well; served types are the signed image types, and nosniff
		// plus a sandbox keep a browser from treating one as a page.
		h.Set("Cache-Control", "private, max-age=604800, immutable")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	case http.MethodPut:
		if code, msg := e.verifyPresigned(r); code != "" {
			s3Error(w, http.StatusForbidden, code, msg)
			return
		}
		// Only the signed headers reach gofakes3: an unsigned
		// X-Amz-Copy-Source or X-Amz-Meta-* must not ride along.
		for _, k := range []string{"Content-Type", "Content-Length", "If-None-Match"} {
			if v := r.Header.Values(k); len(v) > 0 {
				fwd.Header[k] = v
			}
		}
		fwd.Header.Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
	default:
		h.Set("Allow", "GET, HEAD, PUT")
		s3Error(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "only GET, HEAD and presigned PUT of objects are allowed")
		return
	}
	e.s3.ServeHTTP(w, fwd)
}

// verifyPresigned checks r against a SigV4 presigned PUT of this store:
// algorithm, credential scope, time window, and the signature recomputed over
// the method, path, query and signed headers, which must include the
// content type and length. It returns an S3 error code and message, or "".
func (e *Embedded) verifyPresigned(r *http.Request) (code, msg string) {
	q := r.URL.Query()
	for k := range q {
		if !strings.HasPrefix(strings.ToLower(k), "x-amz-") && k != "x-id" {
			return "AccessDenied", "unexpected query parameter " + strconv.Quote(k)
		}
	}
	if q.Get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" || q.Get("X-Amz-Signature") == "" {
		return "AccessDenied", "a presigned URL (AWS4-HMAC-SHA256 query signature) from POST /v1/media/uploads is required"
	}
	scope := strings.Split(q.Get("X-Amz-Credential"), "/")
	if len(scope) != 5 || scope[0] != e.creds.AccessKeyID || scope[3] != "s3" || scope[4] != "aws4_request" {
		return "InvalidAccessKeyId", "the URL was not signed by this store"
	}
	signed, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
	if err != nil || scope[1] != signed.Format("20060102") {
		return "AuthorizationQueryParametersError", "X-Amz-Date is missing or does not match the credential scope"
	}
	secs, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || secs < 1 || time.Duration(secs)*time.Second > MaxUploadTTL {
		return "AuthorizationQueryParametersError", "X-Amz-Expires must be 1..604800 seconds"
	}
	now := (*e.now.Load())()
	if now.Before(signed.Add(-maxPresignSkew)) {
		return "AccessDenied", "the upload URL is not valid yet"
	}
	if now.After(signed.Add(time.Duration(secs) * time.Second)) {
		return "AccessDenied", "the upload URL has expired; ask for a new one"
	}
	headers := strings.Split(q.Get("X-Amz-SignedHeaders"), ";")
	for _, need := range []string{"host", "content-length", "content-type"} {
		if !slices.Contains(headers, need) {
			return "AccessDenied", "the URL does not bind " + need
		}
	}
	if r.ContentLength < 1 {
		return "MissingContentLength", "send the body with a Content-Length"
	}
	// Recompute the signature over the request as received: the same
	// canonicalisation as the presigner, since it is the same signer.
	u := *r.URL
	u.Scheme, u.Host = "http", r.Host
	q.Del("X-Amz-Signature")
	u.RawQuery = q.Encode()
	check := &http.Request{Method: r.Method, URL: &u, Host: r.Host, Header: http.Header{}, ContentLength: r.ContentLength}
	for _, h := range headers {
		if h == "host" || h == "content-length" {
			continue
		}
		v := r.Header.Values(h)
		if len(v) == 0 {
			return "AccessDenied", "signed header " + h + " is missing"
		}
		check.Header[http.CanonicalHeaderKey(h)] = v
	}
	region := scope[2]
	got, _, err := e.signer.PresignHTTP(context.Background(), e.creds, check, "UNSIGNED-PAYLOAD", "s3", region, signed,
		func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
	if err != nil {
		return "AccessDenied", "cannot check the signature"
	}
	gu, err := url.Parse(got)
	if err != nil {
		return "AccessDenied", "cannot check the signature"
	}
	want := gu.Query()
	if want.Get("X-Amz-SignedHeaders") != q.Get("X-Amz-SignedHeaders") ||
		!hmac.Equal([]byte(want.Get("X-Amz-Signature")), []byte(r.URL.Query().Get("X-Amz-Signature"))) {
		return "SignatureDoesNotMatch", "the signature does not match: the URL, Content-Type, Content-Length and If-None-Match must be sent exactly as signed"
	}
	return "", ""
}

func s3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_ = xml.NewEncoder(w).Encode(struct {
		XMLName xml.Name `xml:"Error"`
		Code    string
		Message string
	}{Code: code, Message: msg})
}
