package rollout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// ProcessProvider is a virtual-kubelet provider that runs the pods bound to its node as local
// processes (see the package comment for what it emulates and what it does not).
type ProcessProvider struct {
	// NodeName is the node it registers.
	NodeName string
	// Dir holds one directory per pod: its volumes and its containers' logs.
	Dir string
	// ImageBinary maps an image reference to the local executable that stands for its
	// entrypoint; an error fails the pod.
	ImageBinary func(image string) (string, error)
	// Logf, when set, receives the provider's own log lines.
	Logf func(format string, args ...any)

	cfg nodeutil.ProviderConfig
	cs  kubernetes.Interface

	mu       sync.Mutex
	pods     map[string]*podRun // namespace/name
	notify   func(*corev1.Pod)
	ipBase   int // third octet of the first pod IP
	nextIP   int
	shutdown bool
}

// StartNode registers p's node with the API server behind cs and runs virtual-kubelet's node and
// pod controllers until ctx ends. It returns once the node is Ready.
func StartNode(ctx context.Context, cs kubernetes.Interface, p *ProcessProvider) (*nodeutil.Node, error) {
	if p.pods == nil {
		p.pods = map[string]*podRun{}
	}
	p.cs = cs
	p.ipBase = 10 + rand.IntN(200) // 127.0.10.1 … 127.0.254.254: different runs rarely overlap
	n, err := nodeutil.NewNode(p.NodeName, func(cfg nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
		p.cfg = cfg
		nd := cfg.Node
		nd.Labels["kubernetes.io/os"] = "linux"
		nd.Labels["kubernetes.io/arch"] = "amd64"
		capacity := corev1.ResourceList{
			corev1.ResourceCPU:              resource.MustParse("64"),
			corev1.ResourceMemory:           resource.MustParse("256Gi"),
			corev1.ResourcePods:             resource.MustParse("1000"),
			corev1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
		}
		nd.Status.Capacity = capacity
		nd.Status.Allocatable = capacity.DeepCopy()
		nd.Status.Addresses = []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: p.NodeName},
		}
		nd.Status.NodeInfo = corev1.NodeSystemInfo{
			OperatingSystem: "linux", Architecture: "amd64",
			KubeletVersion: "v1.36.3-vk-process", ContainerRuntimeVersion: "process://1",
		}
		for i := range nd.Status.Conditions {
			if nd.Status.Conditions[i].Type != corev1.NodeReady {
				nd.Status.Conditions[i].Status = corev1.ConditionFalse
				nd.Status.Conditions[i].Reason = "KubeletHasSufficientResources"
			}
		}
		return p, nil, nil
	}, nodeutil.WithClient(cs), func(c *nodeutil.NodeConfig) error {
		c.NumWorkers = 8
		c.InformerResyncPeriod = 30 * time.Second
		return nil
	})
	if err != nil {
		return nil, err
	}
	go func() { _ = n.Run(ctx) }()
	if err := n.WaitReady(ctx, time.Minute); err != nil {
		return nil, fmt.Errorf("virtual node %s: %w", p.NodeName, err)
	}
	return n, nil
}

func (p *ProcessProvider) logf(format string, args ...any) {
	if p.Logf != nil {
		p.Logf(format, args...)
	}
}

func podKey(ns, name string) string { return ns + "/" + name }

// allocIP hands out 127.0.X.Y addresses, never the same twice.
func (p *ProcessProvider) allocIP() string {
	n := p.nextIP
	p.nextIP++
	third := p.ipBase + n/254
	if third > 254 {
		third = 1 + (third-1)%254
	}
	return fmt.Sprintf("127.0.%d.%d", third, 1+n%254)
}

// ---------------------------------------------------------------- PodLifecycleHandler

