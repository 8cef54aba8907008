package storetest

import (
	"maps"
	"slices"
	"testing"

	"github.com/parleychat/parley/runtime/store"
)

// testMutes: a mute is stored per (conversation, user) with its end,
// replaced by the next, removed by Unmute (twice is no error), and does
// not leak to other users or conversations.
func testMutes(t *testing.T, s store.MessageStore) {
	ctx := ctxFor(t)
	conv, other := newConv(), newConv()
	alice, bob := newUser("alice"), newUser("bob")
	mutes := func(conv string, want map[string]int64) {
		t.Helper()
		got, err := s.Mutes(ctx, conv)
		if err != nil {
			t.Fatalf("Mutes(%s): %v", conv, err)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("Mutes(%s) = %v, want %v", conv, got, want)
		}
	}
	mutes(conv, map[string]int64{})
	if err := s.SetMute(ctx, conv, alice, 0); err != nil {
		t.Fatalf("SetMute: %v", err)
	}
	if err := s.SetMute(ctx, conv, bob, 1_700_000_000_000); err != nil {
		t.Fatalf("SetMute: %v", err)
	}
	mutes(conv, map[string]int64{alice: 0, bob: 1_700_000_000_000})
	mutes(other, map[string]int64{})
	// A new mute replaces the old one's end.
	if err := s.SetMute(ctx, conv, alice, 1_800_000_000_000); err != nil {
		t.Fatalf("SetMute again: %v", err)
	}
	mutes(conv, map[string]int64{alice: 1_800_000_000_000, bob: 1_700_000_000_000})
	for range 2 {
		if err := s.Unmute(ctx, conv, alice); err != nil {
			t.Fatalf("Unmute: %v", err)
		}
	}
	mutes(conv, map[string]int64{bob: 1_700_000_000_000})
}

// testBlocks: a block is listed by both sides (Blocks, BlockedBy), sorted;
// repeating it changes nothing; removing it clears both.
func testBlocks(t *testing.T, s store.MessageStore) {
	ctx := ctxFor(t)
	alice, bob, carol := newUser("alice"), newUser("bob"), newUser("carol")
	lists := func(user string, wantBlocks, wantBy []string) {
		t.Helper()
		blocks, err := s.Blocks(ctx, user)
		if err != nil {
			t.Fatalf("Blocks(%s): %v", user, err)
		}
		by, err := s.BlockedBy(ctx, user)
		if err != nil {
			t.Fatalf("BlockedBy(%s): %v", user, err)
		}
		if !slices.Equal(blocks, wantBlocks) || !slices.Equal(by, wantBy) {
			t.Fatalf("%s: Blocks = %v, BlockedBy = %v; want %v, %v", user, blocks, by, wantBlocks, wantBy)
		}
	}
	lists(alice, nil, nil)
	for _, u := range []string{carol, bob, bob} {
		if err := s.SetBlock(ctx, alice, u, true); err != nil {
			t.Fatalf("SetBlock(%s, %s): %v", alice, u, err)
		}
	}
	if err := s.SetBlock(ctx, carol, bob, true); err != nil {
		t.Fatalf("SetBlock: %v", err)
	}
	lists(alice, []string{bob, carol}, nil)
	lists(bob, nil, []string{alice, carol})
	lists(carol, []string{bob}, []string{alice})
	for range 2 {
		if err := s.SetBlock(ctx, alice, bob, false); err != nil {
			t.Fatalf("unblock: %v", err)
		}
	}
	lists(alice, []string{carol}, nil)
	lists(bob, nil, []string{carol})
}

// testPrefsInvalid: an empty id is an error and writes nothing.
func testPrefsInvalid(t *testing.T, s store.MessageStore) {
	ctx := ctxFor(t)
	conv, alice := newConv(), newUser("alice")
	if err := s.SetMute(ctx, conv, "", 0); err == nil {
		t.Error("SetMute with an empty user: no error")
	}
	if err := s.SetMute(ctx, "", alice, 0); err == nil {
		t.Error("SetMute with an empty conversation: no error")
	}
	if err := s.SetBlock(ctx, alice, "", true); err == nil {
		t.Error("SetBlock of an empty user: no error")
	}
	if got, err := s.Mutes(ctx, conv); err != nil || len(got) != 0 {
		t.Errorf("Mutes after refused writes = %v, %v; want none", got, err)
	}
	if got, err := s.Blocks(ctx, alice); err != nil || len(got) != 0 {
		t.Errorf("Blocks after a refused write = %v, %v; want none", got, err)
	}
}
