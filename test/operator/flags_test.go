package operator

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/specs"
	"github.com/parleychat/parley/test/internal/parleybin"
)

// TestOperatorCommandLinesParse (issue 15): every command line the operator
// writes — `parley serve` of each role with its ConfigMap's values
// substituted, the gateways' preStop drain, the migrate Job — is accepted by
// the real parley binary (cobra rejects an unknown flag even with --help,
// so `… --help` exits 0 exactly when every flag is known). A flag renamed in
// the runtime and not in operator/specs fails here, not in a rollout.
func TestOperatorCommandLinesParse(t *testing.T) {
	bin, cleanup, err := parleybin.Build()
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	cc := &chatv1.ChatCluster{
		Spec: chatv1.ChatClusterSpec{
			Image:     "parley:test",
			Regions:   []chatv1.Region{testRegion("eu", 1, 2, 1, 1)},
			Cassandra: chatv1.CassandraSpec{ContactPoints: []string{"c0"}},
			Auth: chatv1.AuthSpec{JWKSURL: "https://idp.example/jwks.json", Issuer: "idp", Audience: "parley",
				AllowedOrigins: []string{"https://chat.example.com", "https://m.example.com"}, MetricsPrivate: true},
			Limits: chatv1.Limits{HTTPReadTimeout: &metav1.Duration{Duration: 30 * time.Second},
				TypingInterval:   &metav1.Duration{Duration: 2 * time.Second},
				HTTPWriteTimeout: &metav1.Duration{Duration: 90 * time.Second},
				HTTPIdleTimeout:  &metav1.Duration{Duration: time.Minute}},
			Media: chatv1.MediaSpec{Bucket: "media", Endpoint: "http://minio:9000", Region: "us-east-1", PublicURL: "https://cdn.example"},
		},
	}
	cc.Name, cc.Namespace = "flags", "chat"
	cc.Spec.Regions[0].Gateway.MaxConnections = 5000
	cc.Spec.Regions[0].Redis.KeyPrefix = "parley:eu:"
	chatv1.SetDefaults(cc)
	region := &cc.Spec.Regions[0]
	ref := regexp.MustCompile(`\$\(([A-Z0-9_]+)\)`)
	expand := func(args []string, env map[string]string) []string {
		out := make([]string, len(args))
		for i, a := range args {
			out[i] = ref.ReplaceAllStringFunc(a, func(m string) string { return env[ref.FindStringSubmatch(m)[1]] })
		}
		return out
	}
	accepts := func(what string, args []string) {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--help")...)
		cmd.Env = append(os.Environ(), "PARLEY_CONFIG=") // no config file from the environment
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: parley %s: %v\n%s", what, strings.Join(args, " "), err, firstLines(string(out), 3))
		}
	}
	for _, role := range []chatv1.Role{chatv1.RoleGateway, chatv1.RoleChat, chatv1.RolePresence} {
		sts := specs.StatefulSet(cc, region, role, 1)
		c := sts.Spec.Template.Spec.Containers[0]
		env := specs.RuntimeConfig(cc, region, role)
		accepts(string(role), expand(c.Args, env))
		if ps := c.Lifecycle; ps != nil && ps.PreStop != nil && ps.PreStop.Exec != nil {
			accepts(string(role)+" preStop", ps.PreStop.Exec.Command[1:])
		}
		if role == chatv1.RoleGateway && (c.Lifecycle == nil || c.Lifecycle.PreStop == nil) {
			t.Errorf("the gateway has no preStop hook")
		}
	}
	job := specs.MigrateJob(cc, region)
	jc := job.Spec.Template.Spec.Containers[0]
	accepts("migrate job", expand(jc.Args, envOf(jc)))
}

// envOf returns a container's literal environment.
func envOf(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}
