package controller

import (
	"fmt"
	"slices"
	"sort"

	chatv1 "github.com/parleychat/parley/api/v1alpha1"
)

// The rollout planner is a pure function of what the reconciler observed: pods with their
// revision label, readiness, accepting label and drain state. It returns which pods to delete,
// which to start draining, and how many replicas each gateway StatefulSet should have. It keeps
// no state of its own — everything it needs is on the pods — so an operator restart resumes a
// rollout exactly where it was.

// PodView is what the planner needs to know about one pod.
type PodView struct {
	Name      string
	Ordinal   int32
	Revision  string // parley.io/revision label
	Ready     bool   // PodReady condition True
	Accepting bool   // parley.io/accepting=true (gateways)
	// Draining is true once the operator started draining the pod (parley.io/drain-started).
	Draining bool
	// Drained is true when a draining pod reported zero connections or drainTimeout passed.
	Drained bool
}

// RoleView is one role of one region.
type RoleView struct {
	Role     chatv1.Role
	Start    int32  // first ordinal (chat: region id × 128)
	Replicas int32  // desired, from the spec
	Revision string // desired pod-template hash; "" when no StatefulSet exists yet
	Pods     []PodView
}

// RegionInput is one region as the planner sees it.
type RegionInput struct {
	Name string
	// Migrated is true once the region's `parley migrate` Job for the desired version succeeded;
	// nothing of a new version may be rolled before.
	Migrated bool
	// Roles in rollout order: chat, presence, gateway.
	Roles []RoleView
}

// RolloutInput is everything the planner decides on.
type RolloutInput struct {
	Regions        []RegionInput // in rollout order
	MaxUnavailable int32         // pods replaced at once per role (a gateway drain batch)
	MaxSurge       int32         // extra gateways started before the first batch drains
	Paused         bool
}

// Plan is what the reconciler does in this pass.
type Plan struct {
	// GatewayReplicas is the replica count of each region's gateway StatefulSet: the spec's,
	// plus maxSurge while that region's gateways roll, and never below a pod that still has to
	// be drained (so the StatefulSet controller does not remove it undrained).
	GatewayReplicas map[string]int32
	// Delete lists pods to delete now: old revisions whose turn came, drained gateways.
	Delete []string
	// Drain lists gateway pods to take out of the Service and drain.
	Drain []string
	// SetAccepting sets the accepting label of gateway pods without draining them: old
	// gateways stop taking new connections once new ones can (their clients stay until their
	// own drain), surge gateways once a gateway that stays can, and a gateway at the desired
	// revision is put back (acceptingChanges).
	SetAccepting map[string]bool
	// Regions reports each region.
	Regions map[string]RegionPlan
	// Blocked names the first region that is not done (the rollout waits on it), or "".
	Blocked string
}

// RegionPlan is the planner's view of one region.
type RegionPlan struct {
	// Done: every role has its desired replicas, all at the desired revision and Ready, and no
	// extra gateway is left.
	Done bool
	// Unready counts pods that should be Ready and are not (missing ones included).
	Unready int32
	// Old counts pods at another revision than the desired one.
	Old int32
	// Draining is true while gateways of the region are draining.
	Draining bool
	// Waiting says, for a person, what the region waits for; "" when done.
	Waiting string
}

// PlanRollout walks the regions in rollout order and, within a region, the roles chat →
// presence → gateway. Only the first region and role that is not done may act; everything
// after it waits, so a region that does not become Ready stops the rollout there.
func PlanRollout(in RolloutInput) Plan {
	plan := Plan{GatewayReplicas: map[string]int32{}, Regions: map[string]RegionPlan{}, SetAccepting: map[string]bool{}}
	for _, region := range in.Regions {
		active := plan.Blocked == "" && region.Migrated && !in.Paused
		rp := RegionPlan{Done: true}
		for _, v := range region.Roles {
			var st roleStep
			if v.Role == chatv1.RoleGateway {
				var replicas int32
				replicas, st = planGateway(v, in.MaxSurge, in.MaxUnavailable, active)
				plan.GatewayReplicas[region.Name] = replicas
			} else {
				st = planSimple(v, in.MaxUnavailable, active)
			}
			plan.Delete = append(plan.Delete, st.delete...)
			plan.Drain = append(plan.Drain, st.drain...)
			for name, v := range st.accepting {
				plan.SetAccepting[name] = v
			}
			rp.Unready += st.unready
			rp.Old += st.old
			rp.Draining = rp.Draining || st.draining
			if !st.done {
				if rp.Done {
					rp.Waiting = fmt.Sprintf("%s: %s", v.Role, st.waiting)
				}
				rp.Done = false
				active = false // later roles of this region wait
			}
		}
		if !region.Migrated {
			rp.Done = false
			rp.Waiting = "migration: waiting for the parley migrate Job"
		}
		if !rp.Done && plan.Blocked == "" {
			plan.Blocked = region.Name
		}
		plan.Regions[region.Name] = rp
	}
	return plan
}

