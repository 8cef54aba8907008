package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/parleychat/parley/runtime/wire"
)

// Dev-mode token constants.
const (
	// DevSecretFile is the name of the dev secret file in the data directory.
	DevSecretFile = "dev-secret"
	// DevSecretBytes is the length of a dev secret, in bytes. HS256 wants a
	// key at least as long as its 32-byte hash (RFC 7518 §3.2).
	DevSecretBytes = 32
	// DevIssuerName is the "iss" of dev tokens.
	DevIssuerName = "parley-dev"
	// DevAudience is the "aud" of dev tokens.
	DevAudience = "parley"
)

// LoadOrCreateDevSecret returns the dev-mode HMAC secret stored in
// <dataDir>/dev-secret, creating dataDir and the file (mode 0600, 32 random
// bytes, hex-encoded) when missing, so that dev tokens survive restarts.
// Creation is atomic: processes starting together end up with one secret.
// It returns an error when the file cannot be read or written, or does not
// hold a hex secret of at least 32 bytes.
func LoadOrCreateDevSecret(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, DevSecretFile)
	secret, err := readDevSecret(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return secret, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir for dev secret: %w", err)
	}
	secret = make([]byte, DevSecretBytes)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("generate dev secret: %w", err)
	}
	if err := createExclusive(path, []byte(hex.EncodeToString(secret)+"\n")); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process won the race; use its secret.
			return readDevSecret(path)
		}
		return nil, err
	}
	return secret, nil
}

// createExclusive writes data to path, mode 0600, unless path exists (then
// an fs.ErrExist error). The file appears whole or not at all: it is written
// to a temporary file and hard-linked into place, since a link, unlike a
// rename, does not replace an existing file.
func createExclusive(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*") // mode 0600
	if err != nil {
		return fmt.Errorf("write dev secret: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // only the link matters; a stray temp file is harmless
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write dev secret: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return err
		}
		// Some file systems have no hard links; a rename is atomic too,
		// only it may replace a secret written by a concurrent start.
		if rerr := os.Rename(tmp.Name(), path); rerr != nil {
			return fmt.Errorf("write dev secret: %w", rerr)
		}
	}
	return nil
}

func readDevSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read dev secret: %w", err)
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(secret) < DevSecretBytes {
		return nil, fmt.Errorf("dev secret %s is not %d+ hex-encoded bytes; delete it to have a new one made (dev tokens issued before become invalid)", path, DevSecretBytes)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		// Anyone who can read the secret can mint tokens for any user.
		if err := os.Chmod(path, 0o600); err != nil {
			slog.Warn("dev secret is readable by others and could not be restricted", "path", path, "mode", fi.Mode().Perm().String(), "err", err)
		}
	}
	return secret, nil
}

// DevIssuer mints dev-mode tokens that NewHMACVerifier accepts. It is safe
// for concurrent use.
type DevIssuer struct {
	secret []byte
}

// NewDevIssuer returns an issuer signing with secret (from
// LoadOrCreateDevSecret; at least DevSecretBytes long, or Issue fails).
func NewDevIssuer(secret []byte) *DevIssuer {
	return &DevIssuer{secret: secret}
}

// Issue returns an HS256 token for userID on deviceID (DefaultDeviceID when
// empty), valid from now for ttl: sub=userID, did=deviceID, iat, nbf, exp,
// iss "parley-dev", aud "parley". Bad ids or a ttl <= 0 give a *wire.Error
// with wire.CodeInvalid, since ids often come from a dev login request.
func (i *DevIssuer) Issue(userID, deviceID string, ttl time.Duration) (string, error) {
	return i.IssueHome(userID, deviceID, "", ttl)
}

// IssueHome is Issue with a "home_region" claim when homeRegion is not
// empty (ValidRegion must hold for it).
func (i *DevIssuer) IssueHome(userID, deviceID, homeRegion string, ttl time.Duration) (string, error) {
	if homeRegion != "" && !ValidRegion(homeRegion) {
		return "", wire.Errorf(wire.CodeInvalid, "home region %.80q is not 1..63 bytes of a-z0-9- starting with a letter", homeRegion)
	}
	if len(i.secret) < DevSecretBytes {
		return "", fmt.Errorf("dev issuer: secret is %d bytes, want at least %d", len(i.secret), DevSecretBytes)
	}
	if !ValidID(userID) {
		return "", wire.Errorf(wire.CodeInvalid, "user id %.80q is not 1..64 bytes of A-Za-z0-9._@-", userID)
	}
	if deviceID == "" {
		deviceID = DefaultDeviceID
	} else if !ValidID(deviceID) {
		return "", wire.Errorf(wire.CodeInvalid, "device id %.80q is not 1..64 bytes of A-Za-z0-9._@-", deviceID)
	}
	if ttl <= 0 {
		return "", wire.Errorf(wire.CodeInvalid, "token lifetime %s is not positive", ttl)
	}
	now := time.Now()
	claims := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    DevIssuerName,
			Subject:   userID,
			Audience:  jwt.ClaimStrings{DevAudience},
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
		},
		DeviceID:   deviceID,
		HomeRegion: homeRegion,
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(i.secret)
	if err != nil {
		return "", fmt.Errorf("sign dev token: %w", err)
	}
	return tok, nil
}

// NewHMACVerifier returns the dev-mode verifier: HS256 only, signed with
// secret, iss "parley-dev", aud "parley", exp required, Leeway on exp and
// nbf. A secret shorter than DevSecretBytes makes it reject every token,
// because a short (or empty) HMAC key lets anyone forge tokens.
func NewHMACVerifier(secret []byte) Verifier {
	key := append([]byte(nil), secret...)
	lookup := func(context.Context) jwt.Keyfunc {
		return func(*jwt.Token) (any, error) {
			if len(key) < DevSecretBytes {
				return nil, unauthenticated("dev token verification is misconfigured: secret is %d bytes, want at least %d", len(key), DevSecretBytes)
			}
			return key, nil
		}
	}
	return newVerifier([]string{jwt.SigningMethodHS256.Alg()}, DevIssuerName, DevAudience, lookup)
}
