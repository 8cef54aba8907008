package controller

import (
	"fmt"
	"slices"
	"testing"
	"time"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
)

// pods builds views "<prefix>-<ordinal>" from a compact spec: one entry per ordinal starting at
// start, each "rev" or "rev!" (not Ready); gateway flags: "~" draining, "=" drained, "x" not
// accepting.
func pods(prefix string, start int32, specs ...string) []PodView {
	var out []PodView
	for i, s := range specs {
		if s == "" {
			continue // missing ordinal
		}
		p := PodView{Name: fmt.Sprintf("%s-%d", prefix, start+int32(i)), Ordinal: start + int32(i), Ready: true, Accepting: true}
		for len(s) > 0 {
			switch s[len(s)-1] {
			case '!':
				p.Ready = false
			case '~':
				p.Draining, p.Accepting = true, false
			case '=':
				p.Draining, p.Drained, p.Accepting = true, true, false
			case 'x':
				p.Accepting = false
			default:
				p.Revision = s
				s = ""
				continue
			}
			s = s[:len(s)-1]
		}
		out = append(out, p)
	}
	return out
}

func TestPlanSimple(t *testing.T) {
	tests := []struct {
		name       string
		view       RoleView
		batch      int32
		active     bool
		wantDelete []string
		wantDone   bool
	}{
		{"all new and ready", RoleView{Replicas: 3, Revision: "b", Pods: pods("c", 0, "b", "b", "b")}, 1, true, nil, true},
		{"old pods: highest ordinal first", RoleView{Replicas: 3, Revision: "b", Pods: pods("c", 0, "a", "a", "a")}, 1, true, []string{"c-2"}, false},
		{"batch of two", RoleView{Replicas: 3, Revision: "b", Pods: pods("c", 0, "a", "a", "a")}, 2, true, []string{"c-2", "c-1"}, false},
		{"wait while a replacement is not ready", RoleView{Replicas: 3, Revision: "b", Pods: pods("c", 0, "a", "a", "b!")}, 1, true, nil, false},
		{"wait while a pod is missing", RoleView{Replicas: 3, Revision: "b", Pods: pods("c", 0, "a", "a", "")}, 1, true, nil, false},
		{"old unready pods go at once", RoleView{Replicas: 3, Revision: "b", Pods: pods("c", 0, "a!", "a!", "a")}, 1, true, []string{"c-0", "c-1"}, false},
		{"not its turn", RoleView{Replicas: 2, Revision: "b", Pods: pods("c", 0, "a", "a")}, 1, false, nil, false},
		{"ordinals start at region id x 128", RoleView{Start: 256, Replicas: 2, Revision: "b", Pods: pods("c", 256, "b", "a")}, 1, true, []string{"c-257"}, false},
		{"pods beyond the range are ignored", RoleView{Replicas: 1, Revision: "b", Pods: pods("c", 0, "b", "a")}, 1, true, nil, true},
		{"no statefulset yet", RoleView{Replicas: 1, Pods: nil}, 1, true, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := planSimple(tt.view, tt.batch, tt.active)
			if !slices.Equal(st.delete, tt.wantDelete) || st.done != tt.wantDone {
				t.Errorf("delete %v done %v (waiting %q); want delete %v done %v", st.delete, st.done, st.waiting, tt.wantDelete, tt.wantDone)
			}
		})
	}
}

