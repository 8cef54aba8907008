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
	Start    int32 // first ordinal (chat: region id × 128; gateways: the StatefulSet's, as observed)
	Replicas int32 // desired, from the spec
	// Window is the gateway StatefulSet's replicas as observed (read around the cache): its
	// pods are at [Start, Start+Window). Pods outside it are on their way out; 0 = unknown.
	Window   int32
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
	// GatewayStart is the first ordinal of each region's gateway StatefulSet
	// (spec.ordinals.start): a rollout slides the window of ordinals (planGateway).
	GatewayStart map[string]int32
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
	plan := Plan{GatewayStart: map[string]int32{}, GatewayReplicas: map[string]int32{}, Regions: map[string]RegionPlan{}, SetAccepting: map[string]bool{}}
	for _, region := range in.Regions {
		active := plan.Blocked == "" && region.Migrated && !in.Paused
		rp := RegionPlan{Done: true}
		for _, v := range region.Roles {
			var st roleStep
			if v.Role == chatv1.RoleGateway {
				var start, replicas int32
				start, replicas, st = planGateway(v, in.MaxSurge, in.MaxUnavailable, active)
				plan.GatewayStart[region.Name] = start
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

// planGateway rolls gateways surge-then-drain by sliding the StatefulSet's ordinal window
// (`spec.ordinals.start`, `spec.replicas`), and drains before any gateway goes away. Gateway
// pods live at ordinals [start, start+replicas); a rollout moves that window up by N (from
// start 0) or back down to 0 (from start > 0), one batch at a time:
//
//  1. widen the window by maxSurge on the side it moves to: the StatefulSet controller starts
//     those gateways at the new revision; wait until every gateway at the new revision is Ready;
//  2. take `accepting` off the old gateways (acceptingChanges) and drain a batch of
//     maxUnavailable of them from the side the window leaves (the executor asks each pod's admin
//     endpoint, then waits for zero connections or drainTimeout);
//  3. move the window's trailing edge past the drained gateways: the StatefulSet controller
//     deletes them and, while old gateways remain, starts the next new ones on the leading edge;
//  4. repeat from 2; once the last old gateway is drained the window is N wide again.
//
// A drained client therefore always reconnects to a gateway at the new revision that stays,
// so it moves once. The earlier planner surged at ordinal N and drained that surge gateway at
// the end, so the first drained cohort moved twice (issue 12, test/rollout: 1x 65.9 %).
// Sliding keeps ordinals below 2N + maxSurge, so the deliver topic has a partition for each
// (specs.DeliverPartitions); the direction comes from the observed pods and start, so an
// operator restart resumes where the rollout was.
//
// An old gateway drained in the middle of the window (an old pod recreated out of order) is
// deleted instead and comes back at the new revision. Scale-down drains the gateways above
// start+N, then the window shrinks. It returns the window's start and replicas.
func planGateway(v RoleView, surge, batch int32, active bool) (int32, int32, roleStep) {
	o := observeGateways(v)
	st := roleStep{old: int32(len(o.old)), draining: o.draining}
	n, s := v.Replicas, v.Start
	rolling := len(o.old) > 0
	if v.Revision == "" {
		st.waiting = "waiting for its StatefulSet"
		return s, max(n, o.highAll-s+1), st
	}
	up := o.up(s)
	start, top := o.window(v, surge, up, rolling && active)
	replicas := top - start + 1
	w := o.inWindow(v, start, top, rolling)
	st.unready = w.unready
	if active {
		st.accepting = acceptingChanges(v, rolling)
	}
	st.done = !rolling && st.unready == 0 && !st.draining && replicas == n && start == s && w.removing == 0
	if st.done {
		return start, replicas, st
	}
	if !active {
		st.waiting = waitingTurn(rolling, st, n, replicas)
		return start, replicas, st
	}
	for _, p := range w.drainedInside {
		if !rolling && p.Ordinal >= start+n {
			continue // an extra gateway: the window shrinks past it once it is the last
		}
		st.delete = append(st.delete, p.Name) // recreated at the new revision
	}
	switch {
	case o.drainingUndone > 0:
		st.waiting = fmt.Sprintf("draining %d gateways", o.drainingUndone)
	case w.removing > 0 || len(st.delete) > 0:
		st.waiting = fmt.Sprintf("removing %d drained gateways", w.removing+len(st.delete))
	case rolling && (start != s || w.unreadyNew > 0):
		st.waiting = "waiting for the gateways at the new revision to be Ready"
	case rolling:
		st.drain = names(drainOrder(o.old, up)[:min(int(batch), len(o.old))])
		st.waiting = fmt.Sprintf("draining %d of %d old gateways", len(st.drain), len(o.old))
	case st.unready > 0:
		st.waiting = fmt.Sprintf("%d of %d gateways not Ready", st.unready, n)
	case len(w.excess) > 0:
		st.drain = names(w.excess)
		st.waiting = fmt.Sprintf("draining %d extra gateways", len(st.drain))
	default:
		// Every extra gateway is drained: shrink the window to N.
		st.waiting = "scaling the gateways down"
		return s, n, st
	}
	return start, replicas, st
}

// gatewayObs is what planGateway reads off the gateway pods.
type gatewayObs struct {
	pods           []PodView // inside the observed window
	present        map[int32]PodView
	old            []PodView // at another revision than the desired one
	leaving        int       // outside the observed window: the StatefulSet controller removes them
	draining       bool
	drainingUndone int
	revision       string
	// Ordinal bounds (-1: none) of the old and new gateways, and the highest of all.
	lowOld, highOld, lowNew, highNew, highAll int32
}

func observeGateways(v RoleView) gatewayObs {
	s := v.Start
	o := gatewayObs{present: map[int32]PodView{}, revision: v.Revision, lowOld: -1, highOld: -1, lowNew: -1, highNew: -1, highAll: s - 1}
	for _, p := range v.Pods {
		if v.Window > 0 && (p.Ordinal < s || p.Ordinal >= s+v.Window) {
			// A cached pod the window already left must not pull the window back.
			o.leaving++
			continue
		}
		o.pods = append(o.pods, p)
		o.present[p.Ordinal] = p
		o.highAll = max(o.highAll, p.Ordinal)
		if p.Draining {
			o.draining = true
			if !p.Drained {
				o.drainingUndone++
			}
		}
		if p.Revision != v.Revision {
			o.old = append(o.old, p)
			o.lowOld, o.highOld = lowest(o.lowOld, p.Ordinal), max(o.highOld, p.Ordinal)
		} else {
			o.lowNew, o.highNew = lowest(o.lowNew, p.Ordinal), max(o.highNew, p.Ordinal)
		}
	}
	return o
}

// lowest is min(a, b) where a -1 means none yet.
func lowest(a, b int32) int32 {
	if a < 0 {
		return b
	}
	return min(a, b)
}

// up is the direction of a rollout: up from start 0, else down to 0; once new gateways
// exist, they are on the side the window moves to.
func (o gatewayObs) up(start int32) bool {
	switch {
	case o.highNew > o.highOld:
		return true
	case o.lowNew >= 0 && o.lowNew < o.lowOld:
		return false
	}
	return start == 0
}

// window is the ordinal window [start, top] this pass asks for: while rolling (and the
// region's turn), moved past the drained old gateways at its trailing edge and widened by the
// surge on its leading edge; always covering every undrained gateway.
func (o gatewayObs) window(v RoleView, surge int32, up, moving bool) (start, top int32) {
	n, s := v.Replicas, v.Start
	start, top = s, s+n-1
	if moving {
		drainedOld := func(ord int32) bool {
			p, ok := o.present[ord]
			return ok && p.Revision != v.Revision && p.Drained
		}
		if up {
			k := int32(0) // drained old gateways at the trailing (low) edge
			for drainedOld(s + k) {
				k++
			}
			start = s + k
			// Widened by the surge, but by no more than the old gateways left: a new
			// gateway beyond that would be extra at the end and drained again.
			top = start + n - 1 + min(surge, oldLeft(o.old, start, o.highAll))
		} else {
			k := int32(0) // drained old gateways at the trailing (high) edge
			for drainedOld(o.highAll - k) {
				k++
			}
			top = o.highAll - k
			start = max(0, top-(n+min(surge, oldLeft(o.old, 0, top)))+1)
		}
	}
	// Never drop a gateway that still has to be drained: the window covers every undrained pod.
	for _, p := range o.pods {
		if !p.Drained {
			start, top = min(start, p.Ordinal), max(top, p.Ordinal)
		}
	}
	if !moving {
		start = min(start, s) // only a rollout moves the window's start
	}
	return start, top
}

// windowState is what the window [start, top] holds.
type windowState struct {
	unready, unreadyNew int32 // not Ready or missing; of those, at the new revision
	excess              []PodView
	drainedInside       []PodView
	removing            int // drained gateways outside it (and those the observed window left)
}

func (o gatewayObs) inWindow(v RoleView, start, top int32, rolling bool) windowState {
	w := windowState{removing: o.leaving}
	for ord := start; ord <= top; ord++ {
		p, ok := o.present[ord]
		switch {
		case !ok:
			w.unready++
			w.unreadyNew++
		case !p.Ready:
			w.unready++
			if p.Revision == v.Revision {
				w.unreadyNew++
			}
		}
		if ok && p.Drained {
			w.drainedInside = append(w.drainedInside, p)
		}
		if ok && !rolling && ord >= start+v.Replicas && !p.Draining {
			w.excess = append(w.excess, p)
		}
	}
	for _, p := range o.pods {
		if p.Drained && (p.Ordinal < start || p.Ordinal > top) {
			w.removing++
		}
	}
	return w
}

// waitingTurn says what a region's gateways wait for while another region or role rolls.
func waitingTurn(rolling bool, st roleStep, n, replicas int32) string {
	switch {
	case rolling:
		return fmt.Sprintf("%d gateways at an old revision wait their turn", st.old)
	case st.unready > 0:
		return fmt.Sprintf("%d of %d gateways not Ready", st.unready, n)
	}
	return fmt.Sprintf("%d extra gateways wait to be drained", replicas-n)
}

// drainOrder sorts old gateways for draining: unready ones first (they serve nobody), then
// from the edge the window leaves (the lowest ordinals going up, the highest going down).
func drainOrder(old []PodView, up bool) []PodView {
	sort.SliceStable(old, func(i, j int) bool {
		if old[i].Ready != old[j].Ready {
			return !old[i].Ready
		}
		if up {
			return old[i].Ordinal < old[j].Ordinal
		}
		return old[i].Ordinal > old[j].Ordinal
	})
	return old
}

// oldLeft counts the gateways at an old revision, not yet drained, in [lo, hi].
func oldLeft(old []PodView, lo, hi int32) int32 {
	n := int32(0)
	for _, p := range old {
		if p.Ordinal >= lo && p.Ordinal <= hi && !p.Drained {
			n++
		}
	}
	return n
}

// acceptingChanges steers new connections during a gateway rollout so that a drained client
// lands on a gateway it will not have to leave (issue 12: the rollout test under load saw
// 14 % of clients reconnect three times or more when old gateways kept accepting until their
// own drain):
//
//   - once a gateway at the new revision is Ready, old gateways stop accepting (their
//     connected clients stay until their own drain), so a drained client lands on a gateway
//     at the new revision; with the sliding window every such gateway stays;
//   - a gateway at the desired revision that is Ready and not draining accepts (after a
//     rollout is reverted, or an operator restart between two steps).
//
// Draining gateways are left alone: their drain owns the label.
func acceptingChanges(v RoleView, rolling bool) map[string]bool {
	newServing := false
	for _, p := range v.Pods {
		if p.Revision == v.Revision && p.Ready && !p.Draining {
			newServing = true
		}
	}
	out := map[string]bool{}
	for _, p := range v.Pods {
		if p.Draining {
			continue
		}
		switch {
		case p.Revision == v.Revision && p.Ready && !p.Accepting:
			out[p.Name] = true
		case rolling && newServing && p.Revision != v.Revision && p.Accepting:
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
