package chat

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/chat/rules"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

// Regions is the multi-region mesh as the sequencer and the router use it
// (implemented by runtime/region.Mesh). Every conversation has one home
// region whose sequencer alone writes it; the others forward to it
// (docs/multi-region.md).
type Regions interface {
	// Local returns this region's name.
	Local() string
	// Known reports whether name is this region or a peer of the mesh.
	Known(name string) bool
	// RegionByID returns the name of the region with id 0..7 (the top
	// three bits of a Snowflake node id, and so of a group id).
	RegionByID(id int) (string, bool)
	// Peers returns the other regions' names.
	Peers() []string
	// Forward hands recs, all of one conversation and in order, to their
	// home region. It returns once they are durably queued in this
	// region's outbox; the outbox sends them on in that order and answers
	// send_accepted while the home region is unreachable.
	Forward(ctx context.Context, home string, recs []*parleyv1.IngressRecord) error
	// Publish publishes msgs on region's bus; it returns one error per
	// message as bus.Bus.PublishAll does.
	Publish(ctx context.Context, region string, msgs []bus.Message) []error
	// Down reports whether the link to region is known down (the last
	// publish to its Kafka failed), and since when.
	Down(region string) (bool, time.Time)
}

// nodeShift is where a Snowflake id's node bits start, and regionShift
// where the region id starts inside the node (server.FleetConfig.NodeID =
// region id << 7 | ordinal).
const (
	nodeShift   = 12
	regionShift = 7
)

// GroupRegionID returns the region id 0..7 of the sequencer that minted
// group id conv, or false for an id that is not a group id. Groups are
// minted by their home region, so this is the group's home.
func GroupRegionID(conv string) (int, bool) {
	if !rules.IsGroup(conv) || rules.CheckConversationID(conv) != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(conv[len(rules.GroupPrefix):], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return int(n>>(nodeShift+regionShift)) & 7, true
}

// errHomeUnknown answers a record whose home region is not in the mesh.
func errHomeUnknown(conv, home string) error {
	return wire.Errorf(wire.CodeUnavailable, "conversation %s is homed in region %q, which this region's mesh does not know", conv, home)
}

// homeOf returns the home region of c for record rec ("" when it is this
// region or there is no mesh). A group's home is the region that minted
// its id; a new group's, its creator's home; a DM's, the one stored with
// it, or for a DM not stored here yet, dmHome's rule.
func (c *conversation) homeOf(ctx context.Context, rec *parleyv1.IngressRecord) (string, error) {
	s := c.p.s
	m := s.cfg.Regions
	if m == nil {
		return "", nil
	}
	var home string
	switch {
	case rec.GetCreateGroup() != nil:
		h, err := s.userHome(ctx, rec.GetOrigin())
		if err != nil {
			return "", err
		}
		home = h
	case rules.IsGroup(c.id):
		id, ok := GroupRegionID(c.id)
		if !ok {
			return "", nil // malformed: answered here
		}
		name, known := m.RegionByID(id)
		if name == m.Local() {
			return "", nil
		}
		// Homed elsewhere (or in a region the mesh does not know): make sure
		// the group exists before forwarding, so that a made-up id is
		// not_found here rather than waiting in the outbox for a region
		// that will refuse it (a new-user trial).
		if !c.groupSeen {
			if err := c.groupExists(ctx, name); err != nil {
				return "", err
			}
			c.groupSeen = true
		}
		if !known {
			return "", errHomeUnknown(c.id, "id "+strconv.Itoa(id))
		}
		home = name
	default:
		if c.home == "" {
			h, err := c.dmHome(ctx, rec)
			if err != nil {
				return "", err
			}
			c.home = h
		}
		home = c.home
	}
	if home == "" || home == m.Local() {
		return "", nil
	}
	if !m.Known(home) {
		return "", errHomeUnknown(c.id, home)
	}
	return home, nil
}

// dmHome is the home of DM c: the region stored with it, else the rule both
// regions compute alike: the stored home of its lower user id, else of its
// higher one, else the sender's. A DM is created by its home's sequencer
// with that home, so the rule and the stored row agree.
//
// Replication between datacenters lags, so what this datacenter lacks is
// asked of every datacenter (store.CrossRegionReads) before the rule falls
// back to the sender: a DM created or a user homed in another region
// moments ago is seen, and two regions do not both take the DM. When the
// other regions are unreachable the rule runs on what is known here
// (docs/multi-region.md: a brand-new DM during a partition).
func (c *conversation) dmHome(ctx context.Context, rec *parleyv1.IngressRecord) (string, error) {
	s := c.p.s
	cross, _ := s.st.(store.CrossRegionReads)
	conv, err := s.st.Conversation(ctx, c.id)
	if errors.Is(err, store.ErrNotFound) && cross != nil {
		conv, err = cross.ConversationAnyRegion(ctx, c.id)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Debug("cross-region read of a DM failed; using this region's view", "conversation", c.id, "err", err)
			err = store.ErrNotFound
		}
	}
	switch {
	case err == nil:
		if conv.HomeRegion == "" {
			return s.cfg.Regions.Local(), nil
		}
		return conv.HomeRegion, nil
	case !errors.Is(err, store.ErrNotFound):
		return "", storeErr(s.log, "load conversation home", c.id, err)
	}
	a, b, ok := rules.ParseDM(c.id)
	if !ok {
		return s.cfg.Regions.Local(), nil // malformed: answered here
	}
	for _, u := range []string{a, b} {
		h, err := s.storedHome(ctx, u, cross)
		if err != nil {
			return "", storeErr(s.log, "load user home", c.id, err)
		}
		if h != "" {
			return h, nil
		}
	}
	return s.userHome(ctx, rec.GetOrigin())
}