func TestPlanGateway(t *testing.T) {
	view := func(start, n int32, ps ...string) RoleView {
		return RoleView{Start: start, Replicas: n, Revision: "b", Pods: pods("g", start, ps...)}
	}
	tests := []struct {
		name         string
		view         RoleView
		surge, batch int32
		active       bool
		wantStart    int32
		wantReplicas int32
		wantDrain    []string
		wantDelete   []string
		wantDone     bool
	}{
		{"settled", view(0, 2, "b", "b"), 1, 1, true, 0, 2, nil, nil, true},
		{"rollout from start 0 widens the window upward", view(0, 2, "a", "a"), 1, 1, true, 0, 3, nil, nil, false},
		{"new gateway not ready yet", view(0, 2, "a", "a", "b!"), 1, 1, true, 0, 3, nil, nil, false},
		{"new gateway ready: drain the lowest old", view(0, 2, "a", "a", "b"), 1, 1, true, 0, 3, []string{"g-0"}, nil, false},
		{"batch of two", view(0, 3, "a", "a", "a", "b"), 1, 2, true, 0, 4, []string{"g-0", "g-1"}, nil, false},
		{"draining: wait", view(0, 2, "a~", "a", "b"), 1, 1, true, 0, 3, nil, nil, false},
		{"drained at the trailing edge: the window moves past it", view(0, 2, "a=", "a", "b"), 1, 1, true, 1, 3, nil, nil, false},
		{"moved window: wait for its new gateway", view(1, 2, "a", "b", "b!"), 1, 1, true, 1, 3, nil, nil, false},
		{"moved window ready: next batch", view(1, 2, "a", "b", "b"), 1, 1, true, 1, 3, []string{"g-1"}, nil, false},
		{"last old drained: the window is N wide again", view(1, 2, "a=", "b", "b"), 1, 1, true, 2, 2, nil, nil, false},
		{"settled at start N", view(2, 2, "b", "b"), 1, 1, true, 2, 2, nil, nil, true},
		{"rollout from start > 0 widens the window downward", view(2, 2, "a", "a"), 1, 1, true, 1, 3, nil, nil, false},
		{"downward: drain the highest old", view(1, 2, "b", "a", "a"), 1, 1, true, 1, 3, []string{"g-3"}, nil, false},
		{"downward: drained at the top", view(1, 2, "b", "a", "a="), 1, 1, true, 0, 3, nil, nil, false},
		{"downward: last old drained, back at start 0", view(0, 2, "b", "b", "a="), 1, 1, true, 0, 2, nil, nil, false},
		{"no surge: drain right away", view(0, 2, "a", "a"), 0, 1, true, 0, 2, []string{"g-0"}, nil, false},
		{"old drained in the middle is deleted and comes back new", view(0, 2, "b", "a=", "b"), 1, 1, true, 0, 3, nil, []string{"g-1"}, false},
		{"unready old gateway drains before ready ones", view(0, 3, "a", "a!", "a", "b"), 1, 1, true, 0, 4, []string{"g-1"}, nil, false},
		{"scale down drains first", view(0, 1, "b", "b", "b"), 1, 1, true, 0, 3, []string{"g-1", "g-2"}, nil, false},
		{"scale down: keep the undrained", view(0, 1, "b", "b=", "b~"), 1, 1, true, 0, 3, nil, nil, false},
		{"scale down: all drained", view(0, 1, "b", "b=", "b="), 1, 1, true, 0, 1, nil, nil, false},
		{"not its turn: no surge, no drain", view(0, 2, "a", "a"), 1, 1, false, 0, 2, nil, nil, false},
		{"not its turn: keep an undrained new gateway", view(0, 2, "a", "b", "b"), 1, 1, false, 0, 3, nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start, replicas, st := planGateway(tt.view, tt.surge, tt.batch, tt.active)
			if start != tt.wantStart || replicas != tt.wantReplicas || !slices.Equal(st.drain, tt.wantDrain) || !slices.Equal(st.delete, tt.wantDelete) || st.done != tt.wantDone {
				t.Errorf("window %d+%d drain %v delete %v done %v (waiting %q); want window %d+%d drain %v delete %v done %v",
					start, replicas, st.drain, st.delete, st.done, st.waiting, tt.wantStart, tt.wantReplicas, tt.wantDrain, tt.wantDelete, tt.wantDone)
			}
		})
	}
}

