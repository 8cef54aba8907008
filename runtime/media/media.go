// Package media makes media messages real (docs/design.md §6): a client
// asks POST /v1/media/uploads for an S3 presigned PUT URL bound to the
// object's content type and length, uploads the bytes straight to the object
// store, then sends a message whose media.url is the object's URL. Before such
// a message enters the send pipeline, Check proves that the sender uploaded
// the object: the URL names this store's bucket (no other bucket or host), the
// key carries the sender's user id ("u/<user>/<random>.<ext>"), and a HEAD
// finds the object, whose stored type and size replace what the client said.
//
// Where the check runs: at the edge, before a send becomes an ingress record
// — the gateway for WebSocket sends (gateway.Config.Media) and the REST
// handler for POST /v1/messages (httpapi.API.Media) — not in the chat
// sequencer. A HEAD is network I/O that must not stall a conversation's
// queue, and the chat role then needs no S3 credentials. Ingress records are
// written only by those two edges, so every media message is checked. With
// no media service configured, both refuse media sends.
//
// Any S3-compatible service works (AWS S3, MinIO, Ceph, R2, ...): uploads go
// straight from the client to it, so its CORS rules must allow PUT from the
// web client's origin with the Content-Type and If-None-Match headers, and
// clients read objects from PublicURL without credentials. With none
// configured, Parley serves its own S3-compatible store (Embedded) from the
// data dir under /s3/ of its own port, so the same presigned flow works with
// nothing installed.
package media

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// Defaults of Config.
const (
	DefaultBucket    = "parley-media"
	DefaultRegion    = "us-east-1"
	DefaultMaxBytes  = 10 << 20 // 10 MiB
	DefaultUploadTTL = 15 * time.Minute
	// MaxUploadTTL is the longest validity SigV4 allows a presigned URL.
	MaxUploadTTL = 7 * 24 * time.Hour
	// checkTimeout bounds the HEAD of one media message's object.
	checkTimeout = 5 * time.Second
)

// DefaultAllowedTypes are the content types an upload may have: images a
// browser shows inline.
var DefaultAllowedTypes = []string{"image/png", "image/jpeg", "image/webp", "image/gif"}

// extensions names object keys by type, so a downloaded file opens right.
var extensions = map[string]string{
	"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif",
	"image/avif": "avif", "image/heic": "heic", "video/mp4": "mp4", "audio/mpeg": "mp3",
}

