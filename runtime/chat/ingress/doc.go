// Package ingress is the gateway side of the exchange with the chat role
// (docs/design.md §2) and the names both sides agree on: Client publishes
// IngressRecords to the sequencers and matches the Replies that come back on
// the gateway's deliver partition; IngressTopic, DeliverTopic, RelayTopic and
// OutboxTopic name a region's topics; GatewayPartition maps a gateway to its
// deliver partition.
//
// Decision (issue 15): this lives apart from package chat, which is the
// sequencer, so that the gateway, REST and the tools publish requests without
// linking the send pipeline; chat imports this package for the names, never
// the other way round. The checks a request must pass before it is published
// are in package chat/rules, shared with the sequencer, which applies them
// again as the authority.
package ingress