// TestPlanGatewaySimulated runs whole rollouts, up from start 0 and back down, against a model of
// the StatefulSet controller (pods outside [start, start+replicas) go, missing ones come at the
// desired revision and become Ready; drains finish on the next pass; deleted pods come back
// new). It checks what the sliding window promises: the rollout finishes, no gateway goes
// undrained, no gateway at the new revision is drained (so every drained client moved once)
// when a batch is at least the surge, and ordinals stay below 2N + maxSurge (the deliver
// partitions, specs.DeliverPartitions). Pods the window left linger for one more pass, draining
// but not seen drained, as a stale pod cache shows them (test/operator TestRollout saw the
// window pulled back by one).
func TestPlanGatewaySimulated(t *testing.T) {
	type pod struct {
		rev               string
		draining, drained bool
	}
	for _, c := range []struct{ n, surge, batch int32 }{{3, 1, 1}, {1, 1, 1}, {5, 2, 2}, {4, 1, 2}, {3, 0, 1}, {6, 3, 3}} {
		t.Run(fmt.Sprintf("n=%d surge=%d batch=%d", c.n, c.surge, c.batch), func(t *testing.T) {
			start, replicas := int32(0), c.n
			live := map[int32]*pod{}
			ghosts := map[int32]*pod{} // removed last pass, still in the cache
			for o := range c.n {
				live[o] = &pod{rev: "r0"}
			}
			for round, rev := range []string{"r1", "r2", "r3"} { // up, down, up
				for pass := 0; ; pass++ {
					if pass > 200 {
						t.Fatalf("rollout %d to %s did not finish: window %d+%d", round, rev, start, replicas)
					}
					v := RoleView{Start: start, Replicas: c.n, Window: replicas, Revision: rev}
					for o, p := range live {
						v.Pods = append(v.Pods, PodView{Name: fmt.Sprint(o), Ordinal: o, Revision: p.rev, Ready: true,
							Accepting: !p.draining, Draining: p.draining, Drained: p.drained})
					}
					for o, p := range ghosts {
						v.Pods = append(v.Pods, PodView{Name: fmt.Sprint(o), Ordinal: o, Revision: p.rev, Ready: true, Draining: true})
					}
					listed := len(ghosts)
					ghosts = map[int32]*pod{}
					s, r, st := planGateway(v, c.surge, c.batch, true)
					if st.done && listed > 0 {
						t.Fatalf("done while removed gateways are still listed")
					}
					if st.done {
						if s != start || r != c.n || len(live) != int(c.n) {
							t.Fatalf("done with window %d+%d and %d pods", s, r, len(live))
						}
						break
					}
					for _, name := range st.drain {
						var o int32
						fmt.Sscan(name, &o)
						if live[o].rev == rev && c.batch >= c.surge {
							t.Fatalf("rollout to %s drains %d, a gateway at the new revision", rev, o)
						}
						live[o].draining = true
					}
					for _, name := range st.delete {
						var o int32
						fmt.Sscan(name, &o)
						if !live[o].drained {
							t.Fatalf("deletes %d undrained", o)
						}
						live[o] = &pod{rev: rev}
					}
					start, replicas = s, r
					for o, p := range live { // the StatefulSet controller
						if o < start || o >= start+replicas {
							if !p.drained {
								t.Fatalf("window %d+%d drops %d undrained", start, replicas, o)
							}
							delete(live, o)
							ghosts[o] = p
						}
					}
					for o := start; o < start+replicas; o++ {
						if live[o] == nil {
							live[o] = &pod{rev: rev}
						}
						if o >= 2*c.n+c.surge {
							t.Fatalf("ordinal %d, want below 2N + surge = %d", o, 2*c.n+c.surge)
						}
					}
					for _, p := range live { // drains finish by the next pass
						if p.draining {
							p.drained = true
						}
					}
				}
				for o, p := range live {
					if p.rev != rev {
						t.Fatalf("after the rollout to %s, gateway %d is at %s", rev, o, p.rev)
					}
				}
			}
		})
	}
}

