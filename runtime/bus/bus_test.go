package bus

import "testing"

// The hashes are the vectors of Kafka's UtilsTest.testMurmur2 (Java int, so
// signed) plus a few Parley-shaped keys computed with a separate port of
// Utils.murmur2; the partitions are Utils.toPositive(hash) % n, what the Java
// producer's default partitioner picks. A change here moves conversations to
// other partitions than Kafka producers use, so it must never happen silently.
func TestMurmur2KafkaVectors(t *testing.T) {
	tests := []struct {
		key  string
		hash int32
		p16  int32 // partition among 16
		p50  int32 // partition among 50
	}{
		{"21", -973932308, 12, 40},
		{"foobar", -790332482, 14, 16},
		{"a-little-bit-long-string", -985981536, 0, 12},
		{"a-little-bit-longer-string", -1486304829, 3, 19},
		{"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971, 13, 27},
		{"abc", 479470107, 11, 7},
		{"", 275646681, 9, 31},
		{"dm:alice:bob", 617995167, 15, 17},
		{"g:1234567890123", 711447370, 10, 20},
		{"\xff\x80\x7f", 968261134, 14, 34}, // bytes >= 0x80 are unsigned in the hash
	}
	for _, tt := range tests {
		if got := int32(murmur2([]byte(tt.key))); got != tt.hash {
			t.Errorf("murmur2(%q) = %d, want %d", tt.key, got, tt.hash)
		}
		if got := PartitionFor([]byte(tt.key), 16); got != tt.p16 {
			t.Errorf("PartitionFor(%q, 16) = %d, want %d", tt.key, got, tt.p16)
		}
		if got := PartitionFor([]byte(tt.key), 50); got != tt.p50 {
			t.Errorf("PartitionFor(%q, 50) = %d, want %d", tt.key, got, tt.p50)
		}
		if got := PartitionFor([]byte(tt.key), 1); got != 0 {
			t.Errorf("PartitionFor(%q, 1) = %d, want 0", tt.key, got)
		}
	}
}

func TestPartitionForStable(t *testing.T) {
	key := []byte("dm:alice:bob")
	first := PartitionFor(key, 16)
	for range 100 {
		if got := PartitionFor(key, 16); got != first {
			t.Fatalf("PartitionFor changed between calls: %d then %d", first, got)
		}
	}
}
