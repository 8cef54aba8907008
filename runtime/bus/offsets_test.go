package bus

import (
	"errors"
	"testing"
)

// commits records Commit calls; a unit-test stand-in for one Membership.
type commits map[int32]int64

func (c commits) Commit(p int32, off int64) error {
	if p == 9 {
		return errors.New("not owned")
	}
	if p == 8 {
		return ErrClosed
	}
	c[p] = off
	return nil
}
func (c commits) Leave() error { return nil }

func TestOffsets(t *testing.T) {
	var o Offsets
	for _, r := range []Record{{Partition: 0, Offset: 4}, {Partition: 0, Offset: 2}, {Partition: 1, Offset: 0}, {Partition: 2, Offset: 7}} {
		o.Handled(r)
	}
	got := commits{}
	if err := o.Commit(got, []int32{0, 1}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != 5 || got[1] != 1 {
		t.Fatalf("committed %v, want partition 0 at 5 (offsets never move back) and 1 at 1", got)
	}
	o.Forget([]int32{0})
	got = commits{}
	if err := o.Commit(got, nil); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1] != 1 || got[2] != 8 {
		t.Fatalf("committed %v after forgetting 0, want 1 at 1 and 2 at 8", got)
	}
	o.Handled(Record{Partition: 8, Offset: 1})
	if err := o.Commit(commits{}, []int32{8}); err != nil {
		t.Fatalf("a closed bus is not an error, got %v", err)
	}
	o.Handled(Record{Partition: 9, Offset: 1})
	if err := o.Commit(commits{}, []int32{9}); err == nil {
		t.Fatal("a failed commit was not reported")
	}
}