// roleStep is the planner's decision for one role of one region.
type roleStep struct {
	delete, drain []string
	accepting     map[string]bool // gateways: label changes without a drain
	done          bool
	unready, old  int32
	draining      bool
	waiting       string
}

// planSimple rolls chat and presence pods: with every pod Ready, delete up to maxUnavailable
// pods of an old revision (highest ordinal first); their StatefulSet recreates them from the new
// template. Old pods that are not Ready serve nothing, so they go at once.
func planSimple(v RoleView, batch int32, active bool) roleStep {
	var st roleStep
	present := map[int32]bool{}
	var oldReady, oldUnready []PodView
	for _, p := range v.Pods {
		if p.Ordinal < v.Start || p.Ordinal >= v.Start+v.Replicas {
			continue // beyond the StatefulSet's range: its controller removes it
		}
		present[p.Ordinal] = true
		if !p.Ready {
			st.unready++
		}
		if p.Revision != v.Revision {
			st.old++
			if p.Ready {
				oldReady = append(oldReady, p)
			} else {
				oldUnready = append(oldUnready, p)
			}
		}
	}
	st.unready += v.Replicas - int32(len(present))
	st.done = v.Revision != "" && st.old == 0 && st.unready == 0
	switch {
	case st.done:
		return st
	case v.Revision == "":
		st.waiting = "waiting for its StatefulSet"
		return st
	case st.old == 0:
		st.waiting = fmt.Sprintf("%d of %d pods not Ready", st.unready, v.Replicas)
		return st
	}
	if !active {
		st.waiting = fmt.Sprintf("%d pods at an old revision wait their turn", st.old)
		return st
	}
	for _, p := range oldUnready {
		st.delete = append(st.delete, p.Name)
	}
	budget := batch - st.unready
	byOrdinalDesc(oldReady)
	for i := 0; i < len(oldReady) && int32(i) < budget; i++ {
		st.delete = append(st.delete, oldReady[i].Name)
	}
	if len(st.delete) == 0 {
		st.waiting = fmt.Sprintf("%d of %d pods not Ready; %d at an old revision wait", st.unready, v.Replicas, st.old)
	} else {
		st.waiting = fmt.Sprintf("replacing %d pods", len(st.delete))
	}
	return st
}

