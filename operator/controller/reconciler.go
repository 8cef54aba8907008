// Package controller reconciles ChatClusters: per region and role a StatefulSet, headless
// Service, PodDisruptionBudget and ConfigMap, the gateways' client-facing Service, the
// `parley migrate` Jobs, and drain-aware rollouts of new pod templates, region by region.
package controller

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/specs"
)

// Reasons of conditions and events, CamelCase as Kubernetes expects.
const (
	ReasonAllRegionsReady = "AllRegionsReady"
	ReasonRolloutComplete = "RolloutComplete"
	ReasonAsExpected      = "AsExpected"
	ReasonMigrating       = "Migrating"
	ReasonMigrationFailed = "MigrationFailed"
	ReasonRollingOut      = "RollingOut"
	ReasonWaitingForPods  = "WaitingForPods"
	ReasonDraining        = "Draining"
	ReasonRemovingRegion  = "RemovingRegion"
	ReasonRegionNotReady  = "RegionNotReady"
	ReasonRolloutPaused   = "RolloutPaused"
	ReasonReconcileError  = "ReconcileError"

	EventMigrationStarted = "MigrationStarted"
	EventMigrated         = "Migrated"
	EventDrainStarted     = "DrainStarted"
	EventDrainTimeout     = "DrainTimeout"
	EventPodReplaced      = "PodReplaced"
	EventRegionRemoved    = "RegionRemoved"
	EventDegraded         = "Degraded"
)

// Options tune a Reconciler.
type Options struct {
	// Region, when set, limits the reconciler to that region (one operator per Kubernetes
	// cluster, each with its own --region); empty reconciles every region.
	Region string
	// Admin reaches gateways' admin endpoints; default HTTPAdmin on pod IPs.
	Admin GatewayAdmin
	// DrainPoll is how often draining gateways are polled; default 2s.
	DrainPoll time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Reconciler reconciles ChatClusters.
type Reconciler struct {
	Client client.Client
	// APIReader reads around the cache (manager.GetAPIReader()) where a stale read would
	// undo the operator's own last write: the gateway StatefulSet's ordinal window, which
	// the rollout slides while the pods it removes and creates arrive through another
	// informer. Nil uses Client.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	Options
}

// +kubebuilder:rbac:groups=chat.parley.io,resources=chatclusters,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=chat.parley.io,resources=chatclusters/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=chat.parley.io,resources=chatclusters/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;patch;delete;deletecollection
// +kubebuilder:rbac:groups="",resources=services;configmaps;secrets,verbs=get;list;watch;create;update;patch;delete;deletecollection
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete;deletecollection
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;update;patch;delete;deletecollection
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// pass is one reconcile pass over a ChatCluster: what the steps observed and decided.
type pass struct {
	orig    *chatv1.ChatCluster // as read: status is patched against it
	cc      *chatv1.ChatCluster // defaulted copy the builders read
	regions []*chatv1.Region    // reconciled regions, in rollout order
	now     time.Time
	token   string // gateways' admin token

	migration map[string]migrationState // by region
	sts       map[string]*appsv1.StatefulSet
	pods      map[string][]*corev1.Pod // by region/role key
	drained   map[string]bool          // draining pods that are done
	plan      Plan
	removing  []string // regions no longer in the spec, still being removed
	// removingWhy says, per region in removing, what its removal waits for.
	removingWhy []string

	requeue time.Duration
}

func (p *pass) requeueAfter(d time.Duration) {
	if d > 0 && (p.requeue == 0 || d < p.requeue) {
		p.requeue = d
	}
}

func roleKey(region string, role chatv1.Role) string { return region + "/" + string(role) }

// step is one ordered step of a pass.
type step struct {
	name string
	run  func(context.Context, *pass) error
	// holds marks steps that change pods; rollout.paused skips them.
	holds bool
}

// Reconcile runs the steps in order. The order is the documentation: secrets and config first,
// Services and disruption budgets, then the migration that gates any pod of a new version,
// observing pods, StatefulSets, the rollout itself, removed regions, and status last.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	orig := &chatv1.ChatCluster{}
	if err := r.Client.Get(ctx, req.NamespacedName, orig); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !orig.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, nil // owner references remove everything
	}
	p := r.newPass(orig)

	steps := []step{
		{"secrets", r.ensureSecrets, false},
		{"config", r.ensureConfig, true},
		{"services", r.ensureServices, false},
		{"disruption budgets", r.ensureDisruptionBudgets, false},
		{"migration", r.ensureMigration, true},
		{"observe pods", r.observePods, false},
		{"plan", r.planRollout, false},
		{"statefulsets", r.ensureStatefulSets, true},
		{"rollout", r.rollOut, true},
		{"removed regions", r.removeRegions, true},
	}
	var stepErr error
	for _, s := range steps {
		if s.holds && p.cc.Spec.Rollout.Paused {
			continue
		}
		if err := s.run(ctx, p); err != nil {
			stepErr = fmt.Errorf("%s: %w", s.name, err)
			break
		}
	}
	if apierrors.IsConflict(stepErr) {
		// Someone wrote an object between our read and write: not a failure worth a condition.
		logger.V(1).Info("conflict, retrying", "error", stepErr.Error())
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	if err := r.updateStatus(ctx, p, stepErr); err != nil && stepErr == nil {
		if apierrors.IsConflict(err) {
			return reconcile.Result{RequeueAfter: time.Second}, nil
		}
		stepErr = fmt.Errorf("status: %w", err)
	}
	if stepErr != nil {
		return reconcile.Result{}, stepErr
	}
	return reconcile.Result{RequeueAfter: p.requeue}, nil
}

