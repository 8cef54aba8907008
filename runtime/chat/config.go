// Package chat is the send pipeline of the chat role (docs/design.md §2):
// the Sequencer owns ingress partitions and, per conversation, validates,
// dedupes, sequences and durably appends messages and membership events, then
// replies to the origin gateway and fans out through the Router; Queries serve
// the read paths (history, sync, inbox, receipts) with membership checks.
// The gateway side of the exchange (the ingress.Client stub) and the names of
// the topics are in package chat/ingress, and the request rules the sequencer
// applies as the authority (ids, text, rules.ValidateSend…) in chat/rules,
// so that the gateway and REST use them without linking the sequencer.
package chat

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/chat/ingress"
	"github.com/parleychat/parley/runtime/metrics"
	"github.com/parleychat/parley/runtime/wire"
)

// GroupName is the consumer group every chat process joins on the ingress topic.
const GroupName = "parley.chat"

// Defaults for Config and topic sizes.
const (
	// DefaultIngressPartitions is the ingress partition count in embedded mode.
	DefaultIngressPartitions = 16
	// DefaultDeliverPartitions is the deliver partition count in embedded mode (one gateway).
	DefaultDeliverPartitions = 1
	DefaultMaxGroupMembers   = 500
	DefaultMaxMessageBytes   = wire.DefaultMaxMessageBytes
	DefaultReceiptFlush      = time.Second
	// DefaultEditWindow is how long after sending a sender may edit or
	// delete a message (Config.EditWindow).
	DefaultEditWindow = 48 * time.Hour

	// DefaultMaxBatch bounds how many queued records of one conversation are
	// handled together (sends among them share one store.Append).
	DefaultMaxBatch = 256
	// DefaultMaxInflight bounds the records of one partition that are queued
	// or being processed; Handle blocks beyond it (backpressure on the bus).
	DefaultMaxInflight = 4096
	// DefaultStateIdle is how long an idle conversation's state stays cached.
	DefaultStateIdle = 5 * time.Minute
	// DefaultMaxStates bounds cached conversation states per partition; the
	// least recently used idle ones are dropped beyond it.
	DefaultMaxStates = 20000

	// DedupeWindow is how many of a conversation's newest messages are
	// remembered for idempotent sends (docs/design.md §2). A retry
	// of an older message would be stored again.
	DedupeWindow = 4096
	// MaxReactionsPerMessage bounds the distinct emoji on one message;
	// MaxReactionsPerUser the emoji one user puts on one message; a
	// reaction past either is too_many_reactions. One reaction's emoji is
	// checked by rules.CheckEmoji (at most rules.MaxEmojiBytes).
	MaxReactionsPerMessage = 20
	MaxReactionsPerUser    = 3
	// MaxSyncCursors bounds the cursors of one Sync request.
	MaxSyncCursors = 1000
)

// Config configures the chat role. Zero numeric fields take the defaults.
type Config struct {
	// Region names the region; topics are derived from it by DefaultConfig.
	Region string
	// NodeID is the snowflake node, 0..1023 (region id << 7 | chat pod
	// ordinal; embedded mode uses 0). No two live sequencers may share it.
	NodeID int64
	// IngressTopic and DeliverTopic are the bus topics (ingress.IngressTopic(region), ingress.DeliverTopic(region)).
	IngressTopic, DeliverTopic string
	// Member is this process's stable consumer-group member id (e.g. the pod name).
	Member string
	// MaxGroupMembers caps a group's members, creator included (default 500).
	MaxGroupMembers int
	// MaxMessageBytes caps a text message, bytes of UTF-8 (default 4096).
	MaxMessageBytes int
	// ReceiptFlush is the interval at which receipt pointers are persisted:
	// each member+conversation pointer is written at most once per interval
	// (default 1s).
	ReceiptFlush time.Duration
	// EditWindow is how long after a message was sent its sender may edit
	// or delete it (default 48h); past it the answer is
	// edit_window_closed. A group's owner deletes any message at any time.
	EditWindow time.Duration

	// MaxBatch, MaxInflight, StateIdle, MaxStates: see the Default* constants.
	MaxBatch    int
	MaxInflight int
	StateIdle   time.Duration
	MaxStates   int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics, when set, counts stored messages (MessagesSent by kind) and
	// observes the sequencer's stages (ingress_consume, append,
	// deliver_publish).
	Metrics *metrics.Metrics
	// Regions, when set, is the multi-region mesh: records of conversations
	// homed in another region are forwarded there (regions.go). Nil means
	// one region: every conversation is sequenced here.
	Regions Regions
}

