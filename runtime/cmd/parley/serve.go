package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/parleychat/parley/runtime/media"
	"github.com/parleychat/parley/runtime/server"
)

func serveCmd() *cobra.Command {
	cfg := server.DefaultConfig()
	var adminTokenFile string
	var fleet fleetFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run every role in one process on embedded storage, or one role of the distributed mode (--role, backend flags)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if adminTokenFile != "" {
				b, err := os.ReadFile(adminTokenFile)
				if err != nil {
					return fmt.Errorf("admin token: %w", err)
				}
				cfg.AdminToken = strings.TrimSpace(string(b))
				if len(cfg.AdminToken) < 16 {
					return fmt.Errorf("admin token in %s is shorter than 16 characters", adminTokenFile)
				}
			}
			srv, err := newServer(ctx, cfg, &fleet)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", cfg.Addr)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
			}
			printWelcome(cmd, srv, ln.Addr().String())
			err = srv.Run(ctx, ln)
			slog.Info("stopped")
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the Pebble store and the dev signing secret")
	f.StringVar(&cfg.Region, "region", cfg.Region, "region name (used in topic names)")
	f.StringVar(&cfg.JWKS.File, "jwks-file", "", "verify tokens (RS256/ES256/EdDSA) against this JWKS file instead of dev mode")
	f.StringVar(&cfg.JWKS.URL, "jwks-url", "", "verify tokens against this JWKS URL instead of dev mode")
	f.StringVar(&cfg.JWKS.Issuer, "jwt-issuer", "", "required token issuer (with --jwks-*)")
	f.StringVar(&cfg.JWKS.Audience, "jwt-audience", "", "required token audience (with --jwks-*)")
	f.DurationVar(&cfg.Presence.Heartbeat, "heartbeat", cfg.Presence.Heartbeat, "client heartbeat interval")
	f.DurationVar(&cfg.Presence.TTL, "presence-ttl", cfg.Presence.TTL, "presence and session TTL without heartbeat")
	f.DurationVar(&cfg.Presence.Grace, "presence-grace", cfg.Presence.Grace, "grace period before announcing offline")
	f.IntVar(&cfg.MaxGroupMembers, "max-group-members", cfg.MaxGroupMembers, "largest group, members")
	f.IntVar(&cfg.MaxMessageBytes, "max-message-bytes", cfg.MaxMessageBytes, "largest message text, bytes")
	f.DurationVar(&cfg.EditWindow, "edit-window", cfg.EditWindow, "how long after sending a sender may edit or delete a message (a group's owner deletes any message at any time)")
	f.Float64Var(&cfg.SendRate, "send-rate", cfg.SendRate, "per-user sends per second (token bucket rate)")
	f.IntVar(&cfg.SendBurst, "send-burst", cfg.SendBurst, "per-user send burst (token bucket size)")
	f.IntVar(&cfg.MaxConnections, "max-connections", 0, "most WebSocket connections this gateway holds; past it upgrades get 503 (0: no cap)")
	f.DurationVar(&cfg.HTTPReadTimeout, "http-read-timeout", cfg.HTTPReadTimeout, "bound of reading one HTTP request, body included (WebSocket connections are exempt once upgraded)")
	f.DurationVar(&cfg.HTTPWriteTimeout, "http-write-timeout", cfg.HTTPWriteTimeout, "bound of writing one HTTP response, from its request's start (WebSocket connections are exempt)")
	f.DurationVar(&cfg.HTTPIdleTimeout, "http-idle-timeout", cfg.HTTPIdleTimeout, "close a keep-alive HTTP connection idle this long between requests")
	f.Float64Var(&cfg.ReadRate, "read-rate", cfg.ReadRate, "per-user sync, history, inbox and receipts requests per second (token bucket rate; -1: no limit)")
	f.IntVar(&cfg.ReadBurst, "read-burst", cfg.ReadBurst, "per-user read burst (token bucket size)")
	f.DurationVar(&cfg.TypingInterval, "typing-interval", cfg.TypingInterval, "least time between two typing notices of one user in one conversation that the gateway fans out; the ones in between are dropped")
	f.IntVar(&cfg.MaxSessionsPerUser, "max-sessions-per-user", cfg.MaxSessionsPerUser, "most live WebSocket sessions of one user over the region; the newest past it is refused with too_many_sessions (-1: no cap)")
	f.BoolVar(&cfg.MetricsPrivate, "metrics-private", false, "serve /metrics only with the admin token (Authorization: Bearer, as /debug/pprof)")
	f.StringSliceVar(&cfg.AllowedOrigins, "allowed-origins", nil, "browser origins allowed to open a WebSocket besides the server's own, e.g. https://chat.example.com (default: any)")
	f.BoolVar(&cfg.PresencePublic, "presence-public", false, "let every user read every user's presence (default: only users who share a conversation)")
	f.IntVar(&cfg.SendQueue, "send-queue", cfg.SendQueue, "frames queued per connection before a non-reading client is disconnected")
	f.StringVar(&adminTokenFile, "admin-token-file", "", "file holding the bearer token of /v1/admin/* (drain); without it those endpoints are off")
	f.DurationVar(&cfg.DrainWindow, "drain-window", cfg.DrainWindow, "on shutdown, spread client reconnects over this window")
	f.StringVar(&cfg.Media.Endpoint, "s3-endpoint", "", "S3-compatible endpoint for uploads, e.g. http://minio:9000 (path-style); with neither --s3-endpoint nor --s3-bucket, Parley serves its own store from the data dir at /s3/")
	f.StringVar(&cfg.Media.Bucket, "s3-bucket", "", "bucket for uploads (AWS S3 when --s3-endpoint is empty); credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	f.StringVar(&cfg.Media.Region, "s3-region", media.DefaultRegion, "S3 signing region")
	f.StringVar(&cfg.Media.PublicURL, "s3-public-url", "", "base URL clients read objects from (a CDN or public bucket URL); default the bucket's URL")
	f.StringSliceVar(&cfg.Media.AllowedTypes, "media-types", media.DefaultAllowedTypes, "content types an upload may have")
	f.Int64Var(&cfg.Media.MaxBytes, "media-max-bytes", media.DefaultMaxBytes, "largest upload, bytes")
	f.DurationVar(&cfg.Media.UploadTTL, "media-upload-ttl", media.DefaultUploadTTL, "validity of a presigned upload URL (at most 168h)")
	addFleetFlags(cmd, &fleet)
	return cmd
}

