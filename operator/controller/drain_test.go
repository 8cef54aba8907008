package controller

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestHTTPAdmin drives HTTPAdmin against a server that answers like a gateway's admin endpoints.
func TestHTTPAdmin(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Method+" "+r.URL.RequestURI())
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":{"code":"unauthenticated","message":"admin endpoints need a bearer token"}}`))
			return
		}
		switch r.URL.Path {
		case "/v1/admin/drain":
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte(`{"draining":true,"connections":7}`))
		case "/v1/admin/connections":
			_, _ = w.Write([]byte(`{"draining":true,"connections":0}`))
		}
	}))
	defer srv.Close()
	a := &HTTPAdmin{BaseURL: func(*corev1.Pod) (string, error) { return srv.URL, nil }}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "g-0"}}
	ctx := context.Background()

	st, err := a.Drain(ctx, pod, "s3cret", 30*time.Second)
	if err != nil || !st.Draining || st.Connections != 7 {
		t.Fatalf("Drain = %+v, %v", st, err)
	}
	st, err = a.Status(ctx, pod, "s3cret")
	if err != nil || st.Connections != 0 {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	if _, err := a.Status(ctx, pod, "wrong"); err == nil || !strings.Contains(err.Error(), "HTTP 401") {
		t.Fatalf("wrong token: %v, want HTTP 401", err)
	}
	want := []string{"POST /v1/admin/drain?window=30s", "GET /v1/admin/connections", "GET /v1/admin/connections"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("calls %v, want %v", got, want)
	}
	if _, err := PodIPBaseURL(pod); err == nil {
		t.Errorf("a pod without an IP has a base URL")
	}
	pod.Status.PodIP = "fd00::1"
	if u, _ := PodIPBaseURL(pod); u != "http://[fd00::1]:8080" {
		t.Errorf("IPv6 base URL %q", u)
	}
}
