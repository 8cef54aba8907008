package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/parleychat/parley/runtime/auth"
)

func tokenCmd() *cobra.Command {
	var user, device, home, dataDir string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token --user NAME",
		Short: "Print a development JWT signed with the data dir's dev secret",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := devToken(dataDir, user, device, home, ttl, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "user id (the token's subject), 1..64 of [A-Za-z0-9._@-]")
	cmd.Flags().StringVar(&device, "device", "default", "device id")
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "token lifetime")
	cmd.Flags().StringVar(&home, "home-region", "", "the user's home region (home_region claim) in a multi-region deployment; default: the region of their first connection")
	cmd.Flags().StringVar(&dataDir, "data-dir", defaultDataDir, "data dir of the server whose dev secret signs the token")
	_ = cmd.MarkFlagRequired("user")
	return cmd
}

// defaultDataDir is the --data-dir of serve, token and chat.
const defaultDataDir = "./parley-data"

// devToken signs a token with the dev secret in dataDir, creating the secret
// (and the dir) if the server has not started yet, so both agree later.
// When it creates the secret it writes a warning to warn: a server already
// running with another --data-dir will refuse the token.
func devToken(dataDir, user, device, home string, ttl time.Duration, warn io.Writer) (string, error) {
	if !auth.ValidID(user) {
		return "", fmt.Errorf("user %q is not a valid id: 1..64 characters of A-Z a-z 0-9 . _ @ -", user)
	}
	if !auth.ValidID(device) {
		return "", fmt.Errorf("device %q is not a valid id: 1..64 characters of A-Z a-z 0-9 . _ @ -", device)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("ttl must be positive, got %s", ttl)
	}
	_, statErr := os.Stat(filepath.Join(dataDir, auth.DevSecretFile))
	secret, err := auth.LoadOrCreateDevSecret(dataDir)
	if err != nil {
		return "", fmt.Errorf("dev secret in %s: %w", dataDir, err)
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		fmt.Fprintf(warn, "parley: warning: there was no dev secret in %s, so a new one was created in %s;\n"+
			"  the token is only accepted by a server started with --data-dir %s\n"+
			"  (if your server is already running, use the --data-dir its banner shows)\n",
			dataDir, filepath.Join(dataDir, auth.DevSecretFile), shellQuote(dataDir))
	}
	return auth.NewDevIssuer(secret).IssueHome(user, device, home, ttl)
}

// dataDirFlag is " --data-dir <dir>" for commands printed for the user to
// run, or "" for the default dir (which they use without the flag).
func dataDirFlag(dataDir string) string {
	if filepath.Clean(dataDir) == filepath.Clean(defaultDataDir) {
		return ""
	}
	return " --data-dir " + shellQuote(dataDir)
}

// shellQuote quotes s for a POSIX shell when it holds anything but
// [A-Za-z0-9._/@:=+,-].
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._/@:=+,-", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
