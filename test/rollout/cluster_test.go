package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/controller"
	"github.com/parleychat/parley/operator/specs"
)

// Backends of hack/deps.sh.
const (
	cassandraAddr = "127.0.0.1:9042"
	kafkaAddr     = "127.0.0.1:9092"
	redisAddr     = "127.0.0.1:6379"
	// cassandraDC is the datacenter of hack/deps.sh's single node (SimpleSnitch).
	cassandraDC = "datacenter1"
)

var scheme = runtime.NewScheme()

func init() {
	_ = clientgoscheme.AddToScheme(scheme)
	_ = chatv1.AddToScheme(scheme)
}

// needCluster skips (fails under CI=true) unless the envtest binaries, kube-scheduler included,
// and the backends are there; it returns the assets directory.
func needCluster(t *testing.T) string {
	t.Helper()
	skip := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s — CI never skips test/rollout", msg)
		}
		t.Skip(msg)
	}
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		skip("KUBEBUILDER_ASSETS is not set; run `make test-rollout` (or export KUBEBUILDER_ASSETS=$(hack/envtest.sh))")
	}
	for _, bin := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if st, err := os.Stat(filepath.Join(dir, bin)); err != nil || st.Mode()&0o111 == 0 {
			skip("%s not found in KUBEBUILDER_ASSETS=%s; run hack/envtest.sh", bin, dir)
		}
	}
	for _, addr := range []string{cassandraAddr, kafkaAddr, redisAddr} {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			skip("backend %s does not answer (%v); run `hack/deps.sh up`", addr, err)
		}
		c.Close()
	}
	return dir
}

// cluster is a real control plane with one virtual node that runs pods as processes, and the
// operator's reconciler in-process.
type cluster struct {
	t       *testing.T
	ctx     context.Context
	cfg     *rest.Config
	c       client.WithWatch
	cs      kubernetes.Interface
	node    *ProcessProvider
	ns      string
	workDir string
	// regions are the regions of the ChatClusters created (createReady); their Kafka topics
	// are deleted when the test ends.
	regions []string
}

func startCluster(t *testing.T, assets string) *cluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if os.Getenv("PARLEY_ROLLOUT_TEST_LOGS") != "" {
		log.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr)))
	} else {
		log.SetLogger(zap.New(zap.WriteTo(io.Discard)))
	}

	start := time.Now()
	bin := filepath.Join(t.TempDir(), "parley")
	// Built in the repository's own module (this package is a module of its own, see go.mod).
	build := exec.Command("go", "build", "-o", bin, "./runtime/cmd/parley")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build parley: %v\n%s", err, out)
	}
	t.Logf("built parley in %s", time.Since(start).Round(time.Millisecond))

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
	}
	start = time.Now()
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver and etcd: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	t.Logf("kube-apiserver and etcd up in %s", time.Since(start).Round(time.Millisecond))

	workDir := t.TempDir()
	user, err := env.AddUser(envtest.User{Name: "kube-system-components", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kc := filepath.Join(workDir, "kubeconfig")
	if err := os.WriteFile(kc, kubeconfig, 0o600); err != nil {
		t.Fatal(err)
	}
	startComponent(t, filepath.Join(assets, "kube-controller-manager"), filepath.Join(workDir, "kube-controller-manager.log"),
		"--kubeconfig", kc,
		"--controllers", strings.Join([]string{
			"statefulset-controller", "job-controller", "garbage-collector-controller", "disruption-controller",
			"node-lifecycle-controller", "taint-eviction-controller",
		}, ","),
		"--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=false",
		"--concurrent-statefulset-syncs=10", "--min-resync-period=1m",
		// The virtual node renews its Lease every 10 s or so; do not evict on a slow tick.
		"--node-monitor-grace-period=2m",
	)
	startComponent(t, filepath.Join(assets, "kube-scheduler"), filepath.Join(workDir, "kube-scheduler.log"),
		"--kubeconfig", kc, "--leader-elect=false", "--secure-port=0")

	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cl := &cluster{t: t, ctx: ctx, cfg: cfg, c: c, cs: cs, workDir: workDir}

	// The virtual node: any tag of the parley image runs the binary just built.
	cl.node = &ProcessProvider{
		NodeName: "vk-process",
		Dir:      filepath.Join(workDir, "pods"),
		ImageBinary: func(image string) (string, error) {
			repo := image
			if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
				repo = repo[:i]
			}
			if repo == "parley" || strings.HasSuffix(repo, "/parley") {
				return bin, nil
			}
			return "", fmt.Errorf("no local binary for image %s", image)
		},
		Logf: func(format string, args ...any) {
			t.Logf("%s node: "+format, append([]any{time.Now().Format("15:04:05.000")}, args...)...)
		},
	}
	start = time.Now()
	t.Cleanup(cl.deleteTopics) // after the node's pods are gone (cleanups run last first)
	if _, err := StartNode(ctx, cs, cl.node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.node.Shutdown)
	// The apiserver taints a new node not-ready; the node-lifecycle controller lifts it.
	cl.eventually("node schedulable (not-ready taint lifted)", 90*time.Second, func() (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, cl.node.NodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return len(n.Spec.Taints) == 0, nil
	})
	t.Logf("virtual node Ready and untainted in %s", time.Since(start).Round(time.Millisecond))

	cl.ns = fmt.Sprintf("rollout-%06x", rand.IntN(1<<24))
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cl.ns}}); err != nil {
		t.Fatal(err)
	}
	cl.startOperator()
	return cl
}