// CreatePod implements node.PodLifecycleHandler: it prepares the pod's directory and volumes and
// starts its containers.
func (p *ProcessProvider) CreatePod(ctx context.Context, pod *corev1.Pod) error {
	if len(pod.Spec.InitContainers) > 0 {
		return fmt.Errorf("pod %s: init containers are not supported by the process provider", pod.Name)
	}
	key := podKey(pod.Namespace, pod.Name)
	p.mu.Lock()
	if p.shutdown {
		p.mu.Unlock()
		return errors.New("provider shut down")
	}
	if old := p.pods[key]; old != nil && old.uid() == pod.UID {
		p.mu.Unlock()
		return nil
	}
	ip := p.allocIP()
	p.mu.Unlock()

	r, err := p.newPodRun(pod, ip)
	if err != nil {
		return err
	}
	p.mu.Lock()
	if old := p.pods[key]; old != nil {
		// The same name with another UID: the old one is on its way out (StatefulSet pods
		// keep their names); keep it running until its termination finishes.
		go old.terminate("replaced by a new pod of the same name")
	}
	p.pods[key] = r
	p.mu.Unlock()
	p.logf("pod %s: ip %s, starting %d container(s)", key, ip, len(r.ctrs))
	r.start()
	return nil
}

// UpdatePod implements node.PodLifecycleHandler: only metadata (labels, annotations) of a
// running pod changes; the provider keeps it for its status reports.
func (p *ProcessProvider) UpdatePod(ctx context.Context, pod *corev1.Pod) error {
	r := p.get(pod.Namespace, pod.Name)
	if r == nil {
		return errdefs.NotFoundf("pod %s/%s", pod.Namespace, pod.Name)
	}
	r.mu.Lock()
	spec := r.pod.Spec
	r.pod = pod.DeepCopy()
	r.pod.Spec = spec
	r.mu.Unlock()
	return nil
}

// DeletePod implements node.PodLifecycleHandler: it starts the pod's termination (preStop,
// SIGTERM, grace period, SIGKILL) and returns; the terminal status follows through NotifyPods.
func (p *ProcessProvider) DeletePod(ctx context.Context, pod *corev1.Pod) error {
	r := p.get(pod.Namespace, pod.Name)
	if r == nil || r.uid() != pod.UID {
		return errdefs.NotFoundf("pod %s/%s", pod.Namespace, pod.Name)
	}
	r.mu.Lock()
	if pod.DeletionTimestamp != nil {
		r.pod.DeletionTimestamp = pod.DeletionTimestamp.DeepCopy()
		r.pod.DeletionGracePeriodSeconds = pod.DeletionGracePeriodSeconds
	}
	r.mu.Unlock()
	go func() {
		r.terminate("deleted")
		p.finalizeDeletion(r, pod)
		p.mu.Lock()
		if p.pods[podKey(pod.Namespace, pod.Name)] == r {
			delete(p.pods, podKey(pod.Namespace, pod.Name))
		}
		p.mu.Unlock()
	}()
	return nil
}

// finalizeDeletion removes a terminated pod from the API server at once, as the kubelet's status
// manager does once the terminal status is stored (virtual-kubelet alone would wait out the
// whole deletion grace period, since a status change does not requeue the pod).
func (p *ProcessProvider) finalizeDeletion(r *podRun, pod *corev1.Pod) {
	if p.cs == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		cur, err := p.cs.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil || cur.UID != pod.UID {
			return // already gone
		}
		if cur.Status.Phase == corev1.PodSucceeded || cur.Status.Phase == corev1.PodFailed {
			err := p.cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
				GracePeriodSeconds: new(int64),
				Preconditions:      metav1.NewUIDPreconditions(string(pod.UID)),
			})
			if err != nil {
				p.logf("pod %s/%s: delete after termination: %v", pod.Namespace, pod.Name, err)
			}
			return
		}
		r.report()
		time.Sleep(100 * time.Millisecond)
	}
}

// GetPod implements node.PodLifecycleHandler.
func (p *ProcessProvider) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	r := p.get(namespace, name)
	if r == nil {
		return nil, errdefs.NotFoundf("pod %s/%s", namespace, name)
	}
	return r.snapshot(), nil
}

// GetPodStatus implements node.PodLifecycleHandler.
func (p *ProcessProvider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	r := p.get(namespace, name)
	if r == nil {
		return nil, errdefs.NotFoundf("pod %s/%s", namespace, name)
	}
	return &r.snapshot().Status, nil
}

