package specs

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func sample() *chatv1.ChatCluster {
	cc := &chatv1.ChatCluster{
		ObjectMeta: metav1.ObjectMeta{Name: "parley", Namespace: "chat"},
		Spec: chatv1.ChatClusterSpec{
			Image: "ghcr.io/parleychat/parley:v1",
			Regions: []chatv1.Region{{
				Name: "eu", ID: 2,
				NodeSelector: map[string]string{"topology.kubernetes.io/region": "europe-west1"},
				Gateway:      chatv1.GatewaySpec{Replicas: 3, MaxConnections: 20000},
				Chat:         chatv1.ChatSpec{Replicas: 4},
				Cassandra:    chatv1.RegionCassandra{LocalDatacenter: "europe-west1"},
				Kafka:        chatv1.RegionKafka{Brokers: []string{"k0:9092", "k1:9092"}},
				Redis:        chatv1.RegionRedis{Address: "redis:6379"},
			}, {
				Name: "us", ID: 0,
				Cassandra: chatv1.RegionCassandra{LocalDatacenter: "us-east1", ReplicationFactor: 5},
				Kafka:     chatv1.RegionKafka{Brokers: []string{"k-us:9092"}},
				Redis:     chatv1.RegionRedis{Address: "redis-us:6379"},
			}},
			Cassandra: chatv1.CassandraSpec{ContactPoints: []string{"c0", "c1"}, CredentialsSecretRef: &corev1.LocalObjectReference{Name: "cass"}},
			Auth:      chatv1.AuthSpec{JWKSURL: "https://idp.example/jwks.json", Audience: "parley"},
			Media:     chatv1.MediaSpec{Bucket: "media", CredentialsSecretRef: &corev1.LocalObjectReference{Name: "s3"}},
		},
	}
	chatv1.SetDefaults(cc)
	return cc
}

// golden compares got (as YAML) with testdata/<name>.yaml; -update rewrites it.
func golden(t *testing.T, name string, got any) {
	t.Helper()
	b, err := yaml.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name+".yaml")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./operator/specs -update)", err)
	}
	if string(want) != string(b) {
		t.Errorf("%s differs from %s (go test ./operator/specs -update rewrites it after review):\n%s", name, path, diffLines(string(want), string(b)))
	}
}

func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var out []string
	for i := 0; i < max(len(w), len(g)); i++ {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			out = append(out, "- "+a, "+ "+b)
		}
		if len(out) > 40 {
			break
		}
	}
	return strings.Join(out, "\n")
}

func TestGolden(t *testing.T) {
	cc := sample()
	eu := &cc.Spec.Regions[0]
	golden(t, "gateway-statefulset", StatefulSet(cc, eu, chatv1.RoleGateway, 3))
	golden(t, "chat-statefulset", StatefulSet(cc, eu, chatv1.RoleChat, 4))
	golden(t, "gateway-configmap", ConfigMap(cc, eu, chatv1.RoleGateway))
	golden(t, "client-service", ClientService(cc, eu))
	golden(t, "migrate-job", MigrateJob(cc, eu))
}

func TestRevisionChangesWithThePodOnly(t *testing.T) {
	base := sample()
	rev := func(cc *chatv1.ChatCluster, role chatv1.Role) string {
		return PodTemplate(cc, &cc.Spec.Regions[0], role).Labels[LabelRevision]
	}
	tests := []struct {
		name    string
		change  func(*chatv1.ChatCluster)
		role    chatv1.Role
		changes bool
	}{
		{"image", func(cc *chatv1.ChatCluster) { cc.Spec.Image = "x:2" }, chatv1.RoleChat, true},
		{"replicas", func(cc *chatv1.ChatCluster) { cc.Spec.Regions[0].Chat.Replicas = 9 }, chatv1.RoleChat, false},
		{"maxGroupMembers (config)", func(cc *chatv1.ChatCluster) { cc.Spec.Limits.MaxGroupMembers = 100 }, chatv1.RoleChat, true},
		{"send rate is gateway config", func(cc *chatv1.ChatCluster) { cc.Spec.Limits.SendRatePerSecond = 5 }, chatv1.RoleChat, false},
		{"send rate rolls gateways", func(cc *chatv1.ChatCluster) { cc.Spec.Limits.SendRatePerSecond = 5 }, chatv1.RoleGateway, true},
		{"drainTimeout rolls gateways", func(cc *chatv1.ChatCluster) { cc.Spec.Rollout.DrainTimeout.Duration *= 2 }, chatv1.RoleGateway, true},
		{"maxSurge does not", func(cc *chatv1.ChatCluster) { *cc.Spec.Rollout.MaxSurge = 3 }, chatv1.RoleGateway, false},
		{"paused does not", func(cc *chatv1.ChatCluster) { cc.Spec.Rollout.Paused = true }, chatv1.RoleGateway, false},
		{"httpReadTimeout rolls every role", func(cc *chatv1.ChatCluster) {
			cc.Spec.Limits.HTTPReadTimeout = &metav1.Duration{Duration: 30 * time.Second}
		}, chatv1.RoleChat, true},
		{"allowedOrigins rolls gateways", func(cc *chatv1.ChatCluster) {
			cc.Spec.Auth.AllowedOrigins = []string{"https://chat.example.com"}
		}, chatv1.RoleGateway, true},
		{"allowedOrigins is gateway config", func(cc *chatv1.ChatCluster) {
			cc.Spec.Auth.AllowedOrigins = []string{"https://chat.example.com"}
		}, chatv1.RoleChat, false},
		{"typingInterval rolls gateways", func(cc *chatv1.ChatCluster) {
			cc.Spec.Limits.TypingInterval = &metav1.Duration{Duration: 2 * time.Second}
		}, chatv1.RoleGateway, true},
		{"metricsPrivate rolls gateways", func(cc *chatv1.ChatCluster) { cc.Spec.Auth.MetricsPrivate = true }, chatv1.RoleGateway, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := base.DeepCopy()
			tt.change(cc)
			if changed := rev(cc, tt.role) != rev(base, tt.role); changed != tt.changes {
				t.Errorf("revision changed = %v, want %v", changed, tt.changes)
			}
		})
	}
}

