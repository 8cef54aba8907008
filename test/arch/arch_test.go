// Package arch holds the architecture test: which parts of Parley may
// depend on which (issue 15). It reads the module's real import graph with
// `go list -deps`, so a new import that crosses a line fails here.
package arch

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/parleychat/parley"

// deps returns the module's packages that the packages matching pattern
// import, directly or not (tests excluded), by package.
func deps(t *testing.T, pattern string) map[string][]string {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, pattern).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pattern, err)
	}
	m := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		for _, d := range fields[1:] {
			if strings.HasPrefix(d, module+"/") {
				m[fields[0]] = append(m[fields[0]], d)
			}
		}
	}
	return m
}

func TestLayering(t *testing.T) {
	// The graph is read: the server, the composition root, does depend on
	// the sequencer's package.
	if g := deps(t, module+"/runtime/server"); !slices.Contains(g[module+"/runtime/server"], module+"/runtime/chat") {
		t.Fatalf("the import graph was not read: runtime/server shows no dependency on runtime/chat")
	}
	for _, rule := range []struct {
		what      string
		pattern   string   // the packages the rule is about
		forbidden []string // import paths (prefixes end in "/") they must not depend on
	}{
		{"storage backends do not depend on the sequencer or the gateway", module + "/runtime/store/...",
			[]string{module + "/runtime/chat", module + "/runtime/gateway"}},
		{"bus backends do not depend on the sequencer or the gateway", module + "/runtime/bus/...",
			[]string{module + "/runtime/chat", module + "/runtime/gateway"}},
		{"presence backends do not depend on the sequencer or the gateway", module + "/runtime/presence/...",
			[]string{module + "/runtime/chat", module + "/runtime/gateway"}},
		{"the gateway does not depend on the sequencer or a storage backend (it publishes through chat/ingress and reads through the Queries it is given)",
			module + "/runtime/gateway/...",
			[]string{module + "/runtime/chat", module + "/runtime/store/"}},
		{"the SDK and CLI do not depend on the server", module + "/runtime/client/...",
			[]string{module + "/runtime/server", module + "/runtime/gateway", module + "/runtime/chat", module + "/runtime/store/"}},
		{"the runtime does not depend on the operator or its API", module + "/runtime/...",
			[]string{module + "/operator/", module + "/api/"}},
		{"the operator does not link the runtime", module + "/operator/...",
			[]string{module + "/runtime/"}},
	} {
		for pkg, ds := range deps(t, rule.pattern) {
			for _, d := range ds {
				for _, f := range rule.forbidden {
					if d == f || strings.HasSuffix(f, "/") && strings.HasPrefix(d, f) {
						t.Errorf("%s: %s depends on %s", rule.what, strings.TrimPrefix(pkg, module+"/"), strings.TrimPrefix(d, module+"/"))
					}
				}
			}
		}
	}
}
