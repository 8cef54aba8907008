package redis

import (
	"context"
	"errors"
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// Session writes (Touch, Remove) go through a writer: concurrent calls are
// coalesced into one pipeline of script calls (each atomic on its user's
// keys) per round trip, so a connect storm or the end of one — every client of a
// gateway disconnecting at once — costs a few hundred round trips instead
// of one pool connection per session. Measured before: 100,000 clients
// closing at once over 7 gateways left ~13,000 removals per gateway timed
// out in the pool after 5 s (docs/benchmarks.md). Decision: the writer
// batches only what is already waiting, it never waits to fill a batch, so
// a lone call costs what it did.

const (
	// writeWorkers pipelines may be in flight at once.
	writeWorkers = 4
	// maxWriteBatch bounds the scripts of one pipeline.
	maxWriteBatch = 512
)

// writeOp is one script call (touchLua or removeLua) and where its outcome
// goes (buffered: the caller may have given up).
type writeOp struct {
	script *goredis.Script
	keys   []string
	args   []any
	done   chan error
}

// writer runs the workers that send queued writeOps in pipelines.
type writer struct {
	c     *goredis.Client
	bound func(context.Context) (context.Context, context.CancelFunc)
	ops   chan *writeOp

	stop chan struct{}
	wg   sync.WaitGroup
}

func newWriter(c *goredis.Client, bound func(context.Context) (context.Context, context.CancelFunc)) *writer {
	w := &writer{c: c, bound: bound, ops: make(chan *writeOp, maxWriteBatch*writeWorkers), stop: make(chan struct{})}
	for range writeWorkers {
		w.wg.Go(w.run)
	}
	return w
}

// do queues a call of script and waits for its outcome or ctx.
func (w *writer) do(ctx context.Context, script *goredis.Script, keys []string, args ...any) error {
	op := &writeOp{script: script, keys: keys, args: args, done: make(chan error, 1)}
	select {
	case w.ops <- op:
	case <-ctx.Done():
		return ctx.Err()
	case <-w.stop:
		return ErrClosed
	}
	select {
	case err := <-op.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *writer) run() {
	batch := make([]*writeOp, 0, maxWriteBatch)
	for {
		select {
		case <-w.stop:
			w.fail()
			return
		case op := <-w.ops:
			batch = append(batch[:0], op)
		}
	more:
		for len(batch) < maxWriteBatch {
			select {
			case op := <-w.ops:
				batch = append(batch, op)
			default:
				break more
			}
		}
		w.send(batch)
		clear(batch)
	}
}

// send runs batch as one pipeline of EVALSHA; scripts missing from the
// server's cache (after a restart or SCRIPT FLUSH) are run again with EVAL.
func (w *writer) send(batch []*writeOp) {
	ctx, cancel := w.bound(context.Background())
	defer cancel()
	cmds := make([]*goredis.Cmd, len(batch))
	_, _ = w.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, op := range batch {
			cmds[i] = op.script.EvalSha(ctx, p, op.keys, op.args...)
		}
		return nil
	})
	var retry []int
	for i, cmd := range cmds {
		if err := cmd.Err(); err != nil && goredis.HasErrorPrefix(err, "NOSCRIPT") {
			retry = append(retry, i)
			continue
		}
		batch[i].done <- nilIfRedisNil(cmds[i].Err())
	}
	if len(retry) == 0 {
		return
	}
	_, _ = w.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for _, i := range retry {
			cmds[i] = batch[i].script.Eval(ctx, p, batch[i].keys, batch[i].args...)
		}
		return nil
	})
	for _, i := range retry {
		batch[i].done <- nilIfRedisNil(cmds[i].Err())
	}
}

// fail answers what is still queued once the writer stops.
func (w *writer) fail() {
	for {
		select {
		case op := <-w.ops:
			op.done <- ErrClosed
		default:
			return
		}
	}
}

// close stops the workers; calls in flight finish first.
func (w *writer) close() {
	close(w.stop)
	w.wg.Wait()
}

// nilIfRedisNil maps the nil reply of a script that returns nothing to
// success.
func nilIfRedisNil(err error) error {
	if errors.Is(err, goredis.Nil) {
		return nil
	}
	return err
}
