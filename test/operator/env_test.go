// Package operator tests parley-operator against a real kube-apiserver and etcd
// (controller-runtime envtest), built from Go module source by hack/envtest.sh.
//
// Kubernetes' own kube-controller-manager (built by hack/envtest.sh from the same module as the
// API server) runs its StatefulSet, garbage-collector and disruption controllers beside the API
// server (issue 12): pods are created, replaced and collected by the real StatefulSet controller,
// with its revisions and ordinals. No kubelet runs, so a fake kubelet marks pods Running and
// Ready when the test allows; Jobs are marked succeeded by the test. Pods have no IPs, so the
// operator reaches each gateway's admin endpoint through an injected base URL on an HTTP server
// that behaves like a gateway and records every call in order.
package operator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
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

// k8sVersion is the API server hack/envtest.sh builds by default.
const k8sVersion = "1.36.3"

var (
	restConfig *rest.Config
	scheme     = runtime.NewScheme()
	skipReason string
	assetsDir  string
	nsCounter  atomic.Int64
)

func init() {
	_ = clientgoscheme.AddToScheme(scheme)
	_ = chatv1.AddToScheme(scheme)
}

// findAssets returns the envtest binaries' directory: $KUBEBUILDER_ASSETS, else the cache of
// hack/envtest.sh. The reason is non-empty when they are missing.
func findAssets() (dir, reason string) {
	dir = os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		home, _ := os.UserHomeDir()
		root := os.Getenv("PARLEY_ENVTEST_CACHE")
		if root == "" {
			root = filepath.Join(home, ".cache", "parley-envtest")
		}
		dir = filepath.Join(root, k8sVersion)
	}
	for _, bin := range []string{"kube-apiserver", "etcd", "kube-controller-manager"} {
		if st, err := os.Stat(filepath.Join(dir, bin)); err != nil || st.Mode()&0o111 == 0 {
			return dir, fmt.Sprintf("envtest binaries not found in %s (no %s); run `export KUBEBUILDER_ASSETS=$(hack/envtest.sh)` (builds kube-apiserver, etcd and kube-controller-manager from Go module source, ~30 min cold)", dir, bin)
		}
	}
	return dir, ""
}

func TestMain(m *testing.M) {
	dir, reason := findAssets()
	if reason != "" {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "FAIL: "+reason+" — CI never skips the operator suite")
			os.Exit(1)
		}
		skipReason = reason
		os.Exit(m.Run())
	}
	assetsDir = dir
	if os.Getenv("PARLEY_OPERATOR_TEST_LOGS") != "" {
		log.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr)))
	} else {
		log.SetLogger(zap.New(zap.WriteTo(ioDiscard{})))
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: dir,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: start envtest:", err)
		os.Exit(1)
	}
	restConfig = cfg
	stopKCM, err := startControllerManager(env, dir)
	if err != nil {
		_ = env.Stop()
		fmt.Fprintln(os.Stderr, "FAIL: start kube-controller-manager:", err)
		os.Exit(1)
	}
	code := m.Run()
	stopKCM()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop envtest:", err)
	}
	os.Exit(code)
}

// kcmControllers are the kube-controller-manager controllers the suite runs: the ones whose
// objects the operator creates (StatefulSets; PodDisruptionBudgets) and the garbage collector
// that deletes what a ChatCluster owns.
var kcmControllers = []string{"statefulset-controller", "garbage-collector-controller", "disruption-controller"}