// deleteTopics deletes the Kafka topics of cl.regions (parley.<region>.*). Region names are
// new in every test, so without it the Kafka of hack/deps.sh gathers a few hundred partitions
// a run, until it runs out of heap (512 MiB held about 16,000).
func (cl *cluster) deleteTopics() {
	if len(cl.regions) == 0 {
		return
	}
	kc, err := kgo.NewClient(kgo.SeedBrokers(kafkaAddr))
	if err != nil {
		cl.t.Logf("delete topics: %v", err)
		return
	}
	defer kc.Close()
	adm := kadm.NewClient(kc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		cl.t.Logf("delete topics: list: %v", err)
		return
	}
	var names []string
	for _, name := range topics.Names() {
		for _, r := range cl.regions {
			if strings.HasPrefix(name, "parley."+r+".") {
				names = append(names, name)
			}
		}
	}
	resps, err := adm.DeleteTopics(ctx, names...)
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		cl.t.Logf("delete topics of regions %v: %v", cl.regions, err)
	}
}

// startComponent runs a control-plane binary until the test ends, its output in logPath.
func startComponent(t *testing.T, bin, logPath string, args ...string) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		b, _ := os.ReadFile(logPath)
		t.Fatalf("%s exited at start: %v\n%s", filepath.Base(bin), err, tail(b, 4000))
	case <-time.After(time.Second):
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("---- %s log (tail)\n%s", filepath.Base(bin), tail(b, 3000))
		}
	})
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// startOperator runs the operator's reconciler in-process on the test namespace, reaching
// gateways' admin endpoints at their pod IPs (controller.HTTPAdmin's default).
func (cl *cluster) startOperator() {
	t := cl.t
	ctx, cancel := context.WithCancel(cl.ctx)
	copts := controller.CacheOptions()
	copts.DefaultNamespaces = map[string]cache.Config{cl.ns: {}}
	mgr, err := ctrl.NewManager(cl.cfg, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  copts,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &controller.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Scheme:    mgr.GetScheme(),
		Recorder:  mgr.GetEventRecorder("parley-operator"),
		Options:   controller.Options{Admin: &controller.HTTPAdmin{}, DrainPoll: 500 * time.Millisecond},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("operator manager: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// eventually polls cond every 200 ms until it holds or timeout passes.
func (cl *cluster) eventually(what string, timeout time.Duration, cond func() (bool, error)) {
	cl.t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond()
		if ok && err == nil {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			cl.t.Fatalf("timed out after %s waiting for %s (last error: %v)\n%s", timeout, what, lastErr, cl.describe())
		}
		select {
		case <-cl.ctx.Done():
			cl.t.Fatalf("context done waiting for %s", what)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// describe summarises the namespace (and the tail of each pod's log) for failure messages.
func (cl *cluster) describe() string {
	ctx := context.Background()
	var b strings.Builder
	var ccs chatv1.ChatClusterList
	if cl.c.List(ctx, &ccs, client.InNamespace(cl.ns)) == nil {
		for _, cc := range ccs.Items {
			st, _ := json.MarshalIndent(cc.Status, "", "  ")
			fmt.Fprintf(&b, "ChatCluster %s gen %d status: %s\n", cc.Name, cc.Generation, st)
		}
	}
	var pods corev1.PodList
	if cl.c.List(ctx, &pods, client.InNamespace(cl.ns)) == nil {
		for _, p := range pods.Items {
			fmt.Fprintf(&b, "pod %s node=%s phase=%s ip=%s ready=%v rev=%s crh=%s deleting=%v\n", p.Name, p.Spec.NodeName, p.Status.Phase,
				p.Status.PodIP, podReady(&p), p.Labels[specs.LabelRevision], p.Labels["controller-revision-hash"], p.DeletionTimestamp != nil)
			if dir := cl.node.PodDir(p.Namespace, p.Name); dir != "" {
				logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
				for _, l := range logs {
					data, _ := os.ReadFile(l)
					fmt.Fprintf(&b, "  --- %s\n%s\n", filepath.Base(l), indent(tail(data, 1500)))
				}
			}
		}
	}
	var events corev1.EventList
	if cl.c.List(ctx, &events, client.InNamespace(cl.ns)) == nil {
		sort.Slice(events.Items, func(i, j int) bool { return events.Items[i].LastTimestamp.Before(&events.Items[j].LastTimestamp) })
		items := events.Items
		if len(items) > 40 {
			items = items[len(items)-40:]
		}
		for _, e := range items {
			fmt.Fprintf(&b, "event %s %s/%s %s: %s\n", e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
		}
	}
	return b.String()
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitCondition waits for a ChatCluster condition of its current generation.
func (cl *cluster) waitCondition(cc *chatv1.ChatCluster, condType string, status metav1.ConditionStatus, timeout time.Duration) *chatv1.ChatCluster {
	cl.t.Helper()
	got := &chatv1.ChatCluster{}
	cl.eventually(fmt.Sprintf("%s=%s on %s", condType, status, cc.Name), timeout, func() (bool, error) {
		if err := cl.c.Get(cl.ctx, client.ObjectKeyFromObject(cc), got); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(got.Status.Conditions, condType)
		return c != nil && c.Status == status && c.ObservedGeneration == got.Generation &&
			got.Status.ObservedGeneration == got.Generation, nil
	})
	return got
}

func (cl *cluster) pods(selector map[string]string) []corev1.Pod {
	cl.t.Helper()
	var pods corev1.PodList
	if err := cl.c.List(cl.ctx, &pods, client.InNamespace(cl.ns), client.MatchingLabels(selector)); err != nil {
		cl.t.Fatal(err)
	}
	sort.Slice(pods.Items, func(i, j int) bool { return pods.Items[i].Name < pods.Items[j].Name })
	return pods.Items
}

// serviceDialer resolves a Service name the way the EndpointSlice controller and kube-proxy
// would route it: to a Ready, not terminating pod that the Service's selector matches, at the
// Service port's targetPort, picked at random on each dial. (The real EndpointSlice controller
// cannot help here: the API server refuses loopback addresses in EndpointSlices, and pod IPs are
// 127.0.X.Y. There is no kube-proxy or DNS either, so the SDK dials "<service>:<port>" and this
// dialer does the rest.)
type serviceDialer struct {
	cl *cluster
	// TTL, when positive, caches a Service's ready endpoints that long (kube-proxy and the
	// EndpointSlice controller lag the pods too), so thousands of clients reconnecting at once
	// do not each list the pods.
	TTL time.Duration

	mu    sync.Mutex
	dials map[string]int // pod name@IP:port → dials
	log   []dialRecord   // every dial, in order
	cache map[string]cachedTargets
	fill  sync.Mutex // one endpoint refresh at a time
}

type dialTarget struct{ name, addr string }

type dialRecord struct {
	at     time.Time
	target string // pod name
}

type cachedTargets struct {
	at      time.Time
	targets []dialTarget
	err     error
}

func (d *serviceDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	tg, err := d.resolve(ctx, addr)
	if err != nil {
		return nil, err
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, tg)
}

// resolve picks a Ready, not terminating endpoint of the Service "<service>:<port>" at random
// and counts a dial to it; it returns the endpoint's IP:targetPort.
func (d *serviceDialer) resolve(ctx context.Context, addr string) (string, error) {
	targets, err := d.targets(ctx, addr)
	if err != nil {
		return "", err
	}
	if len(targets) == 0 {
		host, _, _ := net.SplitHostPort(addr)
		return "", fmt.Errorf("service %s has no ready endpoints", host)
	}
	tg := targets[rand.IntN(len(targets))]
	d.mu.Lock()
	if d.dials == nil {
		d.dials = map[string]int{}
	}
	d.dials[tg.name+"@"+tg.addr]++
	d.log = append(d.log, dialRecord{at: time.Now(), target: tg.name})
	d.mu.Unlock()
	return tg.addr, nil
}

func (d *serviceDialer) targets(ctx context.Context, addr string) ([]dialTarget, error) {
	if d.TTL <= 0 {
		return d.lookup(ctx, addr)
	}
	d.fill.Lock()
	defer d.fill.Unlock()
	d.mu.Lock()
	c, ok := d.cache[addr]
	d.mu.Unlock()
	if ok && time.Since(c.at) < d.TTL {
		return c.targets, c.err
	}
	targets, err := d.lookup(ctx, addr)
	d.mu.Lock()
	if d.cache == nil {
		d.cache = map[string]cachedTargets{}
	}
	d.cache[addr] = cachedTargets{at: time.Now(), targets: targets, err: err}
	d.mu.Unlock()
	return targets, err
}

// lookup lists the Service's ready endpoints from its selector and the pods' readiness.
func (d *serviceDialer) lookup(ctx context.Context, addr string) ([]dialTarget, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var svc corev1.Service
	if err := d.cl.c.Get(ctx, client.ObjectKey{Namespace: d.cl.ns, Name: host}, &svc); err != nil {
		return nil, err
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if fmt.Sprint(svc.Spec.Ports[i].Port) == portStr {
			sp = &svc.Spec.Ports[i]
		}
	}
	if sp == nil {
		return nil, fmt.Errorf("service %s has no port %s", host, portStr)
	}
	var pods corev1.PodList
	if err := d.cl.c.List(ctx, &pods, client.InNamespace(d.cl.ns), client.MatchingLabels(svc.Spec.Selector)); err != nil {
		return nil, err
	}
	var targets []dialTarget
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil || !podReady(p) || p.Status.PodIP == "" {
			continue
		}
		port, err := resolvePort(sp.TargetPort, &p.Spec.Containers[0])
		if err != nil {
			continue
		}
		targets = append(targets, dialTarget{p.Name, net.JoinHostPort(p.Status.PodIP, fmt.Sprint(port))})
	}
	return targets, nil
}

// devSecret reads the operator-generated dev secret, as `parley serve` reads it from its data dir.
func (cl *cluster) devSecret(cc *chatv1.ChatCluster) []byte {
	cl.t.Helper()
	var s corev1.Secret
	if err := cl.c.Get(cl.ctx, client.ObjectKey{Namespace: cl.ns, Name: specs.DevSecretName(cc)}, &s); err != nil {
		cl.t.Fatal(err)
	}
	return bytes.TrimSpace(s.Data[specs.DevSecretKey])
}