// GetPods implements node.PodLifecycleHandler.
func (p *ProcessProvider) GetPods(ctx context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	runs := make([]*podRun, 0, len(p.pods))
	for _, r := range p.pods {
		runs = append(runs, r)
	}
	p.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(runs))
	for _, r := range runs {
		out = append(out, r.snapshot())
	}
	return out, nil
}

// NotifyPods implements node.PodNotifier: status changes are pushed, not polled.
func (p *ProcessProvider) NotifyPods(ctx context.Context, f func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = f
	p.mu.Unlock()
}

func (p *ProcessProvider) get(ns, name string) *podRun {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pods[podKey(ns, name)]
}

// Shutdown kills every process the provider started (SIGKILL to each process group) and waits
// for them; for test cleanup.
func (p *ProcessProvider) Shutdown() {
	p.mu.Lock()
	p.shutdown = true
	runs := make([]*podRun, 0, len(p.pods))
	for _, r := range p.pods {
		runs = append(runs, r)
	}
	p.mu.Unlock()
	for _, r := range runs {
		r.kill()
	}
}

// PodDir is the directory of a pod the provider runs ("" if it does not run it).
func (p *ProcessProvider) PodDir(ns, name string) string {
	if r := p.get(ns, name); r != nil {
		return r.dir
	}
	return ""
}

// ---------------------------------------------------------------- unsupported node API

// GetContainerLogs is not supported: the logs are files in the pod's directory.
func (p *ProcessProvider) GetContainerLogs(ctx context.Context, namespace, podName, containerName string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	return nil, errdefs.NotFound("container logs: read the files in the pod's directory")
}

// RunInContainer is not supported.
func (p *ProcessProvider) RunInContainer(ctx context.Context, namespace, podName, containerName string, cmd []string, attach api.AttachIO) error {
	return errdefs.NotFound("exec is not supported by the process provider")
}

// AttachToContainer is not supported.
func (p *ProcessProvider) AttachToContainer(ctx context.Context, namespace, podName, containerName string, attach api.AttachIO) error {
	return errdefs.NotFound("attach is not supported by the process provider")
}

// GetStatsSummary is not supported.
func (p *ProcessProvider) GetStatsSummary(context.Context) (*statsv1alpha1.Summary, error) {
	return nil, errdefs.NotFound("stats are not supported by the process provider")
}

// GetMetricsResource is not supported.
func (p *ProcessProvider) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) {
	return nil, errdefs.NotFound("metrics are not supported by the process provider")
}

// PortForward is not supported.
func (p *ProcessProvider) PortForward(ctx context.Context, namespace, pod string, port int32, stream io.ReadWriteCloser) error {
	return errdefs.NotFound("port-forward is not supported by the process provider")
}

// ---------------------------------------------------------------- one pod

type podRun struct {
	p   *ProcessProvider
	dir string
	ip  string

	mu          sync.Mutex
	pod         *corev1.Pod // as given to CreatePod (env resolved), metadata kept current
	ctrs        []*ctrRun
	terminating bool
	started     metav1.Time
	done        chan struct{} // closed when every container has finished for good
	ctx         context.Context
	cancel      context.CancelFunc
	termOnce    sync.Once
	lastConds   []corev1.PodCondition
}

type ctrRun struct {
	spec    corev1.Container
	argv    []string // command[0] substituted, $(VAR) expanded, paths and addresses rewritten
	env     []string
	mounts  mountMap // volume mount paths → host paths, for hooks too
	logPath string

	// guarded by podRun.mu
	proc      *os.Process
	exited    chan struct{} // closed when the current process has exited
	state     corev1.ContainerState
	lastState corev1.ContainerState
	restarts  int32
	ready     bool
	finished  bool // exited and will not be restarted
	exitCode  int32
}

func (r *podRun) uid() types.UID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pod.UID
}

