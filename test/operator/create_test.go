package operator

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
	"github.com/parleychat/parley/operator/specs"
)

// TestValidation: the API server refuses invalid ChatClusters with the CRD's own messages.
func TestValidation(t *testing.T) {
	needAPIServer(t)
	h := newHarness(t, harnessOpts{})
	h.stopOperator() // the API server alone judges these

	valid := func() *chatv1.ChatCluster {
		return h.newCluster("v", "parley:1", testRegion("eu", 0, 2, 3, 2), testRegion("us", 1, 2, 3, 2))
	}
	tests := []struct {
		name   string
		mutate func(*chatv1.ChatCluster)
		want   string
	}{
		{"duplicate region ids", func(cc *chatv1.ChatCluster) { cc.Spec.Regions[1].ID = 0 }, "region ids must be unique"},
		{"duplicate region names", func(cc *chatv1.ChatCluster) { cc.Spec.Regions[1].Name = "eu" }, "region names must be unique"},
		{"nine regions", func(cc *chatv1.ChatCluster) {
			cc.Spec.Regions = nil
			for i := range 9 {
				cc.Spec.Regions = append(cc.Spec.Regions, testRegion(fmt.Sprintf("r%d", i), int32(i%8), 1, 1, 1))
			}
		}, "spec.regions: Too many: 9: must have at most 8 items"},
		{"region id 8", func(cc *chatv1.ChatCluster) { cc.Spec.Regions[1].ID = 8 }, "spec.regions[1].id: Invalid value: 8: spec.regions[1].id in body should be less than or equal to 7"},
		{"chat replicas 129", func(cc *chatv1.ChatCluster) { cc.Spec.Regions[0].Chat.Replicas = 129 }, "spec.regions[0].chat.replicas: Invalid value: 129: spec.regions[0].chat.replicas in body should be less than or equal to 128"},
		{"maxGroupMembers 501", func(cc *chatv1.ChatCluster) { cc.Spec.Limits.MaxGroupMembers = 501 }, "spec.limits.maxGroupMembers: Invalid value: 501: spec.limits.maxGroupMembers in body should be less than or equal to 500"},
		{"regionOrder names a missing region", func(cc *chatv1.ChatCluster) { cc.Spec.Rollout.RegionOrder = []string{"us", "ap"} }, "rollout.regionOrder may only name regions listed in spec.regions"},
		{"drainTimeout too long", func(cc *chatv1.ChatCluster) { cc.Spec.Rollout.DrainTimeout = &metav1.Duration{Duration: time.Hour} }, "drainTimeout must be between 1s and 30m"},
		{"name too long", func(cc *chatv1.ChatCluster) { cc.Name = strings.Repeat("a", 31) }, "metadata.name must be a DNS label of at most 30 characters"},
		{"two auth sources", func(cc *chatv1.ChatCluster) {
			cc.Spec.Auth.JWKSURL = "https://idp.example/jwks"
			cc.Spec.Auth.JWKSSecretRef = &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "jwks"}, Key: "jwks.json"}
		}, "set at most one of auth.jwksURL and auth.jwksSecretRef"},
		{"no kafka brokers", func(cc *chatv1.ChatCluster) { cc.Spec.Regions[0].Kafka.Brokers = nil }, "spec.regions[0].kafka.brokers: Required value"},
		{"two regions on one Redis, no prefixes", func(cc *chatv1.ChatCluster) { cc.Spec.Regions[1].Redis = cc.Spec.Regions[0].Redis },
			"regions that share one redis.address must each set a different redis.keyPrefix"},
		{"two regions on one Redis, one prefix", func(cc *chatv1.ChatCluster) {
			cc.Spec.Regions[1].Redis = chatv1.RegionRedis{Address: cc.Spec.Regions[0].Redis.Address, KeyPrefix: "parley:us:"}
		}, "regions that share one redis.address must each set a different redis.keyPrefix"},
		{"two regions on one Redis, the same prefix", func(cc *chatv1.ChatCluster) {
			cc.Spec.Regions[0].Redis.KeyPrefix = "p:"
			cc.Spec.Regions[1].Redis = cc.Spec.Regions[0].Redis
		}, "regions that share one redis.address must each set a different redis.keyPrefix"},
		{"a key prefix with a space", func(cc *chatv1.ChatCluster) { cc.Spec.Regions[0].Redis.KeyPrefix = "my prefix" },
			"spec.regions[0].redis.keyPrefix in body should match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc := valid()
			tt.mutate(cc)
			err := h.c.Create(h.ctx, cc)
			if err == nil {
				t.Fatalf("created an invalid ChatCluster; want refusal containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("refused with\n  %v\nwant a message containing\n  %q", err, tt.want)
			}
			t.Logf("refused: %v", err)
		})
	}

	t.Run("regions on one Redis with their own prefixes", func(t *testing.T) {
		cc := valid()
		cc.Name = "shared"
		cc.Spec.Regions[0].Redis.KeyPrefix = "parley:eu:"
		cc.Spec.Regions[1].Redis = chatv1.RegionRedis{Address: cc.Spec.Regions[0].Redis.Address, KeyPrefix: "parley:us:"}
		if err := h.c.Create(h.ctx, cc); err != nil {
			t.Fatalf("two regions on one Redis with different prefixes: %v", err)
		}
	})

	t.Run("region id is immutable", func(t *testing.T) {
		cc := valid()
		h.create(cc)
		cc.Spec.Regions[1].ID = 5
		err := h.c.Update(h.ctx, cc)
		if err == nil || !strings.Contains(err.Error(), "region id is immutable") {
			t.Fatalf("update of a region id: got %v, want refusal 'region id is immutable'", err)
		}
		t.Logf("refused: %v", err)
		// Other fields of the region still change.
		cc = h.get(cc)
		cc.Spec.Regions[1].Chat.Replicas = 4
		if err := h.c.Update(h.ctx, cc); err != nil {
			t.Fatalf("update of chat replicas: %v", err)
		}
	})

	t.Run("defaults", func(t *testing.T) {
		cc := &chatv1.ChatCluster{
			ObjectMeta: metav1.ObjectMeta{Name: "d", Namespace: h.ns},
			Spec: chatv1.ChatClusterSpec{
				Image:     "parley:1",
				Cassandra: chatv1.CassandraSpec{ContactPoints: []string{"c"}},
				Regions: []chatv1.Region{{Name: "eu", ID: 0,
					Cassandra: chatv1.RegionCassandra{LocalDatacenter: "dc1"},
					Kafka:     chatv1.RegionKafka{Brokers: []string{"k:9092"}},
					Redis:     chatv1.RegionRedis{Address: "r:6379"}}},
			},
		}
		h.create(cc)
		got := h.get(cc)
		s := got.Spec
		r := s.Regions[0]
		checks := []struct {
			name      string
			got, want any
		}{
			{"limits.maxGroupMembers", s.Limits.MaxGroupMembers, int32(500)},
			{"limits.maxMessageBytes", s.Limits.MaxMessageBytes, int32(4096)},
			{"limits.sendRatePerSecond", s.Limits.SendRatePerSecond, int32(20)},
			{"limits.readRatePerSecond", s.Limits.ReadRatePerSecond, int32(20)},
			{"limits.readBurst", s.Limits.ReadBurst, int32(100)},
			{"limits.maxSessionsPerUser", s.Limits.MaxSessionsPerUser, int32(16)},
			{"cassandra.keyspace", s.Cassandra.Keyspace, "parley"},
			{"rollout.drainTimeout", s.Rollout.DrainTimeout.Duration, 60 * time.Second},
			{"rollout.progressDeadline", s.Rollout.ProgressDeadline.Duration, 10 * time.Minute},
			{"rollout.maxUnavailable", s.Rollout.MaxUnavailable, int32(1)},
			{"rollout.maxSurge", s.Rollout.Surge(), int32(1)},
			{"imagePullPolicy", s.ImagePullPolicy, corev1.PullIfNotPresent},
			{"gateway.replicas", r.Gateway.Replicas, int32(2)},
			{"gateway.service.type", r.Gateway.Service.Type, corev1.ServiceTypeClusterIP},
			{"gateway.service.port", r.Gateway.Service.Port, int32(80)},
			{"chat.replicas", r.Chat.Replicas, int32(3)},
			{"presence.replicas", r.Presence.Replicas, int32(2)},
			{"cassandra.replicationFactor", r.Cassandra.ReplicationFactor, int32(3)},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s defaulted to %v, want %v", c.name, c.got, c.want)
			}
		}
		// The Go defaults match the schema's.
		manual := cc.DeepCopy()
		manual.Spec = chatv1.ChatClusterSpec{Image: "parley:1", Regions: []chatv1.Region{{Name: "eu"}}}
		chatv1.SetDefaults(manual)
		if manual.Spec.Limits != s.Limits || *manual.Spec.Rollout.DrainTimeout != *s.Rollout.DrainTimeout ||
			manual.Spec.Regions[0].Gateway.Replicas != r.Gateway.Replicas || manual.Spec.Regions[0].Chat.Replicas != r.Chat.Replicas {
			t.Errorf("chatv1.SetDefaults disagrees with the CRD defaults: %+v vs %+v", manual.Spec, s)
		}
	})
}

