// Command parley-operator reconciles ChatCluster resources (chat.parley.io/v1alpha1) into the
// Parley runtime's StatefulSets, Services and Jobs, and rolls new versions out region by region,
// draining gateways before it replaces them.
//
//	parley-operator [--region NAME] [--leader-elect] [--metrics-bind-address :8080]
//	                [--health-probe-bind-address :8081] [--namespace NS] [--zap-devel]
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/controller"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "parley-operator:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		metricsAddr, probeAddr, region, namespace string
		leaderElect                               bool
		drainPoll                                 time.Duration
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus /metrics endpoint (\"0\" disables it)")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	flag.BoolVar(&leaderElect, "leader-elect", false, "elect a leader so only one replica reconciles at a time")
	flag.StringVar(&region, "region", "", "reconcile only this region of each ChatCluster (one operator per Kubernetes cluster and region); empty: all regions")
	flag.StringVar(&namespace, "namespace", "", "watch only this namespace; empty: all namespaces")
	flag.DurationVar(&drainPoll, "drain-poll", 2*time.Second, "how often draining gateways are asked for their connection count")
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	logger := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(chatv1.AddToScheme(scheme))

	cacheOpts := controller.CacheOptions()
	if namespace != "" {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{namespace: {}}
	}
	leaseID := "parley-operator.chat.parley.io"
	if region != "" {
		leaseID = region + "." + leaseID
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                        scheme,
		Cache:                         cacheOpts,
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:        probeAddr,
		LeaderElection:                leaderElect,
		LeaderElectionID:              leaseID,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	r := &controller.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Scheme:    mgr.GetScheme(),
		Recorder:  mgr.GetEventRecorder("parley-operator"),
		Options:   controller.Options{Region: region, DrainPoll: drainPoll},
	}
	if err := r.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	logger.Info("starting", "region", region, "namespace", namespace, "leaderElect", leaderElect)
	return mgr.Start(ctrl.SetupSignalHandler())
}
