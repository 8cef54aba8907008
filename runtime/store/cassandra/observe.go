package cassandra

import (
	"context"
	"strings"
	"sync"

	gocql "github.com/apache/cassandra-gocql-driver/v2"
)

// observer reports every statement the driver executes to Config.OnStatement
// by kind: its verb and table, "conditional" when it has an IF clause, and
// "batch of" the first statement's kind for a batch, e.g. "insert receipts",
// "conditional insert messages", "batch of conditional insert messages".
// Kinds are derived once per statement text (the store's statements are a
// fixed set), so the label set stays small.
type observer struct {
	fn    func(kind string)
	kinds sync.Map // statement text -> kind
}

func (o *observer) ObserveQuery(_ context.Context, q gocql.ObservedQuery) {
	o.fn(o.kind(q.Statement))
}

func (o *observer) ObserveBatch(_ context.Context, b gocql.ObservedBatch) {
	first := ""
	if len(b.Statements) > 0 {
		first = b.Statements[0]
	}
	o.fn("batch of " + o.kind(first))
}

func (o *observer) kind(stmt string) string {
	if k, ok := o.kinds.Load(stmt); ok {
		return k.(string)
	}
	k := statementKind(stmt)
	o.kinds.Store(stmt, k)
	return k
}

// statementKind names a CQL statement by verb and table ("select
// messages"), prefixed "conditional " when it carries an IF clause.
func statementKind(stmt string) string {
	fs := strings.Fields(strings.ToLower(stmt))
	if len(fs) == 0 {
		return "empty"
	}
	verb, table := fs[0], ""
	after := map[string]string{"select": "from", "delete": "from", "insert": "into", "update": "update"}[verb]
	for i, f := range fs[:len(fs)-1] {
		if after != "" && f == after {
			table = fs[i+1]
			if j := strings.LastIndexByte(table, '.'); j >= 0 {
				table = table[j+1:]
			}
			table, _, _ = strings.Cut(table, "(")
			break
		}
	}
	kind := verb
	if table != "" {
		kind += " " + table
	}
	for _, f := range fs[1:] {
		if f == "if" {
			return "conditional " + kind
		}
	}
	return kind
}