// TestCreate: a two-region ChatCluster gets exactly its objects, all owned by it, after its
// migrations; it turns Ready; and a further reconcile writes nothing.
func TestCreate(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	cc := h.newCluster("chat", "parley:1.0", testRegion("eu", 0, 2, 2, 1), testRegion("us", 3, 1, 2, 1))
	cc.Spec.Rollout.RegionOrder = []string{"us", "eu"}
	h.create(cc)

	// One migration at a time, in region order; no StatefulSet before its region migrated.
	h.eventually("first migrate job", 20*time.Second, func() (bool, error) { return len(h.jobs()) == 1, nil })
	if jobs := h.jobs(); jobs[0].Labels[specs.LabelRegion] != "us" {
		t.Fatalf("first migrate job is for region %s, want us (regionOrder)", jobs[0].Labels[specs.LabelRegion])
	}
	var stss appsv1.StatefulSetList
	if err := h.c.List(h.ctx, &stss, client.InNamespace(h.ns)); err != nil || len(stss.Items) != 0 {
		t.Fatalf("StatefulSets before any migration finished: %d (%v)", len(stss.Items), err)
	}
	job := h.jobs()[0]
	if args := job.Spec.Template.Spec.Containers[0].Args; args[0] != "migrate" || !slices.Contains(args, "--replication=dc-eu=3,dc-us=3") {
		t.Errorf("migrate args %v", args)
	}
	h.migrateThrough(2)

	cc = h.waitCondition(cc, chatv1.ConditionReady, metav1.ConditionTrue, "AllRegionsReady", 60*time.Second)
	if cc.Status.ReadyRegions != "2/2" {
		t.Errorf("readyRegions %q, want 2/2", cc.Status.ReadyRegions)
	}
	for _, ct := range []string{chatv1.ConditionProgressing, chatv1.ConditionDegraded} {
		if c := findCondition(cc, ct); c == nil || c.Status != metav1.ConditionFalse {
			t.Errorf("condition %s = %+v, want False", ct, c)
		}
	}

	// Exactly these objects, each controlled by the ChatCluster (envtest runs no garbage
	// collector, so the references are what deleting the ChatCluster relies on).
	want := map[string][]string{}
	for _, region := range []string{"eu", "us"} {
		for _, role := range []string{"chat", "presence", "gateway"} {
			n := "chat-" + region + "-" + role
			want["StatefulSet"] = append(want["StatefulSet"], n)
			want["Service"] = append(want["Service"], n)
			want["PodDisruptionBudget"] = append(want["PodDisruptionBudget"], n)
			want["ConfigMap"] = append(want["ConfigMap"], n)
		}
		want["Service"] = append(want["Service"], "chat-"+region)
		want["ConfigMap"] = append(want["ConfigMap"], "chat-"+region+"-peers")
	}
	want["Secret"] = []string{"chat-admin-token", "chat-dev-secret"}
	// Each region's peers ConfigMap lists the other region (the runtime's --peer-region-file).
	for region, other := range map[string]string{"eu": "us", "us": "eu"} {
		var cm corev1.ConfigMap
		if err := h.c.Get(h.ctx, client.ObjectKey{Namespace: h.ns, Name: "chat-" + region + "-peers"}, &cm); err != nil {
			t.Fatal(err)
		}
		if got := cm.Data[specs.PeersKey]; !strings.HasPrefix(got, "name="+other+",") || strings.Contains(got, "name="+region+",") {
			t.Errorf("peers of %s = %q, want only %s", region, got, other)
		}
	}
	lists := map[string]client.ObjectList{
		"StatefulSet": &appsv1.StatefulSetList{}, "Service": &corev1.ServiceList{}, "PodDisruptionBudget": &policyv1.PodDisruptionBudgetList{},
		"ConfigMap": &corev1.ConfigMapList{}, "Secret": &corev1.SecretList{},
	}
	for kind, list := range lists {
		if err := h.c.List(h.ctx, list, client.InNamespace(h.ns), client.MatchingLabels{specs.LabelManagedBy: specs.ManagedBy}); err != nil {
			t.Fatal(err)
		}
		objs := objects(list)
		var names []string
		for _, o := range objs {
			names = append(names, o.GetName())
			if !metav1.IsControlledBy(o, cc) {
				t.Errorf("%s %s is not controlled by the ChatCluster: %+v", kind, o.GetName(), o.GetOwnerReferences())
			}
		}
		slices.Sort(names)
		slices.Sort(want[kind])
		if !slices.Equal(names, want[kind]) {
			t.Errorf("%s: got %v, want %v", kind, names, want[kind])
		}
	}
	for _, j := range h.jobs() {
		if !metav1.IsControlledBy(&j, cc) {
			t.Errorf("job %s not controlled by the ChatCluster", j.Name)
		}
	}

	// Shapes that matter at runtime.
	chatSts := h.sts("chat-us-chat")
	if chatSts.Spec.Ordinals == nil || chatSts.Spec.Ordinals.Start != 3*128 {
		t.Errorf("us chat ordinals %+v, want start 384 (region id 3 × 128 = Snowflake node ids)", chatSts.Spec.Ordinals)
	}
	if pods := h.pods(specs.Selector(cc, "us", chatv1.RoleChat)); len(pods) != 2 || pods[0].Name != "chat-us-chat-384" {
		t.Errorf("us chat pods %v", podNames(pods))
	}
	gw := h.sts("chat-eu-gateway")
	if gw.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType {
		t.Errorf("gateway update strategy %s, want OnDelete", gw.Spec.UpdateStrategy.Type)
	}
	pod := gw.Spec.Template.Spec
	if grace := *pod.TerminationGracePeriodSeconds; grace <= int64(cc.Spec.Rollout.DrainTimeout.Seconds()) {
		t.Errorf("gateway grace period %ds is not longer than drainTimeout %s", grace, cc.Spec.Rollout.DrainTimeout.Duration)
	}
	if ps := pod.Containers[0].Lifecycle.PreStop; ps == nil || !slices.Contains(ps.Exec.Command, "drain") {
		t.Errorf("gateway preStop %+v, want `parley admin drain`", ps)
	}
	svc := &corev1.Service{}
	if err := h.c.Get(h.ctx, types.NamespacedName{Namespace: h.ns, Name: "chat-eu"}, svc); err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Selector[specs.LabelAccepting] != "true" || svc.Spec.Selector[specs.LabelRole] != "gateway" {
		t.Errorf("client Service selector %v, want gateways with parley.io/accepting=true", svc.Spec.Selector)
	}

	// Idempotent: stop the operator, then two more passes write nothing (status aside, which
	// Kubernetes' controllers keep updating).
	h.stopOperator()
	before := h.resourceVersions()
	r := h.directReconciler()
	for i := range 2 {
		if res, err := r.Reconcile(h.ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(cc)}); err != nil {
			t.Fatalf("pass %d: %v (%+v)", i, err, res)
		}
	}
	after := h.resourceVersions()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed on a no-op reconcile:\n before %s\n after  %s", k, v, after[k])
		}
	}
	if len(after) != len(before) {
		t.Errorf("objects changed on a no-op reconcile: %d → %d", len(before), len(after))
	}
}

