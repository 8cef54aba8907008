package server

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/bus/memory"
	"github.com/parleychat/parley/runtime/presence"
	presencememory "github.com/parleychat/parley/runtime/presence/memory"
)

func TestResolveFleetConfig(t *testing.T) {
	base := func(role Role) FleetConfig {
		fc := FleetConfig{Role: role, NodeID: -1}
		fc.Kafka.Brokers = []string{"k:9092"}
		fc.Cassandra.Hosts = []string{"c"}
		fc.Redis.Addr = "r:6379"
		return fc
	}
	tests := []struct {
		name    string
		fc      func() FleetConfig
		wantErr string
		check   func(t *testing.T, fc FleetConfig, roles map[Role]bool)
	}{
		{name: "chat node id from region and ordinal", fc: func() FleetConfig {
			fc := base(RoleChat)
			fc.RegionID, fc.Member = 5, "parley-chat-17"
			return fc
		}, check: func(t *testing.T, fc FleetConfig, roles map[Role]bool) {
			if fc.NodeID != 5<<7|17 {
				t.Fatalf("node id %d, want %d", fc.NodeID, 5<<7|17)
			}
			if !roles[RoleChat] || roles[RoleGateway] || roles[RolePush] {
				t.Fatalf("roles %v", roles)
			}
		}},
		{name: "explicit node id wins", fc: func() FleetConfig {
			fc := base(RoleChat)
			fc.Member, fc.NodeID = "no-ordinal", 900
			return fc
		}, check: func(t *testing.T, fc FleetConfig, _ map[Role]bool) {
			if fc.NodeID != 900 {
				t.Fatalf("node id %d", fc.NodeID)
			}
		}},
		{name: "chat without ordinal", fc: func() FleetConfig {
			fc := base(RoleChat)
			fc.Member = "chatbox"
			return fc
		}, wantErr: "--node-id"},
		{name: "ordinal too large", fc: func() FleetConfig {
			fc := base(RoleChat)
			fc.Member = "chat-128"
			return fc
		}, wantErr: "over 127"},
		{name: "region id range", fc: func() FleetConfig {
			fc := base(RoleChat)
			fc.Member, fc.RegionID = "chat-1", 8
			return fc
		}, wantErr: "--region-id"},
		{name: "gateway needs an ordinal", fc: func() FleetConfig {
			fc := base(RoleGateway)
			fc.GatewayID = "gateway"
			return fc
		}, wantErr: "--gateway-id"},
		{name: "all without ordinals is one process", fc: func() FleetConfig {
			fc := base(RoleAll)
			fc.GatewayID, fc.Member = "laptop", "laptop"
			return fc
		}, check: func(t *testing.T, fc FleetConfig, roles map[Role]bool) {
			if fc.GatewayID != GatewayID || fc.NodeID != 0 || !roles[RoleGateway] || !roles[RoleChat] || !roles[RolePresence] || roles[RolePush] {
				t.Fatalf("gateway %s node %d roles %v", fc.GatewayID, fc.NodeID, roles)
			}
		}},
		{name: "presence needs no Cassandra", fc: func() FleetConfig {
			fc := base(RolePresence)
			fc.Cassandra.Hosts = nil
			fc.Member = "presence-0"
			return fc
		}},
		{name: "chat needs Cassandra and Redis", fc: func() FleetConfig {
			fc := base(RoleChat)
			fc.Member = "chat-0"
			fc.Cassandra.Hosts, fc.Redis.Addr = nil, ""
			return fc
		}, wantErr: "--cassandra-hosts"},
		{name: "push needs a webhook", fc: func() FleetConfig {
			fc := base(RolePush)
			fc.Member = "push-0"
			return fc
		}, wantErr: "--push-webhook"},
		{name: "chat publishes pushes when a webhook is set", fc: func() FleetConfig {
			fc := base(RoleChat)
			fc.Member, fc.Push.Webhook = "chat-0", "http://hook"
			return fc
		}, check: func(t *testing.T, fc FleetConfig, roles map[Role]bool) {
			if !roles[RolePush] {
				t.Fatalf("roles %v", roles)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fc := tt.fc()
			roles, err := fc.resolve(Config{Region: "eu"})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one about %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fc.Kafka.PublishTimeout != DefaultFleetPublishTimeout {
				t.Fatalf("publish timeout %v", fc.Kafka.PublishTimeout)
			}
			if tt.check != nil {
				tt.check(t, fc, roles)
			}
		})
	}
	if _, err := ParseRole("sequencer"); err == nil {
		t.Fatal("ParseRole accepted an unknown role")
	}
}

// failing is a registry whose Sessions fails (or hangs until ctx ends).
type failing struct {
	presence.Registry
	calls atomic.Int32
	hang  bool
}

func (f *failing) Sessions(ctx context.Context, _ []string) (map[string][]presence.Session, error) {
	f.calls.Add(1)
	if f.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return nil, errors.New("connection refused")
}

func TestRouteRegistryBreaks(t *testing.T) {
	f := &failing{Registry: presencememory.New(), hang: true}
	r := newRouteRegistry(f, 20*time.Millisecond)
	start := time.Now()
	if _, err := r.Sessions(context.Background(), []string{"a"}); err == nil {
		t.Fatal("a hung registry answered")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("the lookup was not bounded by the route timeout")
	}
	// Within routeBreak the registry is not asked again.
	if _, err := r.Sessions(context.Background(), []string{"a"}); !errors.Is(err, errRouteBreak) {
		t.Fatalf("second lookup: %v, want errRouteBreak", err)
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("registry asked %d times, want 1", n)
	}
	// A healthy registry is used directly.
	ok := newRouteRegistry(presencememory.New(), 0)
	if _, err := ok.Sessions(context.Background(), []string{"a"}); err != nil {
		t.Fatal(err)
	}
}

type nopHandler struct{ assigned chan []int32 }

func (h nopHandler) Assigned(ps []int32)              { h.assigned <- ps }
func (nopHandler) Revoked([]int32)                    {}
func (nopHandler) Handle(context.Context, bus.Record) {}

func TestWatchedBusScopesGroups(t *testing.T) {
	ctx := context.Background()
	mb := memory.New()
	defer mb.Close()
	if err := mb.CreateTopic(ctx, bus.Topic{Name: "t", Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	w := newWatchedBus(mb, "eu")
	h := nopHandler{assigned: make(chan []int32, 4)}
	m, err := w.Join(ctx, "parley.chat", "t", "chat-0", h)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.assigned:
	case <-time.After(5 * time.Second):
		t.Fatal("no assignment")
	}
	if got := w.Owned("parley.chat"); len(got) != 2 {
		t.Fatalf("owned %v, want both partitions", got)
	}
	// The same member id in the same group of another region is another
	// Kafka group: both own everything.
	h2 := nopHandler{assigned: make(chan []int32, 4)}
	m2, err := newWatchedBus(mb, "us").Join(ctx, "parley.chat", "t", "chat-0", h2)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ps := <-h2.assigned:
		if len(ps) != 2 {
			t.Fatalf("other region got %v", ps)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no assignment in the other region")
	}
	if GroupID("parley.chat", "eu") != "parley.chat.eu" {
		t.Fatal(GroupID("parley.chat", "eu"))
	}
	_ = m.Leave()
	_ = m2.Leave()
	if got := w.Owned("parley.chat"); len(got) != 0 {
		t.Fatalf("owned after leaving: %v", got)
	}
}