// groupExists returns nil when group c is stored in this datacenter or, if
// not yet, in any (a group created moments ago in its home); not_found when
// it is nowhere; unavailable when only its home region could tell and it
// cannot be reached.
func (c *conversation) groupExists(ctx context.Context, home string) error {
	s := c.p.s
	_, err := s.st.Conversation(ctx, c.id)
	if err == nil {
		return nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return storeErr(s.log, "load group", c.id, err)
	}
	cross, ok := s.st.(store.CrossRegionReads)
	if !ok {
		return wire.Errorf(wire.CodeNotFound, "group %s does not exist", c.id)
	}
	_, err = cross.ConversationAnyRegion(ctx, c.id)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return wire.Errorf(wire.CodeNotFound, "group %s does not exist", c.id)
	}
	s.log.Debug("cross-region read of a group failed", "conversation", c.id, "err", err)
	return &wire.Error{Code: wire.CodeUnavailable, RetryAfterMs: storeRetryMs,
		Message: fmt.Sprintf("group %s is not known here yet and its home region %s cannot be asked; retry later", c.id, home)}
}

// storedHome is user's stored home, asked of every datacenter when this one
// has none; "" when none is known.
func (s *Sequencer) storedHome(ctx context.Context, user string, cross store.CrossRegionReads) (string, error) {
	homes, ok := s.st.(store.UserHomes)
	if !ok {
		return "", nil
	}
	h, err := homes.UserHome(ctx, user)
	if err == nil {
		return h, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	if cross == nil {
		return "", nil
	}
	h, err = cross.UserHomeAnyRegion(ctx, user)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Debug("cross-region read of a user home failed; using this region's view", "user", user, "err", err)
		}
		return "", nil
	}
	return h, nil
}