func printWelcome(cmd *cobra.Command, srv *server.Server, addr string) {
	writeWelcome(cmd.OutOrStdout(), srv.Config(), srv.Role(), srv.DevIssuer != nil, addr)
}

// writeWelcome writes the banner of printWelcome: where the server listens
// and, in dev mode, the commands to chat and get a token, which carry
// --data-dir when it is not the default so they sign with the same secret.
func writeWelcome(out io.Writer, cfg server.Config, role server.Role, dev bool, addr string) {
	host := addr
	if strings.HasPrefix(host, "[::]:") || strings.HasPrefix(host, "0.0.0.0:") || strings.HasPrefix(host, ":") {
		host = "localhost:" + host[strings.LastIndex(host, ":")+1:]
	}
	fmt.Fprintf(out, "Parley is running on http://%s (data in %s)\n", host, cfg.DataDir)
	if role != server.RoleAll && role != server.RoleGateway {
		fmt.Fprintf(out, "Role %s: serves /healthz, /readyz and /metrics only\n", role)
		return
	}
	fmt.Fprintf(out, "Chat in a browser:      http://%s/\n", host)
	if dev {
		dd := dataDirFlag(cfg.DataDir)
		fmt.Fprintf(out, "Dev mode: anyone who reaches this port can sign in as anyone (POST /v1/dev/token).\n")
		fmt.Fprintf(out, `Dev mode: tokens are signed with the secret in %s/dev-secret.
  Chat in a terminal:   go run ./runtime/cmd/parley chat --user alice --url ws://%s%s
                        go run ./runtime/cmd/parley chat --user bob   --url ws://%s%s
  Get a token:          go run ./runtime/cmd/parley token --user alice%s
  Connect any client:   ws://%s/v1/ws  (subprotocol parley.v1.json or parley.v1.proto,
                        Authorization: Bearer <token> or ?access_token=<token>)
`, cfg.DataDir, host, dd, host, dd, dd, host)
	}
}