func (p *ProcessProvider) newPodRun(pod *corev1.Pod, ip string) (*podRun, error) {
	dir := filepath.Join(p.Dir, pod.Namespace+"_"+pod.Name+"_"+string(pod.UID)[:8])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	mounts, err := p.prepareVolumes(pod, dir)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &podRun{p: p, dir: dir, ip: ip, pod: pod.DeepCopy(), started: metav1.Now(), done: make(chan struct{}), ctx: ctx, cancel: cancel}
	for _, c := range pod.Spec.Containers {
		bin, err := p.ImageBinary(c.Image)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("container %s: image %s: %w", c.Name, c.Image, err)
		}
		mm, err := mounts.forContainer(&c, dir)
		if err != nil {
			cancel()
			return nil, err
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		env["HOSTNAME"] = pod.Name
		ports := declaredPorts(&c)
		argv, err := r.commandLine(bin, c.Command, c.Args, env, mm, ports)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("container %s: %w", c.Name, err)
		}
		var envList []string
		for k, v := range env {
			envList = append(envList, k+"="+mm.rewrite(v))
		}
		sort.Strings(envList)
		r.ctrs = append(r.ctrs, &ctrRun{
			spec: c, argv: argv, env: envList, mounts: mm,
			logPath: filepath.Join(dir, c.Name+".log"),
			state:   corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
		})
	}
	return r, nil
}

// commandLine is what the container runs: the image's binary for command[0] (or the entrypoint
// when there is no command), $(VAR) expanded, volume paths and the pod's own addresses rewritten.
func (r *podRun) commandLine(bin string, command, args []string, env map[string]string, mm mountMap, ports map[int32]bool) ([]string, error) {
	expand := func(s string) string { return expandVars(s, env) }
	var argv []string
	switch {
	case len(command) == 0:
		argv = []string{bin}
	case filepath.Base(command[0]) == filepath.Base(bin):
		argv = []string{bin}
		for _, a := range command[1:] {
			argv = append(argv, expand(a))
		}
	default:
		return nil, fmt.Errorf("command %q is not the image's binary %s", command[0], filepath.Base(bin))
	}
	for _, a := range args {
		argv = append(argv, expand(a))
	}
	for i := 1; i < len(argv); i++ {
		argv[i] = r.rewriteAddr(mm.rewrite(argv[i]), ports)
	}
	return argv, nil
}

var listenRE = regexp.MustCompile(`^(.*=)?(|0\.0\.0\.0|\[::\]):([0-9]+)$`)
var selfRE = regexp.MustCompile(`\b(127\.0\.0\.1|localhost):([0-9]+)\b`)

// rewriteAddr makes the pod's processes listen on, and talk to themselves at, the pod's IP.
func (r *podRun) rewriteAddr(a string, ports map[int32]bool) string {
	if m := listenRE.FindStringSubmatch(a); m != nil {
		if port, _ := strconv.Atoi(m[3]); ports[int32(port)] {
			return m[1] + r.ip + ":" + m[3]
		}
	}
	return selfRE.ReplaceAllStringFunc(a, func(s string) string {
		m := selfRE.FindStringSubmatch(s)
		if port, _ := strconv.Atoi(m[2]); ports[int32(port)] {
			return r.ip + ":" + m[2]
		}
		return s
	})
}

func declaredPorts(c *corev1.Container) map[int32]bool {
	ports := map[int32]bool{}
	for _, p := range c.Ports {
		ports[p.ContainerPort] = true
	}
	return ports
}

