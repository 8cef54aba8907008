package bus

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Offsets tracks a consumer-group member's progress: per partition, the
// offset after the last record it handled, which is what Membership.Commit
// takes. Members commit it periodically and when partitions are revoked.
// The zero value is ready; it is safe for concurrent use.
type Offsets struct {
	mu   sync.Mutex
	next map[int32]int64
}

// Handled records that rec is done (offsets only move forward).
func (o *Offsets) Handled(rec Record) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.next == nil {
		o.next = make(map[int32]int64)
	}
	if rec.Offset+1 > o.next[rec.Partition] {
		o.next[rec.Partition] = rec.Offset + 1
	}
}

// Forget drops the progress of partitions this member no longer owns.
func (o *Offsets) Forget(partitions []int32) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range partitions {
		delete(o.next, p)
	}
}

// Commit commits the progress of partitions (every tracked one when nil)
// through m. A closed bus is not an error; other failures are joined.
func (o *Offsets) Commit(m Membership, partitions []int32) error {
	o.mu.Lock()
	todo := make(map[int32]int64, len(o.next))
	for p, off := range o.next {
		if partitions == nil || slices.Contains(partitions, p) {
			todo[p] = off
		}
	}
	o.mu.Unlock()
	var errs []error
	for p, off := range todo {
		if err := m.Commit(p, off); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, fmt.Errorf("commit partition %d offset %d: %w", p, off, err))
		}
	}
	return errors.Join(errs...)
}
