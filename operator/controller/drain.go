package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/parleychat/parley/operator/specs"
)

// AdminStatus is a gateway's answer on its admin endpoints.
type AdminStatus struct {
	Draining    bool `json:"draining"`
	Connections int  `json:"connections"`
}

// GatewayAdmin talks to a gateway pod's authenticated admin endpoints. The reconciler drains
// gateways through it; tests point it at HTTP servers that behave like gateways, since pods
// under envtest have no IPs.
type GatewayAdmin interface {
	// Drain starts draining pod: /readyz turns 503 and clients get reconnect frames spread over
	// window. Calling it again reports progress and does not restart the drain.
	Drain(ctx context.Context, pod *corev1.Pod, token string, window time.Duration) (AdminStatus, error)
	// Status reports whether pod drains and how many connections it still has.
	Status(ctx context.Context, pod *corev1.Pod, token string) (AdminStatus, error)
	// Outbox asks a chat pod how many sends its region's outbox holds that were not yet
	// forwarded to their home regions (the whole region's, not only the pod's).
	Outbox(ctx context.Context, pod *corev1.Pod, token string) (OutboxStatus, error)
}

// OutboxStatus is a chat pod's answer on GET /v1/admin/outbox.
type OutboxStatus struct {
	Region  string `json:"region"`
	Pending int64  `json:"pending"`
}

// HTTPAdmin is the GatewayAdmin of a real cluster:
//
//	POST <base>/v1/admin/drain?window=30s → 202 {"draining":true,"connections":N}
//	GET  <base>/v1/admin/connections      → 200 {"draining":bool,"connections":N}
//	GET  <base>/v1/admin/outbox           → 200 {"region":"eu","pending":N} (chat pods)
//
// with "Authorization: Bearer <token>".
type HTTPAdmin struct {
	// Client defaults to one with a 5 s timeout.
	Client *http.Client
	// BaseURL maps a pod to its admin base URL; default http://<pod IP>:8080.
	BaseURL func(pod *corev1.Pod) (string, error)
}

// PodIPBaseURL is HTTPAdmin's default BaseURL.
func PodIPBaseURL(pod *corev1.Pod) (string, error) {
	if pod.Status.PodIP == "" {
		return "", fmt.Errorf("pod %s has no IP yet", pod.Name)
	}
	host := pod.Status.PodIP
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("http://%s:%d", host, specs.HTTPPort), nil
}

// Drain implements GatewayAdmin.
func (a *HTTPAdmin) Drain(ctx context.Context, pod *corev1.Pod, token string, window time.Duration) (AdminStatus, error) {
	var st AdminStatus
	err := a.call(ctx, http.MethodPost, pod, "/v1/admin/drain?window="+url.QueryEscape(window.String()), token, &st)
	return st, err
}

// Status implements GatewayAdmin.
func (a *HTTPAdmin) Status(ctx context.Context, pod *corev1.Pod, token string) (AdminStatus, error) {
	var st AdminStatus
	err := a.call(ctx, http.MethodGet, pod, "/v1/admin/connections", token, &st)
	return st, err
}

// Outbox implements GatewayAdmin.
func (a *HTTPAdmin) Outbox(ctx context.Context, pod *corev1.Pod, token string) (OutboxStatus, error) {
	var st OutboxStatus
	err := a.call(ctx, http.MethodGet, pod, "/v1/admin/outbox", token, &st)
	return st, err
}

// call sends one admin request to pod and decodes the JSON answer into out.
func (a *HTTPAdmin) call(ctx context.Context, method string, pod *corev1.Pod, path, token string, out any) error {
	baseURL := a.BaseURL
	if baseURL == nil {
		baseURL = PodIPBaseURL
	}
	base, err := baseURL(pod)
	if err != nil {
		return err
	}
	client := a.Client
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
	if err != nil {
		return fmt.Errorf("admin %s %s: %w", method, pod.Name, err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("admin %s %s: %w", method, pod.Name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("admin %s %s%s: HTTP %d: %s", method, pod.Name, path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("admin %s %s%s: decode %q: %w", method, pod.Name, path, body, err)
	}
	return nil
}
