package rules

import "testing"

func TestDMIDs(t *testing.T) {
	if DMID("bob", "alice") != "dm:alice:bob" || DMID("alice", "bob") != "dm:alice:bob" {
		t.Fatalf("DMID not symmetric: %q", DMID("bob", "alice"))
	}
	for _, tc := range []struct {
		id   string
		a, b string
		ok   bool
	}{
		{"dm:alice:bob", "alice", "bob", true},
		{"dm:A.b@c-d_e:z", "A.b@c-d_e", "z", true},
		{"dm:bob:alice", "", "", false},
		{"dm:alice:alice", "", "", false},
		{"dm:alice", "", "", false},
		{"dm:alice:bob:carol", "", "", false},
		{"dm::bob", "", "", false},
		{"g:alice:bob", "", "", false},
		{"dm:al ice:bob", "", "", false},
	} {
		a, b, ok := ParseDM(tc.id)
		if ok != tc.ok || a != tc.a || b != tc.b {
			t.Errorf("ParseDM(%q) = %q, %q, %v", tc.id, a, b, ok)
		}
	}
}

func TestValidUserID(t *testing.T) {
	long := make([]byte, 65)
	for i := range long {
		long[i] = 'a'
	}
	for id, want := range map[string]bool{
		"alice": true, "a.b_c@d-e": true, "A9": true, string(long[:64]): true,
		"": false, string(long): false, "a:b": false, "a b": false, "é": false, "a/b": false,
	} {
		if ValidUserID(id) != want {
			t.Errorf("ValidUserID(%q) = %v", id, !want)
		}
	}
}

func TestCheckConversationID(t *testing.T) {
	for id, ok := range map[string]bool{
		"dm:alice:bob": true, "g:1": true, "g:1234567890123456789": true,
		"": false, "g:": false, "g:12a": false, "g:123456789012345678901": false,
		"dm:bob:alice": false, "x:1": false, "alice": false,
	} {
		if err := CheckConversationID(id); (err == nil) != ok {
			t.Errorf("CheckConversationID(%q) = %v", id, err)
		}
	}
}