func TestSpecHashIgnoresNothingThatMatters(t *testing.T) {
	cc := sample()
	eu := &cc.Spec.Regions[0]
	a := StatefulSet(cc, eu, chatv1.RoleGateway, 3).Annotations[AnnotationSpecHash]
	if b := StatefulSet(cc, eu, chatv1.RoleGateway, 3).Annotations[AnnotationSpecHash]; a != b {
		t.Fatalf("spec hash is not stable: %s vs %s", a, b)
	}
	if b := StatefulSet(cc, eu, chatv1.RoleGateway, 4).Annotations[AnnotationSpecHash]; a == b {
		t.Errorf("spec hash ignores replicas")
	}
}

func TestNodeIDsAndPartitions(t *testing.T) {
	cc := sample()
	tests := []struct {
		name      string
		got, want any
	}{
		{"chat ordinals of region 2", OrdinalStart(&cc.Spec.Regions[0], chatv1.RoleChat), int32(256)},
		{"gateway ordinals", OrdinalStart(&cc.Spec.Regions[0], chatv1.RoleGateway), int32(0)},
		{"deliver partitions small", DeliverPartitions(cc, &cc.Spec.Regions[0]), int32(64)},
		{"replication sorted by dc", CassandraReplication(cc), "europe-west1=3,us-east1=5"},
		{"drain window", DrainWindow(cc), "30s"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	big := sample()
	big.Spec.Regions[0].Gateway.Replicas = 200
	if n := DeliverPartitions(big, &big.Spec.Regions[0]); n != 512 {
		t.Errorf("deliver partitions for 200 gateways (ordinals below 2 x 200 + surge) = %d, want 512", n)
	}
	big.Spec.Regions[0].Gateway.Replicas = 31
	if n := DeliverPartitions(big, &big.Spec.Regions[0]); n != 64 {
		t.Errorf("deliver partitions for 31 gateways (ordinals below 63) = %d, want 64", n)
	}
}

func TestPodOrdinal(t *testing.T) {
	for name, want := range map[string]int32{"a-b-gateway-0": 0, "x-chat-384": 384} {
		if got, err := PodOrdinal(name); err != nil || got != want {
			t.Errorf("PodOrdinal(%q) = %d, %v; want %d", name, got, err, want)
		}
	}
	for _, bad := range []string{"nodash", "a-b-x", "a-"} {
		if _, err := PodOrdinal(bad); err == nil {
			t.Errorf("PodOrdinal(%q) accepted", bad)
		}
	}
}

// TestRedisKeyPrefix: a region's redis.keyPrefix reaches its roles as --redis-key-prefix; a
// region without one passes no flag (the runtime's default), so setting it on one region
// changes no other region's config.
func TestRedisKeyPrefix(t *testing.T) {
	cc := sample()
	cc.Spec.Regions[0].Redis.KeyPrefix = "parley:eu:"
	for _, role := range []chatv1.Role{chatv1.RoleGateway, chatv1.RoleChat, chatv1.RolePresence} {
		eu := RuntimeConfig(cc, &cc.Spec.Regions[0], role)
		if eu[EnvRedisKeyPrefix] != "parley:eu:" || !strings.Contains(strings.Join(configArgs(eu), " "), "--redis-key-prefix=$("+EnvRedisKeyPrefix+")") {
			t.Fatalf("%s of the region with a prefix: config %q, args %v", role, eu[EnvRedisKeyPrefix], configArgs(eu))
		}
		us := RuntimeConfig(cc, &cc.Spec.Regions[1], role)
		if p, ok := us[EnvRedisKeyPrefix]; ok || strings.Contains(strings.Join(configArgs(us), " "), "--redis-key-prefix") {
			t.Fatalf("%s of the region without a prefix: config %q, args %v; want none", role, p, configArgs(us))
		}
	}
}