// startControllerManager runs kube-controller-manager against env's API server as a cluster
// admin, its log in $PARLEY_OPERATOR_TEST_LOGS's stderr or discarded, and returns its stop.
func startControllerManager(env *envtest.Environment, dir string) (func(), error) {
	user, err := env.AddUser(envtest.User{Name: "kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("admin user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	tmp, err := os.MkdirTemp("", "parley-kcm-")
	if err != nil {
		return nil, err
	}
	kc := filepath.Join(tmp, "kubeconfig")
	if err := os.WriteFile(kc, kubeconfig, 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(dir, "kube-controller-manager"),
		"--kubeconfig", kc,
		"--controllers", strings.Join(kcmControllers, ","),
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
		// Faster than the production defaults, so tests do not wait on them.
		"--concurrent-statefulset-syncs=10",
		"--min-resync-period=1m",
	)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if os.Getenv("PARLEY_OPERATOR_TEST_LOGS") != "" {
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return nil, fmt.Errorf("exited at start: %v (run with PARLEY_OPERATOR_TEST_LOGS=1 for its log)", err)
	case <-time.After(time.Second):
	}
	return func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = os.RemoveAll(tmp)
	}, nil
}

type ioDiscard struct{}

func (ioDiscard) Write(p []byte) (int, error) { return len(p), nil }

func needAPIServer(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// harness is one test's namespace, operator, fake kubelet and fake gateways.
type harness struct {
	t       *testing.T
	ctx     context.Context
	ns      string
	c       client.WithWatch // direct client, no cache
	gw      *fakeGateways
	kubelet *fakeKubelet
	log     *eventLog

	stopOperator func()
}

type harnessOpts struct {
	region string // --region
}

// newHarness makes a namespace and starts the operator on it, with the fake kubelet and
// gateway admin server (the real StatefulSet controller runs for every namespace).
func newHarness(t *testing.T, opts harnessOpts) *harness {
	t.Helper()
	needAPIServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c, err := client.NewWithWatch(restConfig, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("t%d-%s", nsCounter.Add(1), strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	if len(ns) > 50 {
		ns = ns[:50]
	}
	ns = strings.TrimRight(ns, "-")
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, ctx: ctx, ns: ns, c: c, log: &eventLog{}}
	h.gw = newFakeGateways(h)
	h.kubelet = &fakeKubelet{h: h}
	h.kubelet.setReady(func(*corev1.Pod) bool { return true })
	h.watchPods()
	go h.kubelet.run(ctx)
	h.startOperator(opts)
	return h
}

func (h *harness) startOperator(opts harnessOpts) {
	t := h.t
	ctx, cancel := context.WithCancel(h.ctx)
	copts := controller.CacheOptions()
	copts.DefaultNamespaces = map[string]cache.Config{h.ns: {}}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
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
		Options: controller.Options{
			Region:    opts.region,
			Admin:     &controller.HTTPAdmin{BaseURL: h.gw.baseURL},
			DrainPoll: 100 * time.Millisecond,
		},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	var once sync.Once
	h.stopOperator = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(h.stopOperator)
}

// directReconciler is a Reconciler on the uncached client, for driving single passes.
func (h *harness) directReconciler() *controller.Reconciler {
	return &controller.Reconciler{
		Client:  h.c,
		Scheme:  scheme,
		Options: controller.Options{Admin: &controller.HTTPAdmin{BaseURL: h.gw.baseURL}, DrainPoll: 100 * time.Millisecond},
	}
}

// eventually polls cond until it holds or the deadline passes.
func (h *harness) eventually(what string, timeout time.Duration, cond func() (bool, error)) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond()
		if ok && err == nil {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out after %s waiting for %s (last error: %v)\n%s", timeout, what, lastErr, h.describe())
		}
		select {
		case <-h.ctx.Done():
			h.t.Fatalf("context done waiting for %s", what)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// describe summarises the namespace for failure messages.
func (h *harness) describe() string {
	var b strings.Builder
	var ccs chatv1.ChatClusterList
	if h.c.List(context.Background(), &ccs, client.InNamespace(h.ns)) == nil {
		for _, cc := range ccs.Items {
			st, _ := json.MarshalIndent(cc.Status, "", "  ")
			fmt.Fprintf(&b, "ChatCluster %s gen %d status: %s\n", cc.Name, cc.Generation, st)
		}
	}
	var pods corev1.PodList
	if h.c.List(context.Background(), &pods, client.InNamespace(h.ns)) == nil {
		for _, p := range pods.Items {
			fmt.Fprintf(&b, "pod %s rev=%s ready=%v accepting=%s drain=%s\n", p.Name, p.Labels[specs.LabelRevision],
				podReady(&p), p.Labels[specs.LabelAccepting], p.Annotations[specs.AnnotationDrainStarted])
		}
	}
	var stss appsv1.StatefulSetList
	if h.c.List(context.Background(), &stss, client.InNamespace(h.ns)) == nil {
		for _, s := range stss.Items {
			fmt.Fprintf(&b, "sts %s replicas=%d rev=%s\n", s.Name, *s.Spec.Replicas, specs.Revision(&s))
		}
	}
	return b.String()
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ---------------------------------------------------------------- fixtures

func testRegion(name string, id, gateways, chat, presence int32) chatv1.Region {
	return chatv1.Region{
		Name:      name,
		ID:        id,
		Gateway:   chatv1.GatewaySpec{Replicas: gateways},
		Chat:      chatv1.ChatSpec{Replicas: chat},
		Presence:  chatv1.PresenceSpec{Replicas: presence},
		Cassandra: chatv1.RegionCassandra{LocalDatacenter: "dc-" + name},
		Kafka:     chatv1.RegionKafka{Brokers: []string{"kafka." + name + ":9092"}},
		Redis:     chatv1.RegionRedis{Address: "redis." + name + ":6379"},
	}
}

func (h *harness) newCluster(name, image string, regions ...chatv1.Region) *chatv1.ChatCluster {
	return &chatv1.ChatCluster{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: h.ns},
		Spec: chatv1.ChatClusterSpec{
			Image:     image,
			Regions:   regions,
			Cassandra: chatv1.CassandraSpec{ContactPoints: []string{"cassandra-0.cassandra"}},
		},
	}
}

func (h *harness) create(obj client.Object) {
	h.t.Helper()
	if err := h.c.Create(h.ctx, obj); err != nil {
		h.t.Fatalf("create %s: %v", obj.GetName(), err)
	}
}

// update re-reads the ChatCluster and applies change, retrying on conflicts.
func (h *harness) update(cc *chatv1.ChatCluster, change func(*chatv1.ChatCluster)) {
	h.t.Helper()
	for i := 0; ; i++ {
		if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(cc), cc); err != nil {
			h.t.Fatal(err)
		}
		change(cc)
		err := h.c.Update(h.ctx, cc)
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) || i > 20 {
			h.t.Fatalf("update %s: %v", cc.Name, err)
		}
	}
}

func (h *harness) get(cc *chatv1.ChatCluster) *chatv1.ChatCluster {
	h.t.Helper()
	out := &chatv1.ChatCluster{}
	if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(cc), out); err != nil {
		h.t.Fatal(err)
	}
	return out
}

// waitCondition waits for a condition of the current generation.
func (h *harness) waitCondition(cc *chatv1.ChatCluster, condType string, status metav1.ConditionStatus, reason string, timeout time.Duration) *chatv1.ChatCluster {
	h.t.Helper()
	var got *chatv1.ChatCluster
	h.eventually(fmt.Sprintf("%s=%s (%s) on %s", condType, status, reason, cc.Name), timeout, func() (bool, error) {
		got = &chatv1.ChatCluster{}
		if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(cc), got); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(got.Status.Conditions, condType)
		return c != nil && c.Status == status && (reason == "" || c.Reason == reason) &&
			c.ObservedGeneration == got.Generation && got.Status.ObservedGeneration == got.Generation, nil
	})
	return got
}