// expandVars is the kubelet's $(VAR) expansion (k8s.io/kubernetes third_party/forked/golang/expansion):
// $(NAME) is replaced when NAME is defined, kept verbatim otherwise; $$ is a literal $.
func expandVars(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// ---------------------------------------------------------------- volumes

type volume struct {
	host string // directory on this machine
	file bool
}

type podVolumes map[string]volume

// mountMap rewrites container paths to host paths, longest mount path first.
type mountMap []struct{ from, to string }

func (m mountMap) rewrite(s string) string {
	if len(m) == 0 || !strings.Contains(s, "/") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		matched := false
		if i == 0 || strings.ContainsRune("=,: ;\"'", rune(s[i-1])) {
			for _, mp := range m {
				if strings.HasPrefix(s[i:], mp.from) {
					j := i + len(mp.from)
					if j == len(s) || strings.ContainsRune("/,: ;\"'", rune(s[j])) {
						b.WriteString(mp.to)
						i = j
						matched = true
						break
					}
				}
			}
		}
		if !matched {
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String()
}

func (p *ProcessProvider) prepareVolumes(pod *corev1.Pod, dir string) (podVolumes, error) {
	vols := podVolumes{}
	for _, v := range pod.Spec.Volumes {
		host := filepath.Join(dir, "volumes", v.Name)
		if err := os.MkdirAll(host, 0o755); err != nil {
			return nil, err
		}
		switch {
		case v.EmptyDir != nil:
		case v.Secret != nil:
			s, err := p.cfg.Secrets.Secrets(pod.Namespace).Get(v.Secret.SecretName)
			if err != nil {
				if v.Secret.Optional != nil && *v.Secret.Optional {
					break
				}
				return nil, fmt.Errorf("volume %s: secret %s: %w", v.Name, v.Secret.SecretName, err)
			}
			data := map[string][]byte{}
			for k, val := range s.Data {
				data[k] = val
			}
			for k, val := range s.StringData {
				data[k] = []byte(val)
			}
			if err := writeKeys(host, data, v.Secret.Items, v.Secret.DefaultMode); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
		case v.ConfigMap != nil:
			cm, err := p.cfg.ConfigMaps.ConfigMaps(pod.Namespace).Get(v.ConfigMap.Name)
			if err != nil {
				if v.ConfigMap.Optional != nil && *v.ConfigMap.Optional {
					break
				}
				return nil, fmt.Errorf("volume %s: configmap %s: %w", v.Name, v.ConfigMap.Name, err)
			}
			data := map[string][]byte{}
			for k, val := range cm.Data {
				data[k] = []byte(val)
			}
			for k, val := range cm.BinaryData {
				data[k] = val
			}
			if err := writeKeys(host, data, v.ConfigMap.Items, v.ConfigMap.DefaultMode); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
		default:
			return nil, fmt.Errorf("volume %s: only emptyDir, secret and configMap volumes are supported", v.Name)
		}
		vols[v.Name] = volume{host: host}
	}
	return vols, nil
}

func writeKeys(dir string, data map[string][]byte, items []corev1.KeyToPath, mode *int32) error {
	perm := os.FileMode(0o644)
	if mode != nil {
		perm = os.FileMode(*mode)
	}
	write := func(path string, b []byte, m *int32) error {
		pm := perm
		if m != nil {
			pm = os.FileMode(*m)
		}
		full := filepath.Join(dir, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		return os.WriteFile(full, b, pm)
	}
	if len(items) == 0 {
		for k, b := range data {
			if err := write(k, b, nil); err != nil {
				return err
			}
		}
		return nil
	}
	for _, it := range items {
		b, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("key %s not found", it.Key)
		}
		if err := write(it.Path, b, it.Mode); err != nil {
			return err
		}
	}
	return nil
}

// forContainer maps c's volumeMounts to host paths. A subPath mount that lies inside another
// mount of the container is copied into that mount's host directory, so the path rewriting of
// the outer mount finds it.
func (v podVolumes) forContainer(c *corev1.Container, podDir string) (mountMap, error) {
	var mm mountMap
	for _, m := range c.VolumeMounts {
		vol, ok := v[m.Name]
		if !ok {
			return nil, fmt.Errorf("container %s: volumeMount %s names no volume", c.Name, m.Name)
		}
		host := vol.host
		if m.SubPath != "" {
			host = filepath.Join(host, m.SubPath)
		}
		mm = append(mm, struct{ from, to string }{filepath.Clean(m.MountPath), host})
	}
	sort.Slice(mm, func(i, j int) bool { return len(mm[i].from) > len(mm[j].from) })
	// Nested mounts: materialize the inner one inside the outer one's directory.
	for i, inner := range mm {
		for _, outer := range mm[i+1:] {
			if rel, ok := strings.CutPrefix(inner.from, outer.from+"/"); ok {
				dst := filepath.Join(outer.to, rel)
				if err := copyPath(inner.to, dst); err != nil {
					return nil, fmt.Errorf("container %s: mount %s inside %s: %w", c.Name, inner.from, outer.from, err)
				}
				break
			}
		}
	}
	return mm, nil
}

func copyPath(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return os.Symlink(src, dst)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, b, st.Mode().Perm())
}

// ---------------------------------------------------------------- running

func (r *podRun) start() {
	for i := range r.ctrs {
		go r.runContainer(r.ctrs[i])
	}
	go func() {
		// The pod is done when every container has finished for good.
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			<-t.C
			r.mu.Lock()
			all := true
			for _, c := range r.ctrs {
				all = all && c.finished
			}
			r.mu.Unlock()
			if all {
				close(r.done)
				r.report()
				return
			}
		}
	}()
}

