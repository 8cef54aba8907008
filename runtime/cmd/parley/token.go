package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/parleychat/parley/runtime/auth"
)

func tokenCmd() *cobra.Command {
	var user, device, dataDir string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "token --user NAME",
		Short: "Print a development JWT signed with the data dir's dev secret",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := devToken(dataDir, user, device, ttl)
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
	cmd.Flags().StringVar(&dataDir, "data-dir", "./parley-data", "data dir of the server whose dev secret signs the token")
	_ = cmd.MarkFlagRequired("user")
	return cmd
}

// devToken signs a token with the dev secret in dataDir, creating the secret
// (and the dir) if the server has not started yet, so both agree later.
func devToken(dataDir, user, device string, ttl time.Duration) (string, error) {
	if !auth.ValidID(user) {
		return "", fmt.Errorf("user %q is not a valid id: 1..64 characters of A-Z a-z 0-9 . _ @ -", user)
	}
	if !auth.ValidID(device) {
		return "", fmt.Errorf("device %q is not a valid id: 1..64 characters of A-Z a-z 0-9 . _ @ -", device)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("ttl must be positive, got %s", ttl)
	}
	secret, err := auth.LoadOrCreateDevSecret(dataDir)
	if err != nil {
		return "", fmt.Errorf("dev secret in %s: %w", dataDir, err)
	}
	return auth.NewDevIssuer(secret).Issue(user, device, ttl)
}