func findCondition(cc *chatv1.ChatCluster, t string) *metav1.Condition {
	for i := range cc.Status.Conditions {
		if cc.Status.Conditions[i].Type == t {
			return &cc.Status.Conditions[i]
		}
	}
	return nil
}

func objects(list client.ObjectList) []client.Object {
	var out []client.Object
	switch l := list.(type) {
	case *appsv1.StatefulSetList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *corev1.ServiceList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *policyv1.PodDisruptionBudgetList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *corev1.ConfigMapList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *corev1.SecretList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *corev1.PodList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	}
	return out
}

// resourceVersions of every object in the namespace the operator could write.
// resourceVersions returns, for every object of the test's namespace that the operator
// writes or owns, its content as the operator would write it: the object without status,
// resourceVersion and managedFields. Kubernetes' own controllers update status (the
// StatefulSet and disruption controllers) and the fake kubelet pods' status; a change here is
// a write of spec, data or metadata, which a no-op reconcile must not make.
func (h *harness) resourceVersions() map[string]string {
	h.t.Helper()
	out := map[string]string{}
	lists := []client.ObjectList{&appsv1.StatefulSetList{}, &corev1.ServiceList{}, &policyv1.PodDisruptionBudgetList{},
		&corev1.ConfigMapList{}, &corev1.SecretList{}, &corev1.PodList{}, &chatv1.ChatClusterList{}}
	for _, list := range lists {
		if err := h.c.List(h.ctx, list, client.InNamespace(h.ns)); err != nil {
			h.t.Fatal(err)
		}
		for _, o := range objects(list) {
			out[fmt.Sprintf("%T/%s", o, o.GetName())] = h.content(o)
		}
		if l, ok := list.(*chatv1.ChatClusterList); ok {
			for i := range l.Items {
				out["ChatCluster/"+l.Items[i].Name] = h.content(&l.Items[i])
			}
		}
	}
	return out
}

// content is o without status, resourceVersion and managedFields, as JSON.
func (h *harness) content(o client.Object) string {
	h.t.Helper()
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		h.t.Fatal(err)
	}
	delete(u, "status")
	unstructured.RemoveNestedField(u, "metadata", "resourceVersion")
	unstructured.RemoveNestedField(u, "metadata", "managedFields")
	b, err := json.Marshal(u)
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

func podNames(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}
