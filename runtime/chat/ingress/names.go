package ingress

import (
	"fmt"
	"strconv"
	"strings"
)

// The names on the bus that the gateway, the sequencer and the region mesh
// agree on: each region has its own topics, derived from its name.

// DefaultRegion is the region of embedded mode and of a fleet that names
// none.
const DefaultRegion = "local"

// IngressTopic returns the ingress topic of region: "parley.<region>.ingress".
func IngressTopic(region string) string { return "parley." + region + ".ingress" }

// RelayTopic returns the topic on which other regions publish deliveries
// for region's users: "parley.<region>.relay" (docs/multi-region.md).
func RelayTopic(region string) string { return "parley." + region + ".relay" }

// OutboxTopic returns region's outbox of records waiting to be forwarded to
// their home regions: "parley.<region>.outbox".
func OutboxTopic(region string) string { return "parley." + region + ".outbox" }

// DeliverTopic returns the deliver topic of region: "parley.<region>.deliver".
func DeliverTopic(region string) string { return "parley." + region + ".deliver" }

// GatewayPartition returns the deliver partition of a gateway: the ordinal N
// of an id ending in "-N" ("gateway-0" -> 0, "parley-gateway-12" -> 12). It
// returns an error for an id without such a suffix or with N past 2^31-1.
func GatewayPartition(gatewayID string) (int32, error) {
	i := strings.LastIndexByte(gatewayID, '-')
	if i < 0 || i == len(gatewayID)-1 {
		return 0, fmt.Errorf("gateway id %q does not end in -N", gatewayID)
	}
	n, err := strconv.ParseUint(gatewayID[i+1:], 10, 31)
	if err != nil {
		return 0, fmt.Errorf("gateway id %q does not end in -N: %w", gatewayID, err)
	}
	return int32(n), nil
}
