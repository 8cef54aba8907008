package ingress

import "testing"

func TestGatewayPartition(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want int32
		ok   bool
	}{
		{"gateway-0", 0, true},
		{"gateway-12", 12, true},
		{"parley-gateway-3", 3, true},
		{"gateway", 0, false},
		{"gateway-", 0, false},
		{"gateway-x", 0, false},
		{"gateway-99999999999", 0, false},
		{"", 0, false},
	} {
		got, err := GatewayPartition(tc.id)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("GatewayPartition(%q) = %d, %v; want %d, ok=%v", tc.id, got, err, tc.want, tc.ok)
		}
	}
}
