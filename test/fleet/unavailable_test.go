package fleet

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/parleychat/parley/runtime/chat/rules"
	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store/cassandra"
	"github.com/parleychat/parley/runtime/wire"
)

// How the outages are made without disturbing other tests that share the
// servers:
//
//   - Cassandra: this test's keyspace gets replication factor 2 on the
//     one-node cluster, so LOCAL_QUORUM and LOCAL_SERIAL cannot be met
//     (Unavailable, as when replicas are down) until it is set back to 1.
//   - Kafka: the test runs its own broker and kills it. (Raising a topic's
//     min.insync.replicas does not work: Kafka caps it at the replication
//     factor.)

// setRF sets the replication factor of the cluster's keyspace.
func (c *cluster) setRF(n int) {
	c.t.Helper()
	ctx := ctxT(c.t, 30*time.Second)
	s, err := cassandra.Connect(ctx, cassandra.Config{Hosts: []string{cassandraAddr}, Keyspace: c.name})
	if err != nil {
		c.t.Fatal(err)
	}
	defer s.Close()
	q := fmt.Sprintf("ALTER KEYSPACE %s WITH replication = {'class': 'SimpleStrategy', 'replication_factor': %d}", c.name, n)
	if err := s.Query(q).Consistency(gocql.One).ExecContext(ctx); err != nil {
		c.t.Fatalf("%s: %v", q, err)
	}
}

// outageRun is one test's sends around backend outages.
type outageRun struct {
	t       *testing.T
	c       *cluster
	alice   *device
	rest    *client.REST
	conv    string
	acks    ackLog
	refused []string // texts answered unavailable
}

func newOutageRun(t *testing.T, c *cluster, gw *proc) *outageRun {
	r := &outageRun{t: t, c: c, conv: rules.DMID("alice", "bob")}
	r.alice = c.connect(gw.WS(), "alice", "phone")
	r.rest = client.NewREST(gw.HTTP(), c.token("alice", "phone"))
	r.sendN("before", 3)
	return r
}

// sendN sends n messages with the SDK, each must succeed.
func (r *outageRun) sendN(prefix string, n int) {
	r.t.Helper()
	ctx := ctxT(r.t, time.Minute)
	for i := range n {
		text := fmt.Sprintf("%s %d", prefix, i)
		ok, err := r.alice.Send(ctx, r.conv, text)
		if err != nil {
			r.t.Fatal(err)
		}
		r.acks.add(r.conv, text, ok)
	}
}

// outage begins an outage, waits for a REST send answered unavailable with
// retry_after_ms, starts an SDK send that must stay pending, ends the
// outage and waits for that send to complete on its own.
func (r *outageRun) outage(name string, begin, end func()) {
	t := r.t
	t.Helper()
	ctx := ctxT(t, 2*time.Minute)
	begin()
	var we *wire.Error
	waitFor(t, 60*time.Second, name+": a send answered unavailable", func() bool {
		text := fmt.Sprintf("%s refused %d", name, len(r.refused))
		ok, err := r.rest.Send(ctx, r.conv, client.NewClientMsgID(), text)
		if err == nil {
			// Accepted before the outage bit: must be stored.
			r.acks.add(r.conv, text, ok)
			return false
		}
		if !errors.As(err, &we) {
			t.Fatalf("%s: send failed with %v, want a wire error", name, err)
		}
		switch we.Code {
		case wire.CodeUnavailable:
			r.refused = append(r.refused, text)
			return true
		case wire.CodeTimeout:
			t.Logf("%s: %q timed out (outcome unknown); trying again", name, text)
			return false
		}
		t.Fatalf("%s: send failed with %s, want unavailable", name, we.Code)
		return false
	})
	if we.RetryAfterMs == 0 {
		t.Fatalf("%s: unavailable without retry_after_ms: %v", name, we)
	}
	t.Logf("%s: %s (retry_after_ms %d)", name, we.Message, we.RetryAfterMs)

	// The SDK retries unavailable after retry_after_ms with the same
	// client_msg_id: a send started now completes once the backend is back.
	text := name + " resumed"
	type result struct {
		ok  *parleyv1.SendOk
		err error
	}
	res := make(chan result, 1)
	go func() {
		ok, err := r.alice.Send(ctx, r.conv, text)
		res <- result{ok, err}
	}()
	select {
	case got := <-res:
		t.Fatalf("%s: SDK send finished during the outage: %v %v", name, got.ok, got.err)
	case <-time.After(2 * time.Second):
	}
	end()
	ended := time.Now()
	var got result
	select {
	case got = <-res:
	case <-ctx.Done():
		t.Fatalf("%s: the pending SDK send did not complete after the outage", name)
	}
	if got.err != nil {
		t.Fatalf("%s: pending SDK send: %v", name, got.err)
	}
	r.acks.add(r.conv, text, got.ok)
	t.Logf("%s: the pending send completed as seq %d, %s after the outage ended", name, got.ok.GetSeq(), time.Since(ended).Round(10*time.Millisecond))
}

