package main

import (
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/spf13/cobra"

	"github.com/parleychat/parley/runtime/server"
)

func serveCmd() *cobra.Command {
	cfg := server.DefaultConfig()
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run every role (gateway, chat, presence) in one process on embedded storage",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			srv, err := server.New(ctx, cfg)
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
	f.Float64Var(&cfg.SendRate, "send-rate", cfg.SendRate, "per-user sends per second (token bucket rate)")
	f.IntVar(&cfg.SendBurst, "send-burst", cfg.SendBurst, "per-user send burst (token bucket size)")
	f.IntVar(&cfg.SendQueue, "send-queue", cfg.SendQueue, "frames queued per connection before a non-reading client is disconnected")
	f.DurationVar(&cfg.DrainWindow, "drain-window", cfg.DrainWindow, "on shutdown, spread client reconnects over this window")
	return cmd
}

func printWelcome(cmd *cobra.Command, srv *server.Server, addr string) {
	host := addr
	if strings.HasPrefix(host, "[::]:") || strings.HasPrefix(host, "0.0.0.0:") || strings.HasPrefix(host, ":") {
		host = "localhost:" + host[strings.LastIndex(host, ":")+1:]
	}
	cfg := srv.Config()
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "Parley is running on http://%s (data in %s)\n", host, cfg.DataDir)
	if srv.DevIssuer != nil {
		fmt.Fprintf(out, `Dev mode: tokens are signed with the secret in %s/dev-secret.
  Chat in a terminal:   go run ./runtime/cmd/parley chat --user alice --url ws://%s
                        go run ./runtime/cmd/parley chat --user bob   --url ws://%s
  Get a token:          go run ./runtime/cmd/parley token --user alice
  Connect any client:   ws://%s/v1/ws  (subprotocol parley.v1.json or parley.v1.proto,
                        Authorization: Bearer <token> or ?access_token=<token>)
`, cfg.DataDir, host, host, host)
	}
}
