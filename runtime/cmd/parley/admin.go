package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func adminCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "admin", Short: "Talk to a running server's admin endpoints"}
	cmd.AddCommand(drainCmd())
	return cmd
}

// drainCmd is what a gateway pod's preStop hook runs: it starts the drain and,
// with --wait, blocks until no connection is left or --timeout passes.
func drainCmd() *cobra.Command {
	var base, tokenFile string
	var window, timeout time.Duration
	var wait bool
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "Drain a gateway: reconnect frames spread over --window, then close",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := os.ReadFile(tokenFile)
			if err != nil {
				return fmt.Errorf("admin token: %w", err)
			}
			token := strings.TrimSpace(string(b))
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			st, err := adminCall(ctx, http.MethodPost, base+"/v1/admin/drain?window="+window.String(), token)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "draining: %d connections\n", st.Connections)
			for wait && st.Connections > 0 {
				select {
				case <-ctx.Done():
					return fmt.Errorf("%d connections left after %s", st.Connections, timeout)
				case <-time.After(500 * time.Millisecond):
				}
				if st, err = adminCall(ctx, http.MethodGet, base+"/v1/admin/connections", token); err != nil {
					return err
				}
			}
			if wait {
				fmt.Fprintln(cmd.OutOrStdout(), "drained")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&base, "url", "http://127.0.0.1:8080", "server base URL")
	f.StringVar(&tokenFile, "token-file", "", "file holding the admin bearer token")
	f.DurationVar(&window, "window", 30*time.Second, "spread client reconnects over this window")
	f.DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long")
	f.BoolVar(&wait, "wait", false, "wait until no connection is left")
	_ = cmd.MarkFlagRequired("token-file")
	return cmd
}

type adminStatus struct {
	Draining    bool `json:"draining"`
	Connections int  `json:"connections"`
}

func adminCall(ctx context.Context, method, url, token string) (adminStatus, error) {
	var st adminStatus
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return st, fmt.Errorf("admin %s: %w", url, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("admin %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return st, fmt.Errorf("admin %s: HTTP %d: %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("admin %s: decode %q: %w", url, body, err)
	}
	return st, nil
}
