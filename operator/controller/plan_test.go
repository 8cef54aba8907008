package controller

import (
	"fmt"
	"slices"
	"testing"

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
	tests := []struct {
		name         string
		view         RoleView
		surge, batch int32
		active       bool
		wantReplicas int32
		wantDrain    []string
		wantDelete   []string
		wantDone     bool
	}{
		{"settled", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "b", "b")}, 1, 1, true, 2, nil, nil, true},
		{"rollout starts with a surge", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a", "a")}, 1, 1, true, 3, nil, nil, false},
		{"surge not ready yet", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a", "a", "b!")}, 1, 1, true, 3, nil, nil, false},
		{"surge ready: drain the highest old", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a", "a", "b")}, 1, 1, true, 3, []string{"g-1"}, nil, false},
		{"batch of two", RoleView{Replicas: 3, Revision: "b", Pods: pods("g", 0, "a", "a", "a", "b")}, 1, 2, true, 4, []string{"g-2", "g-1"}, nil, false},
		{"draining: wait", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a", "a~", "b")}, 1, 1, true, 3, nil, nil, false},
		{"drained: delete", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a", "a=", "b")}, 1, 1, true, 3, nil, []string{"g-1"}, false},
		{"replacement not ready: wait", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a", "b!", "b")}, 1, 1, true, 3, nil, nil, false},
		{"replacement ready: next batch", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a", "b", "b")}, 1, 1, true, 3, []string{"g-0"}, nil, false},
		{"all new: drain the surge", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "b", "b", "b")}, 1, 1, true, 3, []string{"g-2"}, nil, false},
		{"surge drained: scale back and delete", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "b", "b", "b=")}, 1, 1, true, 2, nil, []string{"g-2"}, false},
		{"no surge: drain right away", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a", "a")}, 0, 1, true, 2, []string{"g-1"}, nil, false},
		{"scale down drains first", RoleView{Replicas: 1, Revision: "b", Pods: pods("g", 0, "b", "b", "b")}, 1, 1, true, 3, []string{"g-2", "g-1"}, nil, false},
		{"scale down: keep the undrained", RoleView{Replicas: 1, Revision: "b", Pods: pods("g", 0, "b", "b=", "b~")}, 1, 1, true, 3, nil, []string{"g-1"}, false},
		{"scale down: all drained", RoleView{Replicas: 1, Revision: "b", Pods: pods("g", 0, "b", "b=", "b=")}, 1, 1, true, 1, nil, []string{"g-1", "g-2"}, false},
		{"not its turn: no surge, no drain", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a", "a")}, 1, 1, false, 2, nil, nil, false},
		{"not its turn: keep an undrained surge", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a", "b", "b")}, 1, 1, false, 3, nil, nil, false},
		{"stale extra at an old revision is drained first", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a", "a", "a")}, 1, 1, true, 3, []string{"g-2"}, nil, false},
		{"unready old gateway drains before ready ones", RoleView{Replicas: 3, Revision: "b", Pods: pods("g", 0, "a!", "a", "a", "b")}, 1, 1, true, 4, []string{"g-0"}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			replicas, st := planGateway(tt.view, tt.surge, tt.batch, tt.active)
			if replicas != tt.wantReplicas || !slices.Equal(st.drain, tt.wantDrain) || !slices.Equal(st.delete, tt.wantDelete) || st.done != tt.wantDone {
				t.Errorf("replicas %d drain %v delete %v done %v (waiting %q); want replicas %d drain %v delete %v done %v",
					replicas, st.drain, st.delete, st.done, st.waiting, tt.wantReplicas, tt.wantDrain, tt.wantDelete, tt.wantDone)
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
// clients reconnect as few times as the ordinals allow), and that this never stalls it.
func TestAcceptingChanges(t *testing.T) {
	tests := []struct {
		name  string
		view  RoleView
		want  map[string]bool
		drain []string
	}{
		{"settled: nothing", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "b", "b")}, map[string]bool{}, nil},
		{"surge not ready: old keep accepting", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a", "a", "b!")}, map[string]bool{}, nil},
		{"surge ready: every old gateway stops accepting", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a", "a", "b")},
			map[string]bool{"g-0": false, "g-1": false}, []string{"g-1"}},
		{"a staying gateway is new: the surge stops accepting", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "ax", "b", "b")},
			map[string]bool{"g-2": false}, []string{"g-0"}},
		{"a quiesced surge does not stall the rollout", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "ax", "b", "bx")},
			map[string]bool{}, []string{"g-0"}},
		{"a desired gateway left out is put back", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "bx", "b")}, map[string]bool{"g-0": true}, nil},
		{"draining gateways are left to their drain", RoleView{Replicas: 2, Revision: "b", Pods: pods("g", 0, "a~", "b", "b")},
			map[string]bool{"g-2": false}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, st := planGateway(tt.view, 1, 1, true)
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