// Config configures the object store and the upload rules.
type Config struct {
	// Endpoint is the base URL of an S3-compatible API, e.g.
	// "http://minio:9000"; objects are then addressed path-style
	// (Endpoint/Bucket/key). Empty means AWS S3 in Region, virtual-hosted
	// style (https://Bucket.s3.Region.amazonaws.com/key).
	Endpoint string
	// Bucket holds the uploads, default "parley-media". It must exist.
	Bucket string
	// Region is the signing region, default "us-east-1".
	Region string
	// PublicURL is the base of object URLs given to clients and accepted in
	// media messages: an object's URL is PublicURL + "/" + key. Default: the
	// bucket's URL at Endpoint (or at AWS). Set it to a CDN in front of the
	// bucket. Clients load images from it without credentials, so the bucket
	// (or CDN) must allow anonymous reads of objects; keys are unguessable.
	PublicURL string
	// Credentials sign presigned URLs and the HEAD of Check. Required.
	Credentials aws.CredentialsProvider
	// AllowedTypes are the content types an upload may have, default
	// DefaultAllowedTypes. Compared in lower case.
	AllowedTypes []string
	// MaxBytes is the largest upload, bytes, default 10 MiB.
	MaxBytes int64
	// UploadTTL is how long a presigned URL stays valid, default 15m, at most 7 days.
	UploadTTL time.Duration
	// HTTPClient carries S3 API calls (default http.DefaultClient).
	HTTPClient *http.Client
	// OriginPath, when set, makes upload URLs point at the origin (scheme and
	// host) the client reached Parley at, plus this path: the embedded store
	// is mounted on Parley's own server, whose public address Parley does not
	// know. Endpoint is then only used by Parley's own calls.
	OriginPath string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Upload is the answer to POST /v1/media/uploads: PUT the file's bytes to
// UploadURL with Method, the Headers and Content-Length equal to the declared
// size, before ExpiresAt; then send a media message with url ObjectURL.
type Upload struct {
	UploadURL string `json:"upload_url"`
	// Method is always "PUT".
	Method string `json:"method"`
	// Headers must be sent as they are (they are signed): Content-Type, and
	// If-None-Match "*" so an object, once written, is never replaced.
	Headers map[string]string `json:"headers"`
	// ObjectURL is where the object is read from, and what a media message's
	// url must be. The embedded store gives a path on Parley's own origin
	// ("/s3/parley-media/u/alice/…"); resolve it against the server's URL.
	ObjectURL string `json:"object_url"`
	// Key is the object's key in the bucket.
	Key string `json:"key"`
	// Mime and Size echo what the upload is bound to.
	Mime string `json:"mime"`
	Size int64  `json:"size"`
	// ExpiresAt is when UploadURL stops working, Unix milliseconds.
	ExpiresAt int64 `json:"expires_at"`
}

// Service presigns uploads and checks media messages. Safe for concurrent use.
type Service struct {
	cfg     Config
	client  *s3.Client
	presign *s3.PresignClient
	types   []string
	log     *slog.Logger
}

// New returns a Service for cfg. It makes no network call.
func New(cfg Config) (*Service, error) {
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.UploadTTL <= 0 {
		cfg.UploadTTL = DefaultUploadTTL
	}
	if cfg.UploadTTL > MaxUploadTTL {
		return nil, fmt.Errorf("media: upload TTL %s is over the SigV4 limit of %s", cfg.UploadTTL, MaxUploadTTL)
	}
	if cfg.Credentials == nil {
		return nil, errors.New("media: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.AllowedTypes) == 0 {
		cfg.AllowedTypes = DefaultAllowedTypes
	}
	types := make([]string, 0, len(cfg.AllowedTypes))
	for _, t := range cfg.AllowedTypes {
		t = strings.ToLower(strings.TrimSpace(t))
		if !validMime(t) {
			return nil, fmt.Errorf("media: allowed type %q is not a type/subtype", t)
		}
		types = append(types, t)
	}
	cfg.Endpoint = strings.TrimRight(cfg.Endpoint, "/")
	if cfg.PublicURL == "" {
		if cfg.Endpoint != "" {
			cfg.PublicURL = cfg.Endpoint + "/" + cfg.Bucket
		} else {
			cfg.PublicURL = "https://" + cfg.Bucket + ".s3." + cfg.Region + ".amazonaws.com"
		}
	}
	cfg.PublicURL = strings.TrimRight(cfg.PublicURL, "/")
	opts := s3.Options{
		Region:       cfg.Region,
		Credentials:  cfg.Credentials,
		UsePathStyle: cfg.Endpoint != "",
		HTTPClient:   cfg.HTTPClient,
		// Presigned URLs must not carry checksums of a body the SDK never
		// sees: a browser could not send a matching one.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	if cfg.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(cfg.Endpoint)
	}
	client := s3.New(opts)
	return &Service{
		cfg:     cfg,
		client:  client,
		presign: s3.NewPresignClient(client),
		types:   types,
		log:     cfg.Logger,
	}, nil
}

// EnvCredentials returns static credentials from AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and (optional) AWS_SESSION_TOKEN, or an error naming
// the missing variables.
func EnvCredentials() (aws.CredentialsProvider, error) {
	id, secret := os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	if id == "" || secret == "" {
		return nil, errors.New("media: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the S3 bucket")
	}
	return credentials.NewStaticCredentialsProvider(id, secret, os.Getenv("AWS_SESSION_TOKEN")), nil
}

// AllowedTypes returns the content types an upload may have.
func (s *Service) AllowedTypes() []string { return slices.Clone(s.types) }

// MaxBytes returns the largest upload, bytes.
func (s *Service) MaxBytes() int64 { return s.cfg.MaxBytes }

// Bucket returns the bucket uploads go to.
func (s *Service) Bucket() string { return s.cfg.Bucket }

// PublicURL returns the base of object URLs (PublicURL + "/" + key).
func (s *Service) PublicURL() string { return s.cfg.PublicURL }

var mimeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$`)

func validMime(t string) bool { return mimeRE.MatchString(t) }

// Presign returns a presigned PUT for a new object of userID with the given
// content type and size in bytes. origin ("https://chat.example.com") is
// where the client reached Parley; it is used only with Config.OriginPath.
// Errors: invalid (type not allowed, size < 1), too_large (size over
// MaxBytes), unavailable (signing failed).
func (s *Service) Presign(ctx context.Context, userID, mime string, size int64, origin string) (*Upload, error) {
	mime = strings.ToLower(strings.TrimSpace(mime))
	if !slices.Contains(s.types, mime) {
		if mime == "" {
			return nil, wire.Errorf(wire.CodeInvalid, "mime is required; allowed types: %s", strings.Join(s.types, ", "))
		}
		return nil, wire.Errorf(wire.CodeInvalid, "type %.80q is not allowed; allowed types: %s", mime, strings.Join(s.types, ", "))
	}
	if size < 1 {
		return nil, wire.Errorf(wire.CodeInvalid, "size must be the upload's length in bytes, 1..%d; got %d", s.cfg.MaxBytes, size)
	}
	if size > s.cfg.MaxBytes {
		return nil, wire.Errorf(wire.CodeTooLarge, "the file is %d bytes; the limit is %d bytes (%s)", size, s.cfg.MaxBytes, humanBytes(s.cfg.MaxBytes))
	}
	key, err := newKey(userID, mime)
	if err != nil {
		return nil, err
	}
	in := &s3.PutObjectInput{
		Bucket:        aws.String(s.cfg.Bucket),
		Key:           aws.String(key),
		ContentType:   aws.String(mime),
		ContentLength: aws.Int64(size),
		IfNoneMatch:   aws.String("*"),
	}
	opts := []func(*s3.PresignOptions){s3.WithPresignExpires(s.cfg.UploadTTL)}
	if s.cfg.OriginPath != "" {
		if origin == "" {
			return nil, wire.Errorf(wire.CodeInvalid, "cannot tell this server's address from the request (no Host)")
		}
		base := strings.TrimRight(origin, "/") + s.cfg.OriginPath
		opts = append(opts, s3.WithPresignClientFromClientOptions(func(o *s3.Options) { o.BaseEndpoint = aws.String(base) }))
	}
	signed := time.Now()
	req, err := s.presign.PresignPutObject(ctx, in, opts...)
	if err != nil {
		s.log.Error("presign upload", "bucket", s.cfg.Bucket, "err", err)
		return nil, &wire.Error{Code: wire.CodeUnavailable, Message: "cannot sign an upload URL right now", RetryAfterMs: 1000}
	}
	headers := make(map[string]string, len(req.SignedHeader))
	for k, v := range req.SignedHeader {
		// A browser sets Host and Content-Length itself and may not set them.
		if len(v) == 0 || strings.EqualFold(k, "Host") || strings.EqualFold(k, "Content-Length") {
			continue
		}
		headers[k] = strings.Join(v, ",")
	}
	return &Upload{
		UploadURL: req.URL,
		Method:    req.Method,
		Headers:   headers,
		ObjectURL: s.cfg.PublicURL + "/" + key,
		Key:       key,
		Mime:      mime,
		Size:      size,
		ExpiresAt: signed.Add(s.cfg.UploadTTL).UnixMilli(),
	}, nil
}

var keyEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newKey returns "u/<user segment>/<26 random base32 chars>.<ext>": 130 bits
// of randomness, so an object URL is not guessable.
func newKey(userID, mime string) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("media: random key: %w", err)
	}
	ext := extensions[mime]
	if ext == "" {
		ext = "bin"
	}
	return "u/" + userSegment(userID) + "/" + strings.ToLower(keyEncoding.EncodeToString(b[:])) + "." + ext, nil
}

// userSegment is a user id as a key segment. "." and ".." are valid user ids
// but URL paths collapse them, so they get a "_" prefix, which no user id has.
func userSegment(userID string) string {
	if userID == "." || userID == ".." {
		return "_" + userID
	}
	return userID
}

// keyRE matches the keys newKey makes; group 1 is the user segment.
var keyRE = regexp.MustCompile(`^u/([A-Za-z0-9._@-]{1,64}|_\.{1,2})/[a-z2-7]{26}\.[a-z0-9]{1,8}$`)

// Check verifies that media m, sent by userID, references an object userID
// uploaded to this store, and returns the media as stored: the canonical URL
// and the object's own content type and size (a client's claims about them
// are not trusted). Errors (*wire.Error): invalid for a URL outside this
// bucket, another user's object, a missing object or a type not allowed;
// too_large for an object over MaxBytes; unavailable when the store cannot
// be asked.
func (s *Service) Check(ctx context.Context, userID string, m *parleyv1.Media) (*parleyv1.Media, error) {
	u := m.GetUrl()
	prefix := s.cfg.PublicURL + "/"
	if !strings.HasPrefix(u, prefix) {
		return nil, wire.Errorf(wire.CodeInvalid, "media.url must be an object uploaded to this server's store (%s…); get one from POST /v1/media/uploads", prefix)
	}
	key := u[len(prefix):]
	sm := keyRE.FindStringSubmatch(key)
	if sm == nil {
		return nil, wire.Errorf(wire.CodeInvalid, "media.url does not name an uploaded object (expected %su/<user>/<id>.<ext>)", prefix)
	}
	if sm[1] != userSegment(userID) {
		return nil, wire.Errorf(wire.CodeInvalid, "media.url refers to an object another user uploaded; upload your own copy")
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	head, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key)})
	if err != nil {
		var re *smithyhttp.ResponseError
		if errors.As(err, &re) {
			switch re.HTTPStatusCode() {
			case http.StatusNotFound:
				return nil, wire.Errorf(wire.CodeInvalid, "media object %s does not exist: PUT the file to the upload URL before sending", key)
			case http.StatusForbidden:
				s.log.Error("media check: the store refused HEAD; the server's S3 credentials need s3:GetObject and s3:ListBucket", "bucket", s.cfg.Bucket, "key", key, "err", err)
				return nil, &wire.Error{Code: wire.CodeUnavailable, Message: "the media store refused to confirm the object", RetryAfterMs: 5000}
			}
		}
		if ctx.Err() != nil {
			return nil, &wire.Error{Code: wire.CodeUnavailable, Message: "the media store did not answer in time", RetryAfterMs: 1000}
		}
		s.log.Warn("media check: head object", "bucket", s.cfg.Bucket, "key", key, "err", err)
		return nil, &wire.Error{Code: wire.CodeUnavailable, Message: "cannot reach the media store", RetryAfterMs: 1000}
	}
	mime := strings.ToLower(aws.ToString(head.ContentType))
	if i := strings.IndexByte(mime, ';'); i >= 0 {
		mime = strings.TrimSpace(mime[:i])
	}
	if !slices.Contains(s.types, mime) {
		return nil, wire.Errorf(wire.CodeInvalid, "media object has type %.80q, which is not allowed", mime)
	}
	size := aws.ToInt64(head.ContentLength)
	if size > s.cfg.MaxBytes {
		return nil, wire.Errorf(wire.CodeTooLarge, "media object is %d bytes; the limit is %d", size, s.cfg.MaxBytes)
	}
	if size < 1 {
		return nil, wire.Errorf(wire.CodeInvalid, "media object is empty")
	}
	return &parleyv1.Media{Url: u, Mime: mime, Size: size}, nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
