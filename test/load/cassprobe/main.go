// Command cassprobe measures what one message write costs Cassandra's CPU
// under three ways of committing it, to decide whether a commit point per
// ingress partition (docs/partition-commit.md) is worth its fencing redesign
// (issue 11). It is a load tool, not part of the product.
//
// For --duration it writes --rate rows a second, spread over --convs
// conversation partitions of its own keyspace (cassprobe, created if
// missing), in one of three modes:
//
//   - lwt: one INSERT … IF NOT EXISTS per row (a Paxos round), what Append
//     does today for a DM send;
//   - plain: one INSERT USING TIMESTAMP per row plus, for every --per-read
//     rows, one read of an epoch row (the fence read of the design);
//   - batch: --per-read rows of different conversations in one unlogged
//     batch, then one epoch read (the design with group commit across
//     conversations).
//
// It samples --pid's CPU time (/proc/PID/stat) over the run and prints one
// line: mode, rows written, Cassandra cores and CPU-ms per row.
//
//	cassprobe --pid $(cat .deps/cassandra/cassandra.pid) --mode lwt --rate 2000 --duration 15s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	gocql "github.com/apache/cassandra-gocql-driver/v2"

	"github.com/parleychat/parley/runtime/bench"
)

func main() {
	var (
		mode     = flag.String("mode", "lwt", "lwt, plain or batch")
		rate     = flag.Int("rate", 2000, "rows written per second")
		duration = flag.Duration("duration", 15*time.Second, "how long to write")
		convs    = flag.Int("convs", 200, "conversation partitions the rows are spread over")
		perRead  = flag.Int("per-read", 4, "rows per epoch read (plain), rows per batch (batch)")
		pid      = flag.Int("pid", 0, "Cassandra's process id, whose CPU time is sampled")
		host     = flag.String("host", "127.0.0.1", "Cassandra contact point")
	)
	flag.Parse()
	if err := run(*mode, *rate, *duration, *convs, *perRead, *pid, *host); err != nil {
		fmt.Fprintln(os.Stderr, "cassprobe:", err)
		os.Exit(1)
	}
}

func run(mode string, rate int, duration time.Duration, convs, perRead, pid int, host string) error {
	if mode != "lwt" && mode != "plain" && mode != "batch" {
		return fmt.Errorf("--mode %q: want lwt, plain or batch", mode)
	}
	if rate < 1 || convs < 1 || perRead < 1 || pid < 1 {
		return errors.New("--rate, --convs, --per-read and --pid must be positive")
	}
	cluster := gocql.NewCluster(host)
	cluster.Consistency = gocql.LocalQuorum
	cluster.SerialConsistency = gocql.LocalSerial
	cluster.Timeout = 5 * time.Second
	sess, err := cluster.CreateSession()
	if err != nil {
		return fmt.Errorf("connect %s: %w", host, err)
	}
	defer sess.Close()
	ctx, cancel := context.WithTimeout(context.Background(), duration+time.Minute)
	defer cancel()
	for _, q := range []string{
		`CREATE KEYSPACE IF NOT EXISTS cassprobe WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`,
		`CREATE TABLE IF NOT EXISTS cassprobe.messages (conversation_id text, bucket bigint, seq bigint, body text, PRIMARY KEY ((conversation_id, bucket), seq))`,
		`CREATE TABLE IF NOT EXISTS cassprobe.epochs (partition int PRIMARY KEY, epoch bigint)`,
		`INSERT INTO cassprobe.epochs (partition, epoch) VALUES (0, 1)`,
	} {
		if err := sess.Query(q).ExecContext(ctx); err != nil {
			return fmt.Errorf("schema: %w", err)
		}
	}
	const body = "a chat message of a typical length, thirty-odd bytes"
	insert := `INSERT INTO cassprobe.messages (conversation_id, bucket, seq, body) VALUES (?, 0, ?, ?)`
	readEpoch := func() error {
		var e int64
		return sess.Query(`SELECT epoch FROM cassprobe.epochs WHERE partition = 0`).ScanContext(ctx, &e)
	}
	// Each run writes fresh conversations, so every lwt insert is applied.
	prefix := strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
	seqs := make([]int64, convs)

	// write stores rows (conversation index, seq); n is the first row's number.
	write := func(n int, rows [][2]int64) error {
		switch mode {
		case "lwt":
			_, err := sess.Query(insert+" IF NOT EXISTS", prefix+strconv.FormatInt(rows[0][0], 10), rows[0][1], body).ScanCASContext(ctx)
			return err
		case "plain":
			if err := sess.Query(insert+" USING TIMESTAMP ?", prefix+strconv.FormatInt(rows[0][0], 10), rows[0][1], body, time.Now().UnixMicro()).ExecContext(ctx); err != nil {
				return err
			}
			if n%perRead == 0 {
				return readEpoch()
			}
			return nil
		default:
			b := sess.Batch(gocql.UnloggedBatch)
			for _, r := range rows {
				b.Query(insert+" USING TIMESTAMP ?", prefix+strconv.FormatInt(r[0], 10), r[1], body, time.Now().UnixMicro())
			}
			if err := b.ExecContext(ctx); err != nil {
				return err
			}
			return readEpoch()
		}
	}
	step := 1
	if mode == "batch" {
		step = perRead
	}
	interval := time.Second * time.Duration(step) / time.Duration(rate)

	var (
		wg       sync.WaitGroup
		failures atomic.Int64
		firstErr atomic.Value
		sem      = make(chan struct{}, 256)
		rows     int
		lats     = bench.NewHistogram() // each request's latency
	)
	cpu0, err := bench.ProcCPU(pid)
	if err != nil {
		return fmt.Errorf("cpu of pid %d: %w", pid, err)
	}
	start := time.Now()
	for next := start; time.Since(start) < duration; next = next.Add(interval) {
		time.Sleep(time.Until(next))
		batch := make([][2]int64, step)
		for k := range batch {
			c := (rows + k) % convs
			seqs[c]++
			batch[k] = [2]int64{int64(c), seqs[c]}
		}
		n := rows
		rows += step
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			t0 := time.Now()
			err := write(n, batch)
			lats.Record(time.Since(t0))
			if err != nil {
				failures.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	cpu1, err := bench.ProcCPU(pid)
	if err != nil {
		return fmt.Errorf("cpu of pid %d: %w", pid, err)
	}
	if f := failures.Load(); f > 0 {
		return fmt.Errorf("%d of the requests failed, the first: %v", f, firstErr.Load())
	}
	used := cpu1 - cpu0
	lat := lats.Summary()
	fmt.Printf("mode=%s rate=%d rows=%d rows_per_s=%.0f cassandra_cores=%.3f cpu_ms_per_row=%.3f request_ms_p50=%.2f p99=%.2f\n",
		mode, rate, rows, float64(rows)/wall.Seconds(), used.Seconds()/wall.Seconds(),
		float64(used.Microseconds())/1000/float64(rows), lat.P50, lat.P99)
	return nil
}