// completeJobs marks every migrate Job in the namespace succeeded, the way the Job controller
// would, and returns their names.
func (h *harness) completeJobs() []string {
	h.t.Helper()
	var jobs batchv1.JobList
	if err := h.c.List(h.ctx, &jobs, client.InNamespace(h.ns)); err != nil {
		h.t.Fatal(err)
	}
	var names []string
	for i := range jobs.Items {
		j := &jobs.Items[i]
		if j.Status.Succeeded > 0 {
			continue
		}
		now := metav1.Now()
		j.Status.StartTime = &now
		j.Status.CompletionTime = &now
		j.Status.Succeeded = 1
		j.Status.Ready = ptr.To[int32](0)
		j.Status.Terminating = ptr.To[int32](0)
		j.Status.UncountedTerminatedPods = &batchv1.UncountedTerminatedPods{}
		j.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastProbeTime: now, LastTransitionTime: now, Reason: batchv1.JobReasonCompletionsReached},
			{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastProbeTime: now, LastTransitionTime: now, Reason: batchv1.JobReasonCompletionsReached},
		}
		if err := h.c.Status().Update(h.ctx, j); err != nil {
			h.t.Fatalf("complete job %s: %v", j.Name, err)
		}
		h.log.add("job-complete", j.Name, j.Labels)
		names = append(names, j.Name)
	}
	return names
}

// migrateThrough completes migrate Jobs as they appear (one region at a time) until n have run.
func (h *harness) migrateThrough(n int) []string {
	h.t.Helper()
	var done []string
	h.eventually(fmt.Sprintf("%d migrate jobs", n), 30*time.Second, func() (bool, error) {
		done = append(done, h.completeJobs()...)
		return len(done) >= n, nil
	})
	return done
}

func (h *harness) jobs() []batchv1.Job {
	h.t.Helper()
	var jobs batchv1.JobList
	if err := h.c.List(h.ctx, &jobs, client.InNamespace(h.ns)); err != nil {
		h.t.Fatal(err)
	}
	return jobs.Items
}

