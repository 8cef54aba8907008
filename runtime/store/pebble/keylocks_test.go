package pebble

import (
	"sync"
	"testing"
)

// TestKeyLocks: one key's holders exclude each other, a held key does not
// hold up another key, and no lock outlives its last holder.
func TestKeyLocks(t *testing.T) {
	var k keyLocks
	var wg sync.WaitGroup
	var counts [2]int
	for i := range 64 {
		key := []string{"a", "b"}[i%2]
		wg.Go(func() {
			for range 200 {
				unlock := k.lock(key)
				counts[i%2]++ // a data race (and a lost update) without exclusion
				unlock()
			}
		})
	}
	wg.Wait()
	if counts[0] != 32*200 || counts[1] != 32*200 {
		t.Fatalf("counts %v, want 6400 each", counts)
	}

	unlockA := k.lock("a")
	done := make(chan struct{})
	go func() { k.lock("b")(); close(done) }()
	<-done // would hang if "b" waited for "a"
	unlockA()
	if len(k.m) != 0 {
		t.Fatalf("%d locks left after every holder unlocked", len(k.m))
	}
}
