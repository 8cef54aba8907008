// Package fleet runs the distributed mode as real processes — `parley serve
// --role gateway|chat|presence|push` — on the real Cassandra, Kafka and Redis
// that hack/deps.sh starts, and checks what users see across processes and
// what the store holds when processes die, stall or lose a backend.
//
// Each test gets its own region (its topics parley.<region>.*), keyspace and
// Redis key prefix, so tests do not see each other's data. Without the
// servers the tests skip, unless CI is set: then they fail.
package fleet

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/chat"
	"github.com/parleychat/parley/runtime/chat/ingress"
	"github.com/parleychat/parley/runtime/presence/relay"
	"github.com/parleychat/parley/runtime/push"
	"github.com/parleychat/parley/runtime/server"
	"github.com/parleychat/parley/runtime/store/cassandra"
	"github.com/parleychat/parley/test/internal/parleybin"
)

// binary is the parley binary built once by TestMain.
var binary string

// The servers, from the same environment variables as the backend
// conformance suites.
var (
	cassandraAddr = envOr("PARLEY_TEST_CASSANDRA", "127.0.0.1:9042")
	kafkaAddr     = envOr("PARLEY_TEST_KAFKA", "127.0.0.1:9092")
	redisAddr     = envOr("PARLEY_TEST_REDIS", "127.0.0.1:6379")
)