func (h *harness) pods(selector map[string]string) []corev1.Pod {
	h.t.Helper()
	var pods corev1.PodList
	if err := h.c.List(h.ctx, &pods, client.InNamespace(h.ns), client.MatchingLabels(selector)); err != nil {
		h.t.Fatal(err)
	}
	sort.Slice(pods.Items, func(i, j int) bool { return pods.Items[i].Name < pods.Items[j].Name })
	return pods.Items
}

func (h *harness) sts(name string) *appsv1.StatefulSet {
	h.t.Helper()
	s := &appsv1.StatefulSet{}
	if err := h.c.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: name}, s); err != nil {
		h.t.Fatalf("statefulset %s: %v", name, err)
	}
	return s
}

// ---------------------------------------------------------------- ordered event log

// logEntry is one observation: a pod event from the watch, a gateway admin call, a Job
// completion. Seq orders them as the test saw them.
type logEntry struct {
	Seq    int
	At     time.Time
	Kind   string // pod-added | pod-deleted | drain | status | outbox | job-complete
	Name   string
	Labels map[string]string
	Extra  map[string]string
}

type eventLog struct {
	mu      sync.Mutex
	entries []logEntry
}

func (l *eventLog) add(kind, name string, labels map[string]string, extra ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := logEntry{Seq: len(l.entries), At: time.Now(), Kind: kind, Name: name, Labels: labels, Extra: map[string]string{}}
	for i := 0; i+1 < len(extra); i += 2 {
		e.Extra[extra[i]] = extra[i+1]
	}
	l.entries = append(l.entries, e)
}

func (l *eventLog) snapshot() []logEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]logEntry(nil), l.entries...)
}

func (l *eventLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

func (l *eventLog) since(mark int) []logEntry {
	all := l.snapshot()
	if mark > len(all) {
		return nil
	}
	return all[mark:]
}

// watchPods records pod additions and deletions in the namespace, in the API server's order.
func (h *harness) watchPods() {
	w, err := h.c.Watch(h.ctx, &corev1.PodList{}, client.InNamespace(h.ns))
	if err != nil {
		h.t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		defer w.Stop()
		close(ready)
		for {
			select {
			case <-h.ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				pod, isPod := ev.Object.(*corev1.Pod)
				if !isPod {
					continue
				}
				switch ev.Type {
				case watch.Added:
					h.log.add("pod-added", pod.Name, pod.Labels)
				case watch.Deleted:
					h.log.add("pod-deleted", pod.Name, pod.Labels, "accepting", pod.Labels[specs.LabelAccepting],
						"drainStarted", pod.Annotations[specs.AnnotationDrainStarted])
				}
			}
		}
	}()
	<-ready
}

// ---------------------------------------------------------------- fake kubelet

// fakeKubelet does what a kubelet would for the pods the real StatefulSet controller creates (no
// kubelet runs, and no node: unscheduled pods are deleted at once, as a kubelet would after a
// grace period): it marks each pod Running and Ready when ready(pod) allows.
type fakeKubelet struct {
	h     *harness
	ready atomic.Pointer[func(*corev1.Pod) bool]
	mu    sync.Mutex
}

func (k *fakeKubelet) setReady(f func(*corev1.Pod) bool) { k.ready.Store(&f) }

func (k *fakeKubelet) run(ctx context.Context) {
	tick := time.NewTicker(30 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := k.sync(ctx); err != nil && ctx.Err() == nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
				k.h.t.Logf("fake kubelet: %v", err)
			}
		}
	}
}