func (r *podRun) restartPolicy() corev1.RestartPolicy {
	if r.pod.Spec.RestartPolicy == "" {
		return corev1.RestartPolicyAlways
	}
	return r.pod.Spec.RestartPolicy
}

// runContainer starts c's process, restarts it as restartPolicy says, until it finishes for good
// or the pod terminates.
func (r *podRun) runContainer(c *ctrRun) {
	backoff := time.Second
	for {
		logf, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			r.finish(c, 128, "StartError", err.Error())
			return
		}
		cmd := exec.Command(c.argv[0], c.argv[1:]...)
		cmd.Env = c.env
		cmd.Dir = r.dir
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		fmt.Fprintf(logf, "==== %s start: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(c.argv, " "))

		r.mu.Lock()
		if r.terminating {
			r.mu.Unlock()
			logf.Close()
			r.finish(c, 0, "", "")
			return
		}
		err = cmd.Start()
		if err != nil {
			r.mu.Unlock()
			logf.Close()
			r.finish(c, 128, "StartError", err.Error())
			return
		}
		exited := make(chan struct{})
		c.proc, c.exited = cmd.Process, exited
		c.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
		c.ready = c.spec.ReadinessProbe == nil
		r.mu.Unlock()
		r.report()

		probeCtx, stopProbe := context.WithCancel(r.ctx)
		if c.spec.ReadinessProbe != nil {
			go r.probe(probeCtx, c, exited)
		}
		werr := cmd.Wait()
		stopProbe()
		logf.Close()
		code := int32(0)
		if werr != nil {
			var ee *exec.ExitError
			if errors.As(werr, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					code = 128 + int32(ws.Signal())
				} else {
					code = int32(ee.ExitCode())
				}
			} else {
				code = 1
			}
		}
		reason := "Completed"
		if code != 0 {
			reason = "Error"
		}
		r.mu.Lock()
		close(exited)
		terminated := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: code, Reason: reason, StartedAt: c.state.Running.StartedAt, FinishedAt: metav1.Now(),
			ContainerID: "proc://" + strconv.Itoa(cmd.Process.Pid),
		}}
		c.proc, c.ready, c.exitCode = nil, false, code
		restart := !r.terminating && (r.restartPolicy() == corev1.RestartPolicyAlways ||
			(r.restartPolicy() == corev1.RestartPolicyOnFailure && code != 0))
		if restart {
			c.lastState = terminated
			c.restarts++
			c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: fmt.Sprintf("exit code %d", code)}}
		} else {
			c.state = terminated
			c.finished = true
		}
		r.mu.Unlock()
		r.p.logf("pod %s/%s container %s exited with %d (restart=%v)", r.pod.Namespace, r.pod.Name, c.spec.Name, code, restart)
		r.report()
		if !restart {
			return
		}
		select {
		case <-r.ctx.Done():
			r.finish(c, code, reason, "")
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// finish marks c as finished without a running process.
func (r *podRun) finish(c *ctrRun, code int32, reason, msg string) {
	r.mu.Lock()
	if !c.finished {
		c.finished = true
		if c.state.Terminated == nil {
			c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason, Message: msg, FinishedAt: metav1.Now()}}
		}
		c.exitCode = code
	}
	r.mu.Unlock()
	r.report()
}

