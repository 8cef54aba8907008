package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/client"
	"github.com/parleychat/parley/runtime/client/cli"
	"github.com/parleychat/parley/runtime/wire"
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
				// The first call may create the secret and warn; a refresh
				// (token_expired) finds it and says nothing.
				source = func(context.Context) (string, error) {
					return devToken(dataDir, user, device, "", 24*time.Hour, cmd.ErrOrStderr())
				}
				t, err := source(ctx)
				if err != nil {
					return err
				}
				token = t
			}
			c, err := client.Dial(ctx, client.Options{URL: serverURL, Token: token, TokenSource: source})
			if err != nil {
				return dialError(serverURL, err, source != nil, dataDir)
			}
			defer func() { _ = c.Close() }() // the session ends with the command
			rest := client.NewREST(httpBase(serverURL), token)
			return cli.Run(ctx, os.Stdin, cmd.OutOrStdout(), c, rest, c.UserID())
		},
	}
	f := cmd.Flags()
	f.StringVar(&user, "user", "", "your user id (dev mode: a token is made for it)")
	f.StringVar(&device, "device", "cli", "device id of this terminal")
	f.StringVar(&token, "token", "", "JWT to connect with instead of a dev token")
	f.StringVar(&serverURL, "url", "ws://localhost:8080", "server URL")
	f.StringVar(&dataDir, "data-dir", defaultDataDir, "dev mode: the server's data dir holding dev-secret")
	f.BoolVar(&verbose, "verbose", false, "log client diagnostics to stderr")
	return cmd
}

// dialError explains a failed connect. Its text is sanitised, since it may
// carry the server's error message. A dev token refused as unauthenticated
// almost always means it was signed with another data dir's secret.
func dialError(serverURL string, err error, devToken bool, dataDir string) error {
	msg := fmt.Sprintf("connect to %s: %s", serverURL, cli.Sanitize(err.Error()))
	var we *wire.Error
	if devToken && errors.As(err, &we) && we.Code == wire.CodeUnauthenticated {
		msg += fmt.Sprintf("\n  the dev token was signed with the secret in %s; check that --data-dir matches the server's --data-dir"+
			" (its banner prints the chat command with the right one), or pass --token", cli.Sanitize(filepath.Join(dataDir, auth.DevSecretFile)))
	}
	return &cleanError{msg: msg, err: err}
}

// cleanError is err with a message fit for the terminal.
type cleanError struct {
	msg string
	err error
}

func (e *cleanError) Error() string { return e.msg }
func (e *cleanError) Unwrap() error { return e.err }

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