// planGateway rolls gateways surge-then-drain, and drains before any gateway goes away:
//
//  1. start maxSurge extra gateways (ordinals N…N+surge-1) at the new revision and wait until
//     they are Ready and accepting;
//  2. take `accepting` off a batch of maxUnavailable old gateways and drain them (the executor
//     asks each pod's admin endpoint, then waits for zero connections or drainTimeout);
//  3. delete drained gateways; their StatefulSet recreates them at the new revision; wait until
//     the replacements are Ready;
//  4. repeat from 2; when no old gateway is left, drain the surge pods and scale back to N.
//
// Scale-down is step 4 alone: gateways beyond the spec's replicas are drained, then removed.
func planGateway(v RoleView, surge, batch int32, active bool) (int32, roleStep) {
	var st roleStep
	n := v.Replicas
	present := map[int32]PodView{}
	var old, staleExcess, freshExcess, drained []PodView
	var drainingUndone int
	unreadyNew := int32(0)
	keep := int32(-1) // highest ordinal that must not be removed undrained
	for _, p := range v.Pods {
		present[p.Ordinal] = p
		if p.Draining {
			st.draining = true
			if p.Drained {
				drained = append(drained, p)
			} else {
				drainingUndone++
			}
		}
		if p.Ordinal >= n {
			if !p.Drained {
				keep = max(keep, p.Ordinal)
			}
			if !p.Draining {
				if p.Revision != v.Revision || p.Ordinal >= n+surge {
					staleExcess = append(staleExcess, p)
				} else {
					freshExcess = append(freshExcess, p)
				}
			}
			continue
		}
		if !p.Ready {
			st.unready++
		}
		if p.Revision != v.Revision {
			st.old++
			if !p.Draining {
				old = append(old, p)
			}
		} else if !p.Ready {
			unreadyNew++
		}
	}
	missing := int32(0)
	for o := int32(0); o < n; o++ {
		if _, ok := present[o]; !ok {
			missing++
		}
	}
	st.unready += missing
	unreadyNew += missing
	rolling := st.old > 0

	replicas := n
	if rolling && active {
		replicas = n + surge
	}
	replicas = max(replicas, keep+1)

	if active && v.Revision != "" {
		st.accepting = acceptingChanges(v, surge, rolling)
	}
	excess := len(staleExcess) + len(freshExcess)
	st.done = v.Revision != "" && !rolling && st.unready == 0 && excess == 0 && !st.draining
	if st.done {
		return replicas, st
	}
	if v.Revision == "" {
		st.waiting = "waiting for its StatefulSet"
		return replicas, st
	}
	if !active {
		switch {
		case rolling:
			st.waiting = fmt.Sprintf("%d gateways at an old revision wait their turn", st.old)
		case st.unready > 0:
			st.waiting = fmt.Sprintf("%d of %d gateways not Ready", st.unready, n)
		default:
			st.waiting = fmt.Sprintf("%d extra gateways wait to be drained", excess)
		}
		return replicas, st
	}

	for _, p := range drained {
		st.delete = append(st.delete, p.Name)
	}
	switch {
	case drainingUndone > 0:
		st.waiting = fmt.Sprintf("draining %d gateways", drainingUndone)
		return replicas, st
	case len(drained) > 0:
		st.waiting = fmt.Sprintf("deleting %d drained gateways", len(drained))
		return replicas, st
	}

	if rolling {
		if len(staleExcess) > 0 { // left over from an interrupted rollout or a scale-down
			st.drain = names(staleExcess)
			st.waiting = fmt.Sprintf("draining %d extra gateways", len(staleExcess))
			return replicas, st
		}
		for o := n; o < n+surge; o++ {
			// Not Accepting: once a gateway that stays serves, the surge ones stop taking
			// new connections (acceptingChanges) and still count as up.
			p, ok := present[o]
			if !ok || p.Revision != v.Revision || !p.Ready {
				st.waiting = fmt.Sprintf("waiting for %d surge gateways at the new revision to be Ready", surge)
				return replicas, st
			}
		}
		if unreadyNew > 0 {
			st.waiting = fmt.Sprintf("waiting for %d new gateways to be Ready", unreadyNew)
			return replicas, st
		}
		// Unready old gateways first (they serve nobody), then from the highest ordinal.
		sort.SliceStable(old, func(i, j int) bool {
			if old[i].Ready != old[j].Ready {
				return !old[i].Ready
			}
			return old[i].Ordinal > old[j].Ordinal
		})
		st.drain = names(old[:min(int(batch), len(old))])
		st.waiting = fmt.Sprintf("draining %d of %d old gateways", len(st.drain), len(old))
		return replicas, st
	}

	if st.unready > 0 {
		st.waiting = fmt.Sprintf("%d of %d gateways not Ready", st.unready, n)
		return replicas, st
	}
	st.drain = names(append(staleExcess, freshExcess...))
	st.waiting = fmt.Sprintf("draining %d extra gateways", len(st.drain))
	return replicas, st
}

// acceptingChanges steers new connections during a gateway rollout so that a client
// reconnects as few times as the StatefulSet's ordinals allow (issue 12: the rollout test
// under load saw 14 % of clients reconnect three times or more when old gateways kept
// accepting until their own drain, and surge gateways until theirs):
//
//   - once every surge gateway at the new revision is Ready and accepting, old gateways stop
//     accepting (their connected clients stay until their own drain), so a drained client
//     lands on a gateway at the new revision;
//   - once a gateway that stays (ordinal below the spec's replicas) is Ready at the new
//     revision and accepting, the surge gateways stop accepting too: they are drained at the
//     end, and a client placed there would move again;
//   - a gateway at the desired revision that stays, is Ready and not draining, accepts (after
//     a rollout is reverted, or an operator restart between two steps).
//
// Draining gateways are left alone: their drain owns the label.
func acceptingChanges(v RoleView, surge int32, rolling bool) map[string]bool {
	n := v.Replicas
	surgeReady := rolling
	for o := n; o < n+surge && surgeReady; o++ {
		found := false
		for _, p := range v.Pods {
			if p.Ordinal == o && p.Revision == v.Revision && p.Ready && !p.Draining {
				found = true
			}
		}
		surgeReady = found
	}
	stayServing := false
	for _, p := range v.Pods {
		if p.Ordinal < n && p.Revision == v.Revision && p.Ready && p.Accepting && !p.Draining {
			stayServing = true
		}
	}
	out := map[string]bool{}
	for _, p := range v.Pods {
		if p.Draining {
			continue
		}
		switch {
		case p.Ordinal < n && p.Revision == v.Revision && p.Ready && !p.Accepting:
			out[p.Name] = true
		case rolling && surgeReady && p.Ordinal < n && p.Revision != v.Revision && p.Accepting:
			out[p.Name] = false
		case rolling && stayServing && p.Ordinal >= n && p.Accepting:
			out[p.Name] = false
		}
	}
	return out
}

func byOrdinalDesc(pods []PodView) {
	slices.SortFunc(pods, func(a, b PodView) int { return int(b.Ordinal - a.Ordinal) })
}

func names(pods []PodView) []string {
	out := make([]string, len(pods))
	for i, p := range pods {
		out[i] = p.Name
	}
	return out
}