// DefaultConfig returns the embedded-mode configuration: region "local",
// node 0, member "chat-0" and the default limits.
func DefaultConfig() Config {
	return Config{
		Region:          ingress.DefaultRegion,
		NodeID:          0,
		IngressTopic:    ingress.IngressTopic(ingress.DefaultRegion),
		DeliverTopic:    ingress.DeliverTopic(ingress.DefaultRegion),
		Member:          "chat-0",
		MaxGroupMembers: DefaultMaxGroupMembers,
		MaxMessageBytes: DefaultMaxMessageBytes,
		ReceiptFlush:    DefaultReceiptFlush,
		EditWindow:      DefaultEditWindow,
		MaxBatch:        DefaultMaxBatch,
		MaxInflight:     DefaultMaxInflight,
		StateIdle:       DefaultStateIdle,
		MaxStates:       DefaultMaxStates,
	}
}

// withDefaults fills zero fields and checks the rest.
func (c Config) withDefaults() (Config, error) {
	if c.Region == "" {
		c.Region = ingress.DefaultRegion
	}
	if c.IngressTopic == "" {
		c.IngressTopic = ingress.IngressTopic(c.Region)
	}
	if c.DeliverTopic == "" {
		c.DeliverTopic = ingress.DeliverTopic(c.Region)
	}
	if c.MaxGroupMembers <= 0 {
		c.MaxGroupMembers = DefaultMaxGroupMembers
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.ReceiptFlush <= 0 {
		c.ReceiptFlush = DefaultReceiptFlush
	}
	if c.EditWindow <= 0 {
		c.EditWindow = DefaultEditWindow
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = DefaultMaxInflight
	}
	if c.StateIdle <= 0 {
		c.StateIdle = DefaultStateIdle
	}
	if c.MaxStates <= 0 {
		c.MaxStates = DefaultMaxStates
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Member == "" {
		return c, fmt.Errorf("chat config: member id is empty")
	}
	if c.NodeID < 0 || c.NodeID > 1023 {
		return c, fmt.Errorf("chat config: node id %d outside 0..1023", c.NodeID)
	}
	return c, nil
}

// EnsureTopics creates the ingress and deliver topics of cfg if they do not
// exist (idempotent). Partition counts <= 0 take the embedded defaults.
func EnsureTopics(ctx context.Context, b bus.Bus, cfg Config, ingressPartitions, deliverPartitions int32) error {
	if ingressPartitions <= 0 {
		ingressPartitions = DefaultIngressPartitions
	}
	if deliverPartitions <= 0 {
		deliverPartitions = DefaultDeliverPartitions
	}
	if cfg.IngressTopic == "" || cfg.DeliverTopic == "" {
		return fmt.Errorf("ensure topics: topic names are empty")
	}
	if err := b.CreateTopic(ctx, bus.Topic{Name: cfg.IngressTopic, Partitions: ingressPartitions}); err != nil {
		return fmt.Errorf("create topic %s: %w", cfg.IngressTopic, err)
	}
	if err := b.CreateTopic(ctx, bus.Topic{Name: cfg.DeliverTopic, Partitions: deliverPartitions}); err != nil {
		return fmt.Errorf("create topic %s: %w", cfg.DeliverTopic, err)
	}
	return nil
}
