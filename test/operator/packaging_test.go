package operator

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// tool finds kustomize or helm where hack/envtest.sh puts them, beside the envtest binaries.
func tool(t *testing.T, name string) string {
	t.Helper()
	needAPIServer(t)
	path := filepath.Join(assetsDir, name)
	if _, err := os.Stat(path); err != nil {
		msg := name + " not found in " + assetsDir + "; run hack/envtest.sh (it builds kustomize and helm from their Go modules)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

func render(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = filepath.Join("..", "..")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// applyDryRun server-side applies every document of a rendered manifest with dryRun=All: the
// API server validates each object (CRD schema, RBAC rules, Deployment spec) without storing it.
// Namespaces are created for real, since namespaced objects need theirs to exist.
func applyDryRun(t *testing.T, manifest []byte) map[string]int {
	t.Helper()
	c, err := client.New(restConfig, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("decode manifest: %v", err)
		}
		if len(u.Object) == 0 {
			continue
		}
		kinds[u.GetKind()]++
		if u.GetKind() == "Namespace" {
			err := c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: u.GetName(), Labels: u.GetLabels()}})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("namespace %s: %v", u.GetName(), err)
			}
			continue
		}
		if ns := u.GetNamespace(); ns != "" {
			err := c.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("namespace %s: %v", ns, err)
			}
		}
		err := c.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("packaging-test"), client.ForceOwnership, client.DryRunAll)
		if err != nil {
			t.Errorf("server-side dry-run apply of %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	return kinds
}

// TestKustomize: config/default and config/samples render with kustomize v5 and apply cleanly.
func TestKustomize(t *testing.T) {
	kustomize := tool(t, "kustomize")
	kinds := applyDryRun(t, render(t, kustomize, "build", "config/default"))
	for _, k := range []string{"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "Deployment", "Role", "RoleBinding", "Namespace"} {
		if kinds[k] == 0 {
			t.Errorf("config/default renders no %s (got %v)", k, kinds)
		}
	}
	samples := applyDryRun(t, render(t, kustomize, "build", "config/samples"))
	if samples["ChatCluster"] != 1 {
		t.Errorf("config/samples renders %v, want one ChatCluster", samples)
	}
}

// TestHelmChart: the chart renders with helm template (default values and a --region install
// without the CRD) and applies cleanly; the CRD template is kept on uninstall.
func TestHelmChart(t *testing.T) {
	helm := tool(t, "helm")
	render(t, helm, "lint", "charts/parley-operator")
	out := render(t, helm, "template", "parley-operator", "charts/parley-operator", "--namespace", "parley-helm")
	if !bytes.Contains(out, []byte("helm.sh/resource-policy: keep")) {
		t.Errorf("the CRD template is not marked helm.sh/resource-policy: keep")
	}
	kinds := applyDryRun(t, out)
	for _, k := range []string{"CustomResourceDefinition", "ClusterRole", "Deployment", "ServiceAccount"} {
		if kinds[k] == 0 {
			t.Errorf("chart renders no %s (got %v)", k, kinds)
		}
	}
	out = render(t, helm, "template", "parley-operator", "charts/parley-operator", "--namespace", "parley-helm",
		"--set", "crds.create=false", "--set", "region=eu")
	if kinds := applyDryRun(t, out); kinds["CustomResourceDefinition"] != 0 {
		t.Errorf("crds.create=false still renders the CRD")
	}
	if !bytes.Contains(out, []byte("--region=eu")) {
		t.Errorf("region=eu does not reach the operator's args")
	}
	// values.schema.json refuses nonsense.
	cmd := exec.Command(helm, "template", "x", "charts/parley-operator", "--set", "region=Not_A_Region")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("values.schema.json accepted region=Not_A_Region")
	} else {
		t.Logf("refused as expected: %s", strings.TrimSpace(string(out)))
	}
}