func (r *Reconciler) newPass(orig *chatv1.ChatCluster) *pass {
	cc := orig.DeepCopy()
	chatv1.SetDefaults(cc)
	var regions []*chatv1.Region
	for _, region := range cc.Spec.OrderedRegions() {
		if r.Region == "" || region.Name == r.Region {
			regions = append(regions, region)
		}
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	p := &pass{
		orig:      orig,
		cc:        cc,
		regions:   regions,
		now:       now(),
		migration: map[string]migrationState{},
		sts:       map[string]*appsv1.StatefulSet{},
		pods:      map[string][]*corev1.Pod{},
		drained:   map[string]bool{},
	}
	rememberMigrations(p)
	return p
}

func (r *Reconciler) drainPoll() time.Duration {
	if r.DrainPoll > 0 {
		return r.DrainPoll
	}
	return 2 * time.Second
}

func (r *Reconciler) admin() GatewayAdmin {
	if r.Admin != nil {
		return r.Admin
	}
	return &HTTPAdmin{}
}

// ownedSelector selects what the operator made for one ChatCluster.
func ownedSelector(cc *chatv1.ChatCluster) client.MatchingLabels {
	return client.MatchingLabels{specs.LabelInstance: cc.Name, specs.LabelManagedBy: specs.ManagedBy}
}

// CacheOptions keeps the manager's caches to the objects the operator labels: pods, Secrets and
// ConfigMaps of a big cluster are not all held in memory.
func CacheOptions() cache.Options {
	managed := labels.SelectorFromSet(labels.Set{specs.LabelManagedBy: specs.ManagedBy})
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:       {Label: managed},
		&corev1.Secret{}:    {Label: managed},
		&corev1.ConfigMap{}: {Label: managed},
	}}
}

// SetupWithManager registers the controller: it watches ChatClusters, the objects they own,
// and the pods of their StatefulSets (mapped back by the instance label).
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	podToCluster := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		l := o.GetLabels()
		if l[specs.LabelManagedBy] != specs.ManagedBy || l[specs.LabelInstance] == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: l[specs.LabelInstance]}}}
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&chatv1.ChatCluster{}).
		Owns(&appsv1.StatefulSet{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Secret{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&batchv1.Job{}).
		Watches(&corev1.Pod{}, podToCluster).
		Named("chatcluster").
		Complete(r)
}