// missing says which server did not answer ("" when all did).
var missing string

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	for _, s := range []struct{ name, addr string }{{"Cassandra", cassandraAddr}, {"Kafka", kafkaAddr}, {"Redis", redisAddr}} {
		c, err := net.DialTimeout("tcp", s.addr, 2*time.Second)
		if err != nil {
			missing += fmt.Sprintf("%s not reachable at %s; ", s.name, s.addr)
			continue
		}
		c.Close()
	}
	if missing == "" {
		path, cleanup, err := parleybin.Build()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		binary = path
		code := m.Run()
		cleanup()
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// requireServers skips the test when a server is missing, except under CI.
func requireServers(t *testing.T) {
	t.Helper()
	if missing == "" {
		return
	}
	msg := missing + "run hack/deps.sh up redis kafka cassandra"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Test timings: short, so that grace, expiry and takeover happen within a
// test. 6s is the broker's smallest session timeout.
const (
	heartbeat      = 2 * time.Second
	presenceTTL    = 5 * time.Second
	presenceGrace  = time.Second
	sessionTimeout = 6 * time.Second
)

// cluster is one test's region: its topics, keyspace and Redis prefix, the
// processes started in it and a direct store handle for checks.
type cluster struct {
	t         *testing.T
	name      string // region, keyspace and Redis prefix
	secretDir string
	issuer    *auth.DevIssuer
	redis     string
	kafka     string
	store     *cassandra.Store

	mu    sync.Mutex
	procs []*proc
}

type clusterOpts struct {
	ingress, deliver int32
	// redis and kafka override the servers' addresses (private servers).
	redis, kafka string
}

// newCluster migrates a fresh keyspace and topics for the test.
func newCluster(t *testing.T, o clusterOpts) *cluster {
	t.Helper()
	requireServers(t)
	if o.ingress == 0 {
		o.ingress = 8
	}
	if o.deliver == 0 {
		o.deliver = 4
	}
	if o.redis == "" {
		o.redis = redisAddr
	}
	if o.kafka == "" {
		o.kafka = kafkaAddr
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	c := &cluster{t: t, name: "ft" + hex.EncodeToString(b), secretDir: t.TempDir(), redis: o.redis, kafka: o.kafka}
	secret, err := auth.LoadOrCreateDevSecret(c.secretDir)
	if err != nil {
		t.Fatal(err)
	}
	c.issuer = auth.NewDevIssuer(secret)

	start := time.Now()
	out, err := exec.Command(binary, "migrate",
		"--cassandra-hosts", cassandraAddr, "--cassandra-keyspace", c.name, "--replication-factor", "1",
		"--kafka-brokers", c.kafka, "--region", c.name,
		"--ingress-partitions", fmt.Sprint(o.ingress), "--deliver-partitions", fmt.Sprint(o.deliver),
		"--presence-partitions", "2", "--push-partitions", "2").CombinedOutput()
	if err != nil {
		t.Fatalf("parley migrate: %v\n%s", err, out)
	}
	t.Logf("migrated %s in %s", c.name, time.Since(start).Round(time.Millisecond))
	t.Cleanup(c.cleanup)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.store, err = cassandra.Open(ctx, cassandra.Config{Hosts: []string{cassandraAddr}, Keyspace: c.name})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return c
}

// cleanup kills every process, then drops the test's keyspace and topics.
func (c *cluster) cleanup() {
	c.mu.Lock()
	procs := c.procs
	c.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	if c.t.Failed() {
		for _, p := range procs {
			c.t.Logf("---- %s (tail)\n%s", p.name, p.tail(60))
		}
	}
	if c.store != nil {
		_ = c.store.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if s, err := cassandra.Connect(ctx, cassandra.Config{Hosts: []string{cassandraAddr}, Keyspace: c.name}); err == nil {
		if err := s.Query("DROP KEYSPACE IF EXISTS " + c.name).Consistency(gocql.One).ExecContext(ctx); err != nil {
			c.t.Logf("drop keyspace %s: %v", c.name, err)
		}
		s.Close()
	}
	if cl, err := kgo.NewClient(kgo.SeedBrokers(c.kafka)); err == nil {
		adm := kadm.NewClient(cl)
		_, _ = adm.DeleteTopics(ctx, ingress.IngressTopic(c.name), ingress.DeliverTopic(c.name), ingress.RelayTopic(c.name),
			ingress.OutboxTopic(c.name), relay.Topic(c.name), push.Topic(c.name))
		_, _ = adm.DeleteGroups(ctx, server.GroupID(chat.GroupName, c.name), server.GroupID(relay.GroupName, c.name), server.GroupID(push.GroupName, c.name))
		cl.Close()
	}
}

// common are the flags every process of the cluster gets.
func (c *cluster) common() []string {
	return []string{
		"--addr", "127.0.0.1:0",
		"--region", c.name,
		"--cassandra-hosts", cassandraAddr, "--cassandra-keyspace", c.name,
		"--kafka-brokers", c.kafka, "--kafka-session-timeout", sessionTimeout.String(),
		"--redis-addr", c.redis, "--redis-key-prefix", c.name + ":",
		"--heartbeat", heartbeat.String(), "--presence-ttl", presenceTTL.String(), "--presence-grace", presenceGrace.String(),
		"--drain-window", "100ms",
		// Tests send in bursts from few users.
		"--send-rate", "1000", "--send-burst", "1000",
	}
}

// gateway starts gateway gw-<i>; its data dir holds the cluster's dev secret.
func (c *cluster) gateway(i int, flags ...string) *proc {
	c.t.Helper()
	dir := c.t.TempDir()
	secret, err := os.ReadFile(filepath.Join(c.secretDir, "dev-secret"))
	if err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dev-secret"), secret, 0o600); err != nil {
		c.t.Fatal(err)
	}
	id := fmt.Sprintf("gw-%d", i)
	return c.start(id, append([]string{"--role", "gateway", "--gateway-id", id, "--data-dir", dir}, flags...)...)
}

// chat starts chat process chat-<i>.
func (c *cluster) chat(i int, flags ...string) *proc {
	c.t.Helper()
	id := fmt.Sprintf("chat-%d", i)
	return c.start(id, append([]string{"--role", "chat", "--member", id, "--data-dir", c.t.TempDir()}, flags...)...)
}

// presence starts presence process presence-<i>.
func (c *cluster) presence(i int, flags ...string) *proc {
	c.t.Helper()
	id := fmt.Sprintf("presence-%d", i)
	return c.start(id, append([]string{"--role", "presence", "--member", id, "--data-dir", c.t.TempDir()}, flags...)...)
}

func (c *cluster) start(name string, flags ...string) *proc {
	c.t.Helper()
	p := &proc{t: c.t, name: name, args: append(append([]string{"serve"}, c.common()...), flags...)}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	p.start()
	return p
}

// token issues a dev token for user/device.
func (c *cluster) token(user, device string) string {
	c.t.Helper()
	tok, err := c.issuer.Issue(user, device, time.Hour)
	if err != nil {
		c.t.Fatal(err)
	}
	return tok
}

// proc is one running `parley serve`.
type proc struct {
	t    *testing.T
	name string
	args []string
	cmd  *exec.Cmd
	Addr string

	mu     sync.Mutex
	logs   []string
	exited chan struct{}
}

var runningRE = regexp.MustCompile(`Parley is running on http://(\S+)`)

func (p *proc) start() {
	t := p.t
	t.Helper()
	p.cmd = exec.Command(binary, p.args...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	p.exited = make(chan struct{})
	addrc := make(chan string, 1)
	var pipes sync.WaitGroup
	read := func(r io.Reader) {
		defer pipes.Done()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs = append(p.logs, line)
			p.mu.Unlock()
			if m := runningRE.FindStringSubmatch(line); m != nil {
				select {
				case addrc <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, r)
	}
	pipes.Add(2)
	go read(stdout)
	go read(stderr)
	go func() {
		pipes.Wait()
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	select {
	case p.Addr = <-addrc:
	case <-p.exited:
		t.Fatalf("%s exited before listening:\n%s", p.name, p.tail(40))
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not print its address within 60s:\n%s", p.name, p.tail(40))
	}
	waitFor(t, 60*time.Second, p.name+" ready", func() bool {
		select {
		case <-p.exited:
			t.Fatalf("%s exited while starting:\n%s", p.name, p.tail(40))
		default:
		}
		resp, err := http.Get(p.HTTP() + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// tail returns the last n lines the process printed.
func (p *proc) tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	from := max(0, len(p.logs)-n)
	return strings.Join(p.logs[from:], "\n")
}

// count returns how many lines the process printed that contain sub.
func (p *proc) count(sub string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.logs {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

func (p *proc) HTTP() string { return "http://" + p.Addr }
func (p *proc) WS() string   { return "ws://" + p.Addr }

func (p *proc) signal(sig syscall.Signal) {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// kill sends SIGKILL (after SIGCONT, in case it is stopped) and waits.
func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.signal(syscall.SIGKILL)
	p.signal(syscall.SIGCONT)
	<-p.exited
}

// waitFor polls cond every 20ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
