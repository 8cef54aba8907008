// Package relay carries presence between the processes of the distributed
// mode (docs/design.md §4), where gateways, the chat role and the presence
// role are separate fleets.
//
// Decision — who does what:
//
//   - Gateways own the session registry. A gateway writes its sessions to
//     the registry (Redis) itself, synchronously, before it answers the
//     session's sync (docs/design.md §2, repair by pull), and rewrites them on
//     every heartbeat, so the registry rebuilds itself after a Redis restart
//     within one heartbeat. The Reporter does that and also reports each
//     connect, heartbeat and disconnect as an event on the presence topic
//     "parley.<region>.presence", keyed by user.
//   - The presence role owns the decisions. Its Announcer is a member of
//     consumer group "parley.presence" on that topic, so every event of one
//     user reaches one presence process, in order. It feeds them to a
//     presence.Service (grace period, expiry sweep of sessions that stopped
//     heartbeating, e.g. of a gateway that crashed), which writes statuses
//     to the registry and announces changes. The Announcer broadcasts each
//     announced change to every partition of the deliver topic as a
//     Delivery with a presence body and no user ids; every gateway pushes it
//     to its local subscribers and DM peers (gateway.PresenceChanged).
//   - Readers (presence_sub answers, GET /v1/presence) read statuses from
//     the registry on the gateway; a registry failure reads as unknown.
//
// Everything here is eventually consistent and self-repairing: a lost
// connect event is repaired by the next heartbeat event, a lost disconnect
// by the session's expiry, a presence process that dies by its successor
// (which learns the online users from their next heartbeat without
// announcing them again, since the registry shows them online). A Redis
// outage costs presence reads (unknown) and precise routing (the chat role
// routes to every gateway), not messages.
package relay

import (
	"encoding/json"
	"fmt"
	"time"
)

// GroupName is the consumer group of the presence role on the presence topic.
const GroupName = "parley.presence"

// DefaultPartitions is the presence topic's partition count `parley migrate`
// creates by default.
const DefaultPartitions = 16

// Topic returns the presence topic of region: "parley.<region>.presence".
func Topic(region string) string { return "parley." + region + ".presence" }

// Event kinds.
const (
	kindConnected    = "connected"
	kindHeartbeat    = "heartbeat"
	kindDisconnected = "disconnected"
)

// event is one session event on the presence topic.
//
// Decision: the presence topic carries JSON rather than a new protobuf
// message, to leave the shared bus.proto alone; unknown fields are ignored
// and kinds unknown to a reader are skipped, so fleets of mixed versions
// decode each other.
type event struct {
	Kind    string `json:"k"`
	User    string `json:"u"`
	Device  string `json:"d,omitempty"`
	Session string `json:"s"`
	Gateway string `json:"g,omitempty"`
	// At is when the gateway saw it, Unix ms.
	At int64 `json:"at"`
}

// record is the value of one presence-topic record: the events of one
// gateway for one partition, in order.
type record struct {
	Events []event `json:"events"`
}

func encode(evs []event) ([]byte, error) {
	return json.Marshal(record{Events: evs})
}

func decode(v []byte) ([]event, error) {
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("presence record: %w", err)
	}
	return r.Events, nil
}

func (e event) at() time.Time { return time.UnixMilli(e.At) }