// TestPlanRolloutOrder: only the first region and role that is not done acts.
func TestPlanRolloutOrder(t *testing.T) {
	region := func(name string, migrated bool, chat, presence, gateway []PodView) RegionInput {
		return RegionInput{Name: name, Migrated: migrated, Roles: []RoleView{
			{Role: chatv1.RoleChat, Replicas: int32(len(chat)), Revision: "b", Pods: chat},
			{Role: chatv1.RolePresence, Replicas: int32(len(presence)), Revision: "b", Pods: presence},
			{Role: chatv1.RoleGateway, Replicas: int32(len(gateway)), Revision: "b", Pods: gateway},
		}}
	}
	tests := []struct {
		name        string
		in          RolloutInput
		wantDelete  []string
		wantDrain   []string
		wantBlocked string
		wantRepl    map[string]int32
	}{
		{
			name: "chat of the first region first",
			in: RolloutInput{MaxUnavailable: 1, MaxSurge: 1, Regions: []RegionInput{
				region("eu", true, pods("eu-chat", 0, "a", "a"), pods("eu-presence", 0, "a"), pods("eu-gateway", 0, "a")),
				region("us", true, pods("us-chat", 0, "a"), pods("us-presence", 0, "a"), pods("us-gateway", 0, "a")),
			}},
			wantDelete: []string{"eu-chat-1"}, wantBlocked: "eu", wantRepl: map[string]int32{"eu": 1, "us": 1},
		},
		{
			name: "presence after chat",
			in: RolloutInput{MaxUnavailable: 1, MaxSurge: 1, Regions: []RegionInput{
				region("eu", true, pods("eu-chat", 0, "b", "b"), pods("eu-presence", 0, "a"), pods("eu-gateway", 0, "a")),
			}},
			wantDelete: []string{"eu-presence-0"}, wantBlocked: "eu", wantRepl: map[string]int32{"eu": 1},
		},
		{
			name: "gateways surge after presence",
			in: RolloutInput{MaxUnavailable: 1, MaxSurge: 1, Regions: []RegionInput{
				region("eu", true, pods("eu-chat", 0, "b", "b"), pods("eu-presence", 0, "b"), pods("eu-gateway", 0, "a")),
				region("us", true, pods("us-chat", 0, "a"), pods("us-presence", 0, "a"), pods("us-gateway", 0, "a")),
			}},
			wantBlocked: "eu", wantRepl: map[string]int32{"eu": 2, "us": 1},
		},
		{
			name: "next region once the first is done",
			in: RolloutInput{MaxUnavailable: 1, MaxSurge: 1, Regions: []RegionInput{
				region("eu", true, pods("eu-chat", 0, "b", "b"), pods("eu-presence", 0, "b"), pods("eu-gateway", 0, "b")),
				region("us", true, pods("us-chat", 0, "a"), pods("us-presence", 0, "a"), pods("us-gateway", 0, "a")),
			}},
			wantDelete: []string{"us-chat-0"}, wantBlocked: "us", wantRepl: map[string]int32{"eu": 1, "us": 1},
		},
		{
			name: "an unready region stops the rollout",
			in: RolloutInput{MaxUnavailable: 1, MaxSurge: 1, Regions: []RegionInput{
				region("eu", true, pods("eu-chat", 0, "b!", "a"), pods("eu-presence", 0, "a"), pods("eu-gateway", 0, "a")),
				region("us", true, pods("us-chat", 0, "a"), pods("us-presence", 0, "a"), pods("us-gateway", 0, "a")),
			}},
			wantBlocked: "eu", wantRepl: map[string]int32{"eu": 1, "us": 1},
		},
		{
			name: "a region not migrated waits",
			in: RolloutInput{MaxUnavailable: 1, MaxSurge: 1, Regions: []RegionInput{
				region("eu", false, pods("eu-chat", 0, "a"), pods("eu-presence", 0, "a"), pods("eu-gateway", 0, "a")),
			}},
			wantBlocked: "eu", wantRepl: map[string]int32{"eu": 1},
		},
		{
			name: "paused holds everything",
			in: RolloutInput{Paused: true, MaxUnavailable: 1, MaxSurge: 1, Regions: []RegionInput{
				region("eu", true, pods("eu-chat", 0, "a"), pods("eu-presence", 0, "a"), pods("eu-gateway", 0, "a=")),
			}},
			wantBlocked: "eu", wantRepl: map[string]int32{"eu": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := PlanRollout(tt.in)
			if !slices.Equal(plan.Delete, tt.wantDelete) || !slices.Equal(plan.Drain, tt.wantDrain) || plan.Blocked != tt.wantBlocked {
				t.Errorf("delete %v drain %v blocked %q; want delete %v drain %v blocked %q (regions %+v)",
					plan.Delete, plan.Drain, plan.Blocked, tt.wantDelete, tt.wantDrain, tt.wantBlocked, plan.Regions)
			}
			for region, want := range tt.wantRepl {
				if got := plan.GatewayReplicas[region]; got != want {
					t.Errorf("gateway replicas of %s = %d, want %d", region, got, want)
				}
			}
		})
	}
}