// probe runs c's readiness probe while its current process lives.
func (r *podRun) probe(ctx context.Context, c *ctrRun, exited chan struct{}) {
	pr := c.spec.ReadinessProbe
	period := secondsOr(pr.PeriodSeconds, 10)
	timeout := secondsOr(pr.TimeoutSeconds, 1)
	failures := int(max(pr.FailureThreshold, 1))
	if pr.FailureThreshold == 0 {
		failures = 3
	}
	successes := int(max(pr.SuccessThreshold, 1))
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Duration(pr.InitialDelaySeconds) * time.Second):
	}
	okRun, failRun := 0, 0
	client := &http.Client{Timeout: timeout}
	for {
		ok := r.check(ctx, client, &c.spec, pr)
		if ok {
			okRun, failRun = okRun+1, 0
		} else {
			okRun, failRun = 0, failRun+1
		}
		r.mu.Lock()
		changed := false
		select {
		case <-exited:
		default:
			if ok && okRun >= successes && !c.ready {
				c.ready, changed = true, true
			}
			if !ok && failRun >= failures && c.ready {
				c.ready, changed = false, true
			}
		}
		r.mu.Unlock()
		if changed {
			r.p.logf("pod %s/%s container %s ready=%v", r.pod.Namespace, r.pod.Name, c.spec.Name, ok)
			r.report()
		}
		// Until the first success, probe every 200 ms so a starting pod turns Ready
		// promptly (the kubelet probes at once on start, then every period).
		next := period
		if !c.ready && okRun == 0 && failRun < 50 {
			next = 200 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

func secondsOr(s, def int32) time.Duration {
	if s <= 0 {
		s = def
	}
	return time.Duration(s) * time.Second
}

func (r *podRun) check(ctx context.Context, client *http.Client, c *corev1.Container, pr *corev1.Probe) bool {
	g := pr.HTTPGet
	if g == nil {
		return true // exec and tcpSocket probes are not emulated
	}
	port, err := resolvePort(g.Port, c)
	if err != nil {
		return false
	}
	host := g.Host
	if host == "" {
		host = r.ip
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), path), nil)
	if err != nil {
		return false
	}
	for _, h := range g.HTTPHeaders {
		req.Header.Add(h.Name, h.Value)
	}
	req.Header.Set("User-Agent", "kube-probe/1.36")
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

func resolvePort(p intstr.IntOrString, c *corev1.Container) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	return 0, fmt.Errorf("port %q not declared", p.StrVal)
}

// terminate is the kubelet's pod termination: preStop hooks, SIGTERM, the grace period, SIGKILL.
func (r *podRun) terminate(why string) {
	r.termOnce.Do(func() {
		r.mu.Lock()
		r.terminating = true
		grace := int64(30)
		if r.pod.Spec.TerminationGracePeriodSeconds != nil {
			grace = *r.pod.Spec.TerminationGracePeriodSeconds
		}
		if r.pod.DeletionGracePeriodSeconds != nil {
			grace = *r.pod.DeletionGracePeriodSeconds
		}
		r.mu.Unlock()
		start := time.Now()
		deadline := start.Add(time.Duration(grace) * time.Second)
		r.p.logf("pod %s/%s terminating (%s), grace %ds", r.pod.Namespace, r.pod.Name, why, grace)

		var wg sync.WaitGroup
		for _, c := range r.ctrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.stopContainer(c, deadline)
			}()
		}
		wg.Wait()
		r.cancel()
		<-r.done
		r.p.logf("pod %s/%s terminated after %s", r.pod.Namespace, r.pod.Name, time.Since(start).Round(time.Millisecond))
	})
}

func (r *podRun) stopContainer(c *ctrRun, deadline time.Time) {
	r.mu.Lock()
	proc, exited := c.proc, c.exited
	r.mu.Unlock()
	if proc == nil {
		return
	}
	if h := c.spec.Lifecycle; h != nil && h.PreStop != nil && h.PreStop.Exec != nil {
		r.runHook(c, h.PreStop.Exec.Command, deadline)
		// The kubelet grants at least 2 s after a hook that used up the grace period.
		if min2 := time.Now().Add(2 * time.Second); deadline.Before(min2) {
			deadline = min2
		}
	}
	_ = syscall.Kill(-proc.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(time.Until(deadline)):
		r.p.logf("pod %s/%s container %s: grace period over, SIGKILL", r.pod.Namespace, r.pod.Name, c.spec.Name)
		_ = syscall.Kill(-proc.Pid, syscall.SIGKILL)
		<-exited
	}
}

