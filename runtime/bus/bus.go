// Package bus is the delivery bus between Parley's roles: a set of topics,
// each with a fixed number of partitions, carrying opaque records.
//
// Two patterns run over it (docs/design.md §2):
//   - ingress: gateways Publish keyed by conversation id; the chat role Joins a
//     consumer group so each partition has exactly one owner (its sequencer),
//     with assign/revoke as members come and go, and commits offsets;
//   - deliver: the chat role Publishes to partition k = gateway k; gateway k
//     Subscribes to its own partition from the end.
//
// Backends: bus/memory (embedded, in-process) and later bus/kafka; both pass
// bustest.Run.
package bus

import (
	"context"
	"errors"
	"time"
)

// ErrClosed is returned by operations on a closed bus or membership.
var ErrClosed = errors.New("bus closed")

// ErrNotSent is wrapped by publish errors when the record cannot have
// reached the bus (the backend handed it to no broker), so a retry cannot
// duplicate it. Any other publish error leaves the outcome unknown: the
// record may be stored (issue 14: answered timeout, not unavailable).
var ErrNotSent = errors.New("not sent")

// Record is one record of a partition.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	// Time is when the record was published: the producer's timestamp on
	// Kafka (CreateTime), the append time on the memory bus. Consumers
	// measure how long a record waited (metrics.StageIngressConsume).
	Time time.Time
}

// Message is one record for PublishAll.
type Message struct {
	Topic string
	// Partition is the target partition; < 0 places the record by a hash
	// of Key, as Publish does.
	Partition  int32
	Key, Value []byte
}

// Topic names a topic and its partition count.
type Topic struct {
	Name       string
	Partitions int32
}

// GroupHandler receives a consumer-group member's partitions and records.
// Assigned and Revoked are called from the bus's goroutine, never
// concurrently with each other; Handle runs on one goroutine per partition, in
// offset order. After Revoked(p) returns, Handle is not called for p until p
// is assigned again. The handler commits with Membership.Commit.
type GroupHandler interface {
	Assigned(partitions []int32)
	Revoked(partitions []int32)
	Handle(ctx context.Context, rec Record)
}

// Membership is one member's place in a consumer group.
type Membership interface {
	// Commit records that every record of partition before offset is done;
	// after a rebalance the next owner resumes at the committed offset.
	// Commit of a lower offset than already committed is ignored.
	Commit(partition int32, offset int64) error
	// Leave revokes this member's partitions (calling Revoked) and leaves.
	Leave() error
}

// Bus is the delivery bus.
type Bus interface {
	// CreateTopic creates t if it does not exist (idempotent).
	CreateTopic(ctx context.Context, t Topic) error
	// Partitions returns the partition count of topic.
	Partitions(topic string) (int32, error)
	// Publish appends value to topic, in the partition given by partition, or
	// when partition < 0 by a hash of key (stable across backends: murmur2 as
	// Kafka's default partitioner). It returns once the record is accepted
	// durably enough for the backend (acks=all on Kafka); an error wraps
	// ErrNotSent when the record cannot have been stored.
	Publish(ctx context.Context, topic string, partition int32, key, value []byte) error
	// PublishAll publishes msgs as Publish would, all at once, so that a
	// backend that batches sends them in as few requests as it can (Kafka:
	// one produce request per broker). It returns when every message is
	// accepted or failed: nil when all were accepted, else one error per
	// message, nil at the indexes of the accepted ones. Order holds only
	// among messages of the same partition.
	PublishAll(ctx context.Context, msgs []Message) []error
	// Join joins consumer group on topic with member id member (stable across
	// restarts: static membership), delivering to h until Leave or ctx ends.
	Join(ctx context.Context, group, topic, member string, h GroupHandler) (Membership, error)
	// Subscribe calls fn for each record published to one partition from now
	// on, in order, on one goroutine, until ctx ends.
	Subscribe(ctx context.Context, topic string, partition int32, fn func(Record)) error
	// Close releases the bus.
	Close() error
}

// Lagger is implemented by the buses that can tell how far a consumer group
// is behind on a topic (both backends). The operator waits on it, through a
// chat pod, before it deletes a region whose outbox still holds accepted
// sends (runtime/region.Outbox.Pending).
type Lagger interface {
	// Lag returns how many records of topic group has not committed: over
	// every partition, the end offset minus the group's committed offset, or
	// minus the first retained offset where the group never committed. A
	// topic that does not exist is an error.
	Lag(ctx context.Context, group, topic string) (int64, error)
}

// PartitionFor returns the partition of key among n partitions, using
// murmur2 like Kafka's default partitioner (positive(murmur2(key)) % n), so a
// conversation maps to the same partition on every backend.
func PartitionFor(key []byte, n int32) int32 {
	return int32(murmur2(key)&0x7fffffff) % n
}

// murmur2 is the 32-bit MurmurHash2 with Kafka's seed (Utils.murmur2 in the
// Kafka clients source).
func murmur2(data []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	length := len(data)
	h := seed ^ uint32(length)
	n := length / 4
	for i := 0; i < n; i++ {
		k := uint32(data[i*4]) | uint32(data[i*4+1])<<8 | uint32(data[i*4+2])<<16 | uint32(data[i*4+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := data[n*4:]
	switch len(tail) {
	case 3:
		h ^= uint32(tail[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(tail[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(tail[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