func (k *fakeKubelet) sync(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	var pods corev1.PodList
	if err := k.h.c.List(ctx, &pods, client.InNamespace(k.h.ns)); err != nil {
		return err
	}
	ready := *k.ready.Load()
	var errs []error
	for i := range pods.Items {
		pod := &pods.Items[i]
		if podReady(pod) || !pod.DeletionTimestamp.IsZero() || !ready(pod) {
			continue
		}
		now := metav1.Now()
		pod.Status.Phase = corev1.PodRunning
		pod.Status.StartTime = &now
		pod.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		}
		if err := k.h.c.Status().Update(ctx, pod); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ---------------------------------------------------------------- fake gateways

// fakeGateways is one HTTP server standing in for every gateway pod's admin endpoint, at
// <url>/pods/<pod>/v1/admin/…. It checks the bearer token against the Secret the operator
// created, counts connections down while a pod drains (one per status poll), and records each
// call with what the test needs to check at that moment.
type fakeGateways struct {
	h   *harness
	srv *httptest.Server

	mu      sync.Mutex
	state   map[string]*gwState
	initial int             // connections of a pod when first seen
	stuck   map[string]bool // pods whose connections never drop
	// outbox is what a chat pod reports on /v1/admin/outbox (absent: 0); each poll of an
	// unheld pod forwards one.
	outbox     map[string]int64
	outboxHeld map[string]bool
}

type gwState struct {
	draining    bool
	connections int
}

func newFakeGateways(h *harness) *fakeGateways {
	g := &fakeGateways{h: h, state: map[string]*gwState{}, initial: 3, stuck: map[string]bool{},
		outbox: map[string]int64{}, outboxHeld: map[string]bool{}}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	h.t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGateways) baseURL(pod *corev1.Pod) (string, error) {
	return g.srv.URL + "/pods/" + pod.Name, nil
}

func (g *fakeGateways) setStuck(pod string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stuck[pod] = true
}

// setOutbox makes chat pod report pending outbox records; held ones never drain.
func (g *fakeGateways) setOutbox(pod string, pending int64, held bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.outbox[pod], g.outboxHeld[pod] = pending, held
}

func (g *fakeGateways) serve(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/pods/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	podName, path, _ := strings.Cut(rest, "/")
	pod := &corev1.Pod{}
	if err := g.h.c.Get(r.Context(), client.ObjectKey{Namespace: g.h.ns, Name: podName}, pod); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	var secret corev1.Secret
	if err := g.h.c.Get(r.Context(), client.ObjectKey{Namespace: g.h.ns, Name: pod.Labels[specs.LabelInstance] + "-admin-token"}, &secret); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// Like parley serve: a pod started without --admin-token-file has its admin endpoints
	// disabled (a chat pod without the token once kept a region removal waiting forever).
	if !slices.ContainsFunc(pod.Spec.Containers[0].Args, func(a string) bool { return strings.HasPrefix(a, "--admin-token-file=") }) {
		http.Error(w, `{"error":{"code":"forbidden","message":"admin endpoints are disabled: start the server with --admin-token-file"}}`, http.StatusForbidden)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+string(secret.Data[specs.AdminTokenKey]) {
		http.Error(w, `{"error":{"code":"unauthenticated"}}`, http.StatusUnauthorized)
		return
	}
	g.mu.Lock()
	st := g.state[podName+"/"+string(pod.UID)]
	if st == nil {
		st = &gwState{connections: g.initial}
		g.state[podName+"/"+string(pod.UID)] = st
	}
	code := http.StatusOK
	switch {
	case r.Method == http.MethodPost && path == "v1/admin/drain":
		st.draining = true
		code = http.StatusAccepted
		sts := &appsv1.StatefulSet{}
		replicas := ""
		if err := g.h.c.Get(r.Context(), client.ObjectKey{Namespace: g.h.ns, Name: strings.TrimSuffix(podName, "-"+pod.Labels[appsv1.PodIndexLabel])}, sts); err == nil {
			replicas = fmt.Sprint(ptr.Deref(sts.Spec.Replicas, 0))
		}
		g.h.log.add("drain", podName, pod.Labels, "accepting", pod.Labels[specs.LabelAccepting],
			"window", r.URL.Query().Get("window"), "stsReplicas", replicas, "connections", fmt.Sprint(st.connections))
	case r.Method == http.MethodGet && path == "v1/admin/outbox":
		pending := g.outbox[podName]
		if pending > 0 && !g.outboxHeld[podName] {
			g.outbox[podName]--
		}
		// Whether the pod's StatefulSet still exists when it answers: a removal must not
		// delete the chat fleet before its outbox is empty.
		stsErr := g.h.c.Get(r.Context(), client.ObjectKey{Namespace: g.h.ns, Name: strings.TrimSuffix(podName, "-"+pod.Labels[appsv1.PodIndexLabel])}, &appsv1.StatefulSet{})
		g.h.log.add("outbox", podName, pod.Labels, "pending", fmt.Sprint(pending), "stsExists", fmt.Sprint(stsErr == nil))
		body, _ := json.Marshal(map[string]any{"region": pod.Labels[specs.LabelRegion], "pending": pending})
		g.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
		return
	case r.Method == http.MethodGet && path == "v1/admin/connections":
		if st.draining && st.connections > 0 && !g.stuck[podName] {
			st.connections--
		}
		g.h.log.add("status", podName, pod.Labels, "connections", fmt.Sprint(st.connections))
	default:
		g.mu.Unlock()
		http.NotFound(w, r)
		return
	}
	body, _ := json.Marshal(map[string]any{"draining": st.draining, "connections": st.connections})
	g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(body)
}
