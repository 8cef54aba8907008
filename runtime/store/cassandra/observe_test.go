package cassandra

import "testing"

func TestStatementKind(t *testing.T) {
	for stmt, want := range map[string]string{
		"INSERT INTO ks.messages (a, b) VALUES (?, ?) IF NOT EXISTS":                   "conditional insert messages",
		"UPDATE ks.receipts USING TIMESTAMP ? SET delivered_seq = ? WHERE a = ?":       "update receipts",
		"SELECT seq FROM ks.messages WHERE conversation_id = ? AND bucket = ? LIMIT 1": "select messages",
		"DELETE FROM members WHERE conversation_id = ? IF EXISTS":                      "conditional delete members",
		"INSERT INTO t(a) VALUES (?)":                                                  "insert t",
		"  ":                                                                           "empty",
		"TRUNCATE x":                                                                   "truncate",
	} {
		if got := statementKind(stmt); got != want {
			t.Errorf("statementKind(%q) = %q, want %q", stmt, got, want)
		}
	}
}