// userHome is the home region of o's user: the one the gateway resolved,
// else the stored one, else this region.
func (s *Sequencer) userHome(ctx context.Context, o *parleyv1.Origin) (string, error) {
	if h := o.GetHomeRegion(); h != "" {
		return h, nil
	}
	h, err := s.storedHome(ctx, o.GetUserId(), nil) // this datacenter's view
	if err != nil {
		return "", storeErr(s.log, "load user home", o.GetUserId(), err)
	}
	if h == "" {
		return s.cfg.Region, nil
	}
	return h, nil
}

// waitsForAnswer reports whether rec is a request whose answer only the
// home region can give and that the outbox does not answer while the home is
// unreachable: everything but sends (answered send_accepted and sequenced
// after the heal) and receipts (acks and reads, which nobody waits on and
// which apply after the heal).
func waitsForAnswer(rec *parleyv1.IngressRecord) bool {
	return rec.GetSend() == nil && rec.GetAck() == nil && rec.GetRead() == nil
}

// homeDownRetryMs is the retry hint of a request refused because its
// conversation's home region is unreachable.
const homeDownRetryMs = 5000

// homeDown is the answer to a request that waits for an answer from home
// region h while the link to it is known down: unavailable, nothing queued
// or stored, rather than a request that sits in the outbox until the heal
// while its caller times out not knowing whether it happened (issue 10).
func homeDown(h string, since time.Time) *wire.Error {
	return &wire.Error{Code: wire.CodeUnavailable, RetryAfterMs: homeDownRetryMs, Message: fmt.Sprintf(
		"the conversation's home region %s has been unreachable since %s; edits, deletes, reactions and member changes wait for it (nothing was stored): retry later. Sends are accepted and queued meanwhile",
		h, since.UTC().Format(time.RFC3339))}
}

// forward hands the jobs homed elsewhere to their home region and returns
// the others, in order. A job is finished once the outbox holds it; one
// that cannot be queued is answered with the error.
func (c *conversation) forward(ctx context.Context, jobs []*job, out *Batch) []*job {
	s := c.p.s
	local := jobs[:0:0]
	var home string
	var away []*job
	flush := func() {
		if len(away) == 0 {
			return
		}
		recs := make([]*parleyv1.IngressRecord, len(away))
		for i, j := range away {
			recs[i] = j.rec
		}
		if err := s.cfg.Regions.Forward(ctx, home, recs); err != nil {
			s.log.Warn("forward to home region", "conversation", c.id, "home", home, "records", len(recs), "err", err)
			for _, j := range away {
				c.fail(ctx, j, out, &wire.Error{Code: wire.CodeUnavailable, Message: "could not queue the request for the conversation's home region; retry later", RetryAfterMs: storeRetryMs})
			}
		} else {
			for _, j := range away {
				j.finished = true
			}
		}
		away = nil
	}
	for _, j := range jobs {
		h, err := c.homeOf(ctx, j.rec)
		if err != nil {
			flush()
			c.fail(ctx, j, out, err)
			continue
		}
		if h == "" {
			local = append(local, j)
			continue
		}
		if down, since := s.cfg.Regions.Down(h); down && waitsForAnswer(j.rec) {
			flush()
			c.fail(ctx, j, out, homeDown(h, since))
			continue
		}
		if from := j.rec.GetOrigin().GetRegion(); from != "" && from != s.cfg.Regions.Local() {
			// Forwarded here by a region that took this one for the home,
			// while this one takes h for it: the regions disagree (a home
			// rule applied to data one of them had not yet replicated).
			// Forwarding again could bounce it between them for ever, and
			// sequencing it here could make two writers: the client is
			// told to retry, by when the views have converged.
			flush()
			s.log.Warn("record forwarded here for a conversation this region homes elsewhere",
				"conversation", c.id, "from", from, "home", h)
			c.fail(ctx, j, out, wire.Errorf(wire.CodeUnavailable, "regions %s and %s disagree on the home of %s; retry", from, s.cfg.Regions.Local(), c.id))
			continue
		}
		if h != home {
			flush()
			home = h
		}
		away = append(away, j)
	}
	flush()
	return local
}