// check asserts that every send_ok is stored as acknowledged and that the
// sends answered unavailable are not stored.
func (r *outageRun) check() {
	r.sendN("after", 3)
	r.c.checkAcked(r.conv, r.acks.all())
	stored := make(map[string]bool)
	for _, m := range r.c.storedLog(r.conv) {
		stored[m.Text] = true
	}
	for _, text := range r.refused {
		if stored[text] {
			// Not forbidden by the protocol (unavailable promises only
			// "safe to retry"), but neither outage here lets it through.
			r.t.Errorf("%q was answered unavailable but is stored", text)
		}
	}
}

// TestCassandraUnavailable: while the keyspace cannot reach quorum, sends
// are answered unavailable with retry_after_ms, never send_ok for a message
// that is not stored, and sending resumes by itself when quorum is back.
func TestCassandraUnavailable(t *testing.T) {
	c := newCluster(t, clusterOpts{})
	c.chat(0)
	r := newOutageRun(t, c, c.gateway(0))
	r.outage("cassandra", func() { c.setRF(2) }, func() { c.setRF(1) })
	r.check()
}

// privateKafka is a single-node KRaft broker of the test's own, started
// from the jars hack/deps.sh resolved, so it can be killed and restarted
// without disturbing other tests. It costs about 300 MB and ten seconds.
type privateKafka struct {
	t                    *testing.T
	addr                 string
	java, classpath, dir string
	cmd                  *exec.Cmd
	done                 chan struct{}
}