// TestAcceptingChanges: which gateways stop taking new connections during a rollout (issue 12:
// a drained client lands on a gateway at the new revision, which stays), and that this never
// stalls it.
func TestAcceptingChanges(t *testing.T) {
	tests := []struct {
		name  string
		view  RoleView
		want  map[string]bool
		drain []string
	}{
		{"settled: nothing", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "b", "b")}, map[string]bool{}, nil},
		{"new gateway not ready: old keep accepting", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a", "a", "b!")}, map[string]bool{}, nil},
		{"new gateway ready: every old gateway stops accepting", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a", "a", "b")},
			map[string]bool{"g-0": false, "g-1": false}, []string{"g-0"}},
		{"a quiesced old gateway does not stall the rollout", RoleView{Start: 1, Replicas: 2, Revision: "b", Pods: pods("g", 1, "ax", "b", "b")},
			map[string]bool{}, []string{"g-1"}},
		{"a desired gateway left out is put back", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "bx", "b")}, map[string]bool{"g-0": true}, nil},
		{"draining gateways are left to their drain", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a~", "a", "b")},
			map[string]bool{"g-1": false}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, st := planGateway(tt.view, 1, 1, true)
			got := st.accepting
			if got == nil {
				got = map[string]bool{}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || !slices.Equal(st.drain, tt.drain) {
				t.Errorf("accepting %v drain %v (waiting %q); want accepting %v drain %v", got, st.drain, st.waiting, tt.want, tt.drain)
			}
		})
	}
}

// TestDrainSpread: the first batch of a rollout, taken by the surge alone, spreads its
// reconnects over most of drainTimeout; later batches, taken by more new gateways, over
// proportionally less, so each gateway sees about the same rate.
func TestDrainSpread(t *testing.T) {
	const T = 20 * time.Second
	for _, c := range []struct {
		surge  int32
		taking int
		want   time.Duration
	}{
		{1, 1, 18 * time.Second},
		{1, 2, 9 * time.Second},
		{1, 3, 6 * time.Second},
		{1, 20, 2 * time.Second}, // never below T/10
		{2, 2, 18 * time.Second},
		{1, 0, 10 * time.Second}, // nobody new takes them: the default
		{0, 3, 10 * time.Second},
	} {
		if got := drainSpread(T, c.surge, c.taking); got != c.want {
			t.Errorf("drainSpread(%s, surge %d, %d taking) = %s, want %s", T, c.surge, c.taking, got, c.want)
		}
	}
}
