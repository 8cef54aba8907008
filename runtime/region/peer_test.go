package region_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/region"
)

func TestParsePeer(t *testing.T) {
	p, err := region.ParsePeer("name=us-east,id=7,kafka=k1:9092;k2:9092")
	if err != nil || p.Name != "us-east" || p.ID != 7 || !slices.Equal(p.Brokers, []string{"k1:9092", "k2:9092"}) {
		t.Fatalf("ParsePeer = %+v, %v", p, err)
	}
	for _, bad := range []struct{ in, want string }{
		{"", "want name=NAME"},
		{"name=us,id=2", "kafka is missing"},
		{"name=us,kafka=k:1", "id is missing"},
		{"id=2,kafka=k:1", "name is missing"},
		{"name=us,id=8,kafka=k:1", "not 0..7"},
		{"name=us,id=-1,kafka=k:1", "not 0..7"},
		{"name=US,id=1,kafka=k:1", "not 1..63 bytes"},
		{"name=us,id=1,kafka=k", "not host:port"},
		{"name=us,id=1,kafka=:9092", "not host:port"},
		{"name=us,id=1,id=2,kafka=k:1", "given twice"},
		{"name=us,id=1,kafka=k:1,zone=a", "unknown key"},
	} {
		_, err := region.ParsePeer(bad.in)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParsePeer(%q) = %v, want an error containing %q", bad.in, err, bad.want)
		}
	}
}

func TestNewMeshRejects(t *testing.T) {
	for _, tc := range []struct {
		name  string
		peers []region.Peer
		want  string
	}{
		{"self", []region.Peer{{Name: "eu", ID: 2}}, "is this region"},
		{"twice", []region.Peer{{Name: "us", ID: 2}, {Name: "us", ID: 3}}, "given twice"},
		{"same id", []region.Peer{{Name: "us", ID: 1}}, "already the id of eu"},
	} {
		_, err := region.NewMesh(region.Config{Local: "eu", LocalID: 1, Peers: tc.peers, Dial: func(region.Peer) (bus.Bus, error) { return nil, nil }})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: NewMesh = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