func (r *podRun) runHook(c *ctrRun, command []string, deadline time.Time) {
	if len(command) == 0 {
		return
	}
	bin := c.argv[0]
	env := map[string]string{}
	for _, kv := range c.env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	argv, err := r.commandLine(bin, command[:1], command[1:], env, c.mounts, declaredPorts(&c.spec))
	logf, _ := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	defer logf.Close()
	if err != nil {
		fmt.Fprintf(logf, "==== preStop: %v\n", err)
		return
	}
	fmt.Fprintf(logf, "==== %s preStop: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env, cmd.Dir, cmd.Stdout, cmd.Stderr = c.env, r.dir, logf, logf
	start := time.Now()
	err = cmd.Run()
	fmt.Fprintf(logf, "==== %s preStop done after %s: %v\n", time.Now().Format(time.RFC3339Nano), time.Since(start).Round(time.Millisecond), err)
}

// kill SIGKILLs every process of the pod at once (test cleanup).
func (r *podRun) kill() {
	r.mu.Lock()
	r.terminating = true
	var procs []*ctrRun
	for _, c := range r.ctrs {
		if c.proc != nil {
			procs = append(procs, c)
		}
	}
	r.mu.Unlock()
	for _, c := range procs {
		r.mu.Lock()
		proc, exited := c.proc, c.exited
		r.mu.Unlock()
		if proc != nil {
			_ = syscall.Kill(-proc.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	r.cancel()
}

// ---------------------------------------------------------------- status

// snapshot is the pod as the provider sees it: the latest metadata (from the informer when it
// knows this pod, so a status report never reverts a label another client just set) and the
// status of its processes.
func (r *podRun) snapshot() *corev1.Pod {
	r.mu.Lock()
	pod := r.pod.DeepCopy()
	st := r.statusLocked()
	r.mu.Unlock()
	if r.p.cfg.Pods != nil {
		if cur, err := r.p.cfg.Pods.Pods(pod.Namespace).Get(pod.Name); err == nil && cur.UID == pod.UID {
			spec := pod.Spec
			pod = cur.DeepCopy()
			pod.Spec = spec
		}
	}
	pod.Status = st
	return pod
}

func (r *podRun) statusLocked() corev1.PodStatus {
	now := metav1.Now()
	st := corev1.PodStatus{
		HostIP:    "127.0.0.1",
		HostIPs:   []corev1.HostIP{{IP: "127.0.0.1"}},
		PodIP:     r.ip,
		PodIPs:    []corev1.PodIP{{IP: r.ip}},
		StartTime: r.started.DeepCopy(),
		QOSClass:  r.pod.Status.QOSClass,
	}
	allReady, anyRunning, allFinished, allZero := true, false, true, true
	for _, c := range r.ctrs {
		running := c.state.Running != nil
		anyRunning = anyRunning || running
		allFinished = allFinished && c.finished
		allZero = allZero && c.exitCode == 0
		allReady = allReady && running && c.ready
		cs := corev1.ContainerStatus{
			Name: c.spec.Name, Image: c.spec.Image, ImageID: "process://" + c.argv[0],
			State: *c.state.DeepCopy(), LastTerminationState: *c.lastState.DeepCopy(),
			Ready: c.ready && running, RestartCount: c.restarts, Started: &running,
		}
		if c.proc != nil {
			cs.ContainerID = "proc://" + strconv.Itoa(c.proc.Pid)
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	switch {
	case allFinished && allZero:
		st.Phase = corev1.PodSucceeded
	case allFinished:
		st.Phase = corev1.PodFailed
	case anyRunning:
		st.Phase = corev1.PodRunning
	default:
		st.Phase = corev1.PodPending
	}
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: now}
	}
	ready := allReady && !allFinished
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, true),
		cond(corev1.PodInitialized, true),
		cond(corev1.ContainersReady, ready),
		cond(corev1.PodReady, ready),
		cond(corev1.PodScheduled, true),
	}
	// Keep transition times stable when a condition did not change.
	for i := range st.Conditions {
		for _, old := range r.lastConds {
			if old.Type == st.Conditions[i].Type && old.Status == st.Conditions[i].Status {
				st.Conditions[i].LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	r.lastConds = st.Conditions
	return st
}

// report pushes the pod's current status to virtual-kubelet.
func (r *podRun) report() {
	r.p.mu.Lock()
	notify := r.p.notify
	r.p.mu.Unlock()
	if notify != nil {
		notify(r.snapshot())
	}
}
