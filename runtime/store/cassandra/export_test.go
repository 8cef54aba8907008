package cassandra

import (
	"context"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
)

// ApplyEffects exposes the writing of an append's effects alone, so tests
// can replay them out of order.
func (s *Store) ApplyEffects(ctx context.Context, conv string, effects ...store.Effect) error {
	return s.applyEffects(ctx, conv, effects)
}

// ResolveSegment exposes how an append of unknown outcome is resolved:
// "empty", "ours" or "foreign".
func (s *Store) ResolveSegment(ctx context.Context, conv string, msgs []*parleyv1.Message) (string, error) {
	rows := make([]row, len(msgs))
	for i, m := range msgs {
		r, err := encodeRow(conv, m)
		if err != nil {
			return "", err
		}
		rows[i] = r
	}
	st, err := s.segmentState(ctx, conv, rows)
	return [...]string{segmentEmpty: "empty", segmentOurs: "ours", segmentForeign: "foreign"}[st], err
}

// SetCASHook makes every conditional batch attempt go through hook until
// the returned function restores the default.
func SetCASHook(hook func(attempt int, exec func() (bool, error)) (bool, error)) (restore func()) {
	casHook = hook
	return func() { casHook = nil }
}