// kafkaClasspath finds the classpath hack/deps.sh resolved for Kafka and a
// java to run it with.
func kafkaClasspath() (java, classpath string, err error) {
	deps := os.Getenv("PARLEY_DEPS_DIR")
	if deps == "" {
		deps = filepath.Join("..", "..", ".deps")
	}
	files, _ := filepath.Glob(filepath.Join(deps, "kafka", "classpath-kafka-*.txt"))
	if len(files) == 0 {
		return "", "", fmt.Errorf("no Kafka classpath in %s/kafka (run hack/deps.sh up kafka)", deps)
	}
	slices.Sort(files)
	b, err := os.ReadFile(files[len(files)-1])
	if err != nil {
		return "", "", err
	}
	for _, home := range []string{os.Getenv("PARLEY_JAVA_HOME"), os.Getenv("JAVA_HOME")} {
		if home != "" {
			if _, err := os.Stat(filepath.Join(home, "bin", "java")); err == nil {
				return filepath.Join(home, "bin", "java"), strings.TrimSpace(string(b)), nil
			}
		}
	}
	java, err = exec.LookPath("java")
	if err != nil {
		return "", "", fmt.Errorf("no java: %w", err)
	}
	return java, strings.TrimSpace(string(b)), nil
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func startPrivateKafka(t *testing.T) *privateKafka {
	t.Helper()
	java, cp, err := kafkaClasspath()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	k := &privateKafka{t: t, java: java, classpath: cp, dir: t.TempDir()}
	port, cport := freePort(t), freePort(t)
	k.addr = fmt.Sprintf("127.0.0.1:%d", port)
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:%[2]d
listeners=PLAINTEXT://127.0.0.1:%[1]d,CONTROLLER://127.0.0.1:%[2]d
advertised.listeners=PLAINTEXT://127.0.0.1:%[1]d
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=%[3]s/data
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
broker.session.timeout.ms=2000
broker.heartbeat.interval.ms=500
num.network.threads=2
num.io.threads=2
`, port, cport, k.dir)
	conf := filepath.Join(k.dir, "server.properties")
	if err := os.WriteFile(conf, []byte(props), 0o600); err != nil {
		t.Fatal(err)
	}
	// A cluster id as Kafka's Uuid.randomUuid makes them: 16 random bytes,
	// base64url, never starting with '-' (the tool would read it as an
	// option: about one start in 64 failed that way).
	var clusterID string
	for clusterID == "" || clusterID[0] == '-' {
		id := make([]byte, 16)
		_, _ = rand.Read(id)
		clusterID = base64.RawURLEncoding.EncodeToString(id)
	}
	out, err := exec.Command(java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", cp,
		"kafka.tools.StorageTool", "format", "--cluster-id", clusterID, "--config", conf).CombinedOutput()
	if err != nil {
		t.Fatalf("format private Kafka storage: %v\n%s", err, out)
	}
	k.start()
	t.Cleanup(k.kill)
	return k
}

func (k *privateKafka) start() {
	k.t.Helper()
	started := time.Now()
	log, err := os.OpenFile(filepath.Join(k.dir, "kafka.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		k.t.Fatal(err)
	}
	defer log.Close()
	k.cmd = exec.Command(k.java, "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
		"-Dkafka.logs.dir="+filepath.Join(k.dir, "logs"), "-cp", k.classpath, "kafka.Kafka", filepath.Join(k.dir, "server.properties"))
	k.cmd.Stdout, k.cmd.Stderr = log, log
	if err := k.cmd.Start(); err != nil {
		k.t.Fatalf("start private Kafka: %v", err)
	}
	k.done = make(chan struct{})
	go func() { _ = k.cmd.Wait(); close(k.done) }()
	waitFor(k.t, 90*time.Second, "private Kafka answers", func() bool {
		select {
		case <-k.done:
			b, _ := os.ReadFile(filepath.Join(k.dir, "kafka.out"))
			k.t.Fatalf("private Kafka exited:\n%s", b)
		default:
		}
		cl, err := kgo.NewClient(kgo.SeedBrokers(k.addr))
		if err != nil {
			return false
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return cl.Ping(ctx) == nil
	})
	k.t.Logf("private Kafka on %s up in %s", k.addr, time.Since(started).Round(100*time.Millisecond))
}

func (k *privateKafka) kill() {
	if k.cmd != nil && k.cmd.Process != nil {
		_ = k.cmd.Process.Signal(syscall.SIGKILL)
		<-k.done
	}
}

// TestKafkaUnavailable: while Kafka is down (the test's own broker, killed
// and later restarted on its data), sends are answered unavailable with
// retry_after_ms — the gateway could not enqueue them — and sending resumes
// by itself when the broker is back.
func TestKafkaUnavailable(t *testing.T) {
	k := startPrivateKafka(t)
	c := newCluster(t, clusterOpts{kafka: k.addr})
	c.chat(0)
	r := newOutageRun(t, c, c.gateway(0))
	r.outage("kafka", k.kill, k.start)
	r.check()
}

// TestKafkaPausedMidPublish (issue 14: outcomes that never lie): the broker
// is frozen (SIGSTOP) with the gateway connected, so a send's record is
// written to a broker that never answers. The send is answered timeout —
// the record may be stored — never unavailable, and by the publish timeout
// (the answer says so), not the 10 s request deadline. After the broker
// thaws, the retry with the same client_msg_id is stored exactly once.
func TestKafkaPausedMidPublish(t *testing.T) {
	k := startPrivateKafka(t)
	c := newCluster(t, clusterOpts{kafka: k.addr})
	c.chat(0)
	gw := c.gateway(0)
	ctx := ctxT(t, 2*time.Minute)
	rest := client.NewREST(gw.HTTP(), c.token("alice", "phone"))
	conv := rules.DMID("alice", "bob")
	if _, err := rest.Send(ctx, conv, client.NewClientMsgID(), "before"); err != nil {
		t.Fatal(err)
	}

	_ = k.cmd.Process.Signal(syscall.SIGSTOP)
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = k.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	const cmid = "frozen-1"
	_, err := rest.Send(ctx, conv, cmid, "sent to a frozen broker")
	var we *wire.Error
	switch {
	case !errors.As(err, &we):
		t.Fatalf("send to a frozen broker: %v, want a wire error", err)
	case we.Code == wire.CodeUnavailable:
		t.Fatalf("send to a frozen broker answered unavailable (%q): the record was written to the broker and may be stored", we.Message)
	case we.Code != wire.CodeTimeout || !strings.Contains(we.Message, "may have been enqueued"):
		t.Fatalf("send to a frozen broker: %s %q, want timeout from the publish timeout (\"may have been enqueued\")", we.Code, we.Message)
	}
	t.Logf("frozen broker: %s %q", we.Code, we.Message)
	thaw()

	// The client retries with the same client_msg_id, as the answer asks.
	var ok *parleyv1.SendOk
	waitFor(t, 60*time.Second, "the retry stored", func() bool {
		ok, err = rest.Send(ctx, conv, cmid, "sent to a frozen broker")
		return err == nil
	})
	n := 0
	for _, m := range c.storedLog(conv) {
		if m.ClientMsgId == cmid {
			n++
			if m.Seq != ok.Seq {
				t.Errorf("stored at seq %d, the retry's send_ok says %d", m.Seq, ok.Seq)
			}
		}
	}
	if n != 1 {
		t.Fatalf("the frozen send is stored %d times, want exactly once", n)
	}
}
