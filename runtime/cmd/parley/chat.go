package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/parleychat/parley/runtime/client"
	"github.com/parleychat/parley/runtime/client/cli"
)

func chatCmd() *cobra.Command {
	var user, device, token, serverURL, dataDir string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "chat --user NAME",
		Short: "Chat in the terminal (type /help inside)",
		Long: `Chat in the terminal. In dev mode the token is made from the dev secret in
--data-dir (the server's, on this machine); otherwise pass --token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if !verbose {
				// The terminal is the user interface: keep SDK diagnostics off it.
				slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
			}
			var source func(context.Context) (string, error)
			if token == "" {
				if user == "" {
					return fmt.Errorf("--user is required (or --token)")
				}
				source = func(context.Context) (string, error) { return devToken(dataDir, user, device, 24*time.Hour) }
				t, err := source(ctx)
				if err != nil {
					return err
				}
				token = t
			}
			c, err := client.Dial(ctx, client.Options{URL: serverURL, Token: token, TokenSource: source})
			if err != nil {
				return fmt.Errorf("connect to %s: %w", serverURL, err)
			}
			defer c.Close()
			rest := client.NewREST(httpBase(serverURL), token)
			return cli.Run(ctx, os.Stdin, cmd.OutOrStdout(), c, rest, c.UserID())
		},
	}
	f := cmd.Flags()
	f.StringVar(&user, "user", "", "your user id (dev mode: a token is made for it)")
	f.StringVar(&device, "device", "cli", "device id of this terminal")
	f.StringVar(&token, "token", "", "JWT to connect with instead of a dev token")
	f.StringVar(&serverURL, "url", "ws://localhost:8080", "server URL")
	f.StringVar(&dataDir, "data-dir", "./parley-data", "dev mode: the server's data dir holding dev-secret")
	f.BoolVar(&verbose, "verbose", false, "log client diagnostics to stderr")
	return cmd
}

// httpBase turns ws(s)://host into http(s)://host for the REST API.
func httpBase(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "http://" + strings.TrimPrefix(raw, "//")
	}
	switch u.Scheme {
	case "wss", "https":
		u.Scheme = "https"
	default:
		u.Scheme = "http"
	}
	u.Path = ""
	return u.String()
}
