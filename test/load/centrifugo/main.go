// Command centrifugo is the Centrifugo side of hack/bench-compare.sh (issue
// 5, "Side by side with a peer"): the idle and fanout workloads of `parley
// bench`, run against a Centrifugo v6 server over raw gorilla/websocket and
// Centrifugo's JSON protocol (client protocol v2), kept out of the product.
//
//   - idle: N authenticated connections (HS256 connection JWTs) held for
//     -duration, answering the server's pings; server RSS per connection
//     from /proc/PID/status of -server-pid, read once all are connected
//     (as `parley bench idle` does), after -settle and after the hold.
//   - fanout: M subscribers of one channel, publishes through the server
//     HTTP API (POST /api/publish, X-API-Key) at -rate for -duration; each
//     payload carries its send time, so send→each member and send→last
//     member latency are measured on this process's clock. The CPU time of
//     -server-pid and of this process over the send phase (from the first
//     publish until every publish is answered; /proc/PID/stat, read with
//     runtime/bench's ProcCPU) is reported under the names `parley bench
//     fanout --proc server=PID` uses: cpu_ms_per_1k_sends.server,
//     cpu_cores.server, cpu_sys_share.server, and .bench for this process
//     (the load generator).
//
// It prints one JSON object shaped like `parley bench --json` (scenario,
// params, figures, latency_ms).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/gorilla/websocket"

	"github.com/parleychat/parley/runtime/bench"
)

type percentiles struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

type result struct {
	Scenario string                 `json:"scenario"`
	Target   string                 `json:"target"`
	Params   map[string]any         `json:"params"`
	Figures  map[string]float64     `json:"figures"`
	Latency  map[string]percentiles `json:"latency_ms,omitempty"`
	Notes    []string               `json:"notes,omitempty"`
}

// hist is a mutex-guarded HdrHistogram of microseconds (1µs..5min).
type hist struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func newHist() *hist { return &hist{h: hdrhistogram.New(1, 300_000_000, 3)} }

func (h *hist) record(d time.Duration) {
	us := d.Microseconds()
	if us < 1 {
		us = 1
	}
	h.mu.Lock()
	_ = h.h.RecordValue(us)
	h.mu.Unlock()
}

func (h *hist) summary() percentiles {
	h.mu.Lock()
	defer h.mu.Unlock()
	ms := func(v int64) float64 { return float64(v) / 1000 }
	return percentiles{Count: h.h.TotalCount(), P50: ms(h.h.ValueAtQuantile(50)), P90: ms(h.h.ValueAtQuantile(90)),
		P99: ms(h.h.ValueAtQuantile(99)), P999: ms(h.h.ValueAtQuantile(99.9)), Max: ms(h.h.Max())}
}

// token is an HS256 connection JWT for user (Centrifugo: sub = user id).
func token(secret []byte, user string, ttl time.Duration) string {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body := enc.EncodeToString(fmt.Appendf(nil, `{"sub":%q,"exp":%d}`, user, time.Now().Add(ttl).Unix()))
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(head + "." + body))
	return head + "." + body + "." + enc.EncodeToString(m.Sum(nil))
}

type conn struct {
	ws  *websocket.Conn
	wmu sync.Mutex
}

func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// dial connects, sends connect (and subscribe when channel != "") in one
// frame and waits for their replies.
func dial(ctx context.Context, url string, secret []byte, user, channel string) (*conn, error) {
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
	ws, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	c := &conn{ws: ws}
	cmd := fmt.Sprintf(`{"id":1,"connect":{"token":%q,"name":"bench"}}`, token(secret, user, 24*time.Hour))
	want := 1
	if channel != "" {
		cmd += fmt.Sprintf("\n"+`{"id":2,"subscribe":{"channel":%q}}`, channel)
		want = 2
	}
	if err := c.write([]byte(cmd)); err != nil {
		_ = ws.Close()
		return nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	for got := 0; got < want; {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			_ = ws.Close()
			return nil, err
		}
		for _, line := range bytes.Split(msg, []byte("\n")) {
			var r struct {
				ID    int             `json:"id"`
				Error json.RawMessage `json:"error"`
			}
			if len(bytes.TrimSpace(line)) == 0 || json.Unmarshal(line, &r) != nil || r.ID == 0 {
				continue
			}
			if r.Error != nil {
				_ = ws.Close()
				return nil, fmt.Errorf("reply %d: %s", r.ID, r.Error)
			}
			got++
		}
	}
	_ = ws.SetReadDeadline(time.Time{})
	return c, nil
}

// readLoop answers pings (an empty command {}) and hands pushes to onPush
// until the connection fails.
func (c *conn) readLoop(onPush func(line []byte)) error {
	for {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			return err
		}
		for _, line := range bytes.Split(msg, []byte("\n")) {
			line = bytes.TrimSpace(line)
			if len(line) == 0 {
				continue
			}
			if string(line) == "{}" {
				if err := c.write([]byte("{}")); err != nil {
					return err
				}
				continue
			}
			if onPush != nil {
				onPush(line)
			}
		}
	}
}

func rssKiB(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// cpuMark is the CPU time of the server and of this process at one instant
// (-1: unreadable), and of it the kernel's.
type cpuMark struct {
	at                 time.Time
	server, self       time.Duration
	serverSys, selfSys time.Duration
}

func markCPU(serverPID int) cpuMark {
	m := cpuMark{at: time.Now(), server: -1, self: -1}
	if serverPID > 0 {
		if user, sys, err := bench.ProcCPUSplit(serverPID); err == nil {
			m.server, m.serverSys = user+sys, sys
		}
	}
	if user, sys, err := bench.ProcCPUSplit(os.Getpid()); err == nil {
		m.self, m.selfSys = user+sys, sys
	}
	return m
}

// into adds to r the CPU each process used since m, per 1,000 of ops and in
// cores, under the figure names of `parley bench --proc`
// ("cpu_ms_per_1k_<what>.NAME", "cpu_cores.NAME", "cpu_sys_share.NAME";
// NAME server, bench for this process, total for the server alone as there
// the load generator is excluded).
func (m cpuMark) into(r *result, serverPID int, what string, ops int64) {
	end := markCPU(serverPID)
	wall := end.at.Sub(m.at)
	add := func(name string, from, to, fromSys, toSys time.Duration) {
		if from < 0 || to < 0 {
			r.Notes = append(r.Notes, fmt.Sprintf("CPU of %s could not be read", name))
			return
		}
		d := to - from
		if ops > 0 {
			r.Figures["cpu_ms_per_1k_"+what+"."+name] = round3(float64(d) / float64(time.Millisecond) * 1000 / float64(ops))
		}
		if wall > 0 {
			r.Figures["cpu_cores."+name] = round3(float64(d) / float64(wall))
		}
		if share, ok := bench.SysShare(from-fromSys, fromSys, to-toSys, toSys); ok {
			r.Figures["cpu_sys_share."+name] = share
		}
	}
	if serverPID > 0 {
		add("server", m.server, end.server, m.serverSys, end.serverSys)
		add("total", m.server, end.server, m.serverSys, end.serverSys)
	}
	add("bench", m.self, end.self, m.selfSys, end.selfSys)
	r.Notes = append(r.Notes, fmt.Sprintf("CPU per process over the %.1f s send phase, from /proc/PID/stat (10 ms resolution); total excludes the load generator (bench); cpu_sys_share: the kernel's part (stime)", wall.Seconds()))
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func main() {
	var (
		url      = flag.String("url", "ws://127.0.0.1:18000/connection/websocket", "Centrifugo WebSocket endpoint")
		api      = flag.String("api", "http://127.0.0.1:18000/api", "Centrifugo server API prefix")
		apiKey   = flag.String("api-key", "", "server API key (X-API-Key)")
		secret   = flag.String("secret", "", "HMAC secret of connection tokens")
		pid      = flag.Int("server-pid", 0, "Centrifugo pid, for RSS (idle) and CPU (fanout)")
		n        = flag.Int("n", 5000, "idle: connections")
		members  = flag.Int("members", 500, "fanout: subscribers")
		rate     = flag.Float64("rate", 100, "fanout: publishes per second")
		channel  = flag.String("channel", "bench:fanout", "fanout: channel (namespace bench)")
		duration = flag.Duration("duration", 10*time.Second, "idle hold / publish phase")
		settle   = flag.Duration("settle", 5*time.Second, "idle: wait before reading RSS")
		conc     = flag.Int("concurrency", 32, "parallel dials")
	)
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: centrifugo [flags] idle|fanout")
		os.Exit(2)
	}
	ctx := context.Background()
	var (
		r   *result
		err error
	)
	switch flag.Arg(0) {
	case "idle":
		r, err = idle(ctx, *url, []byte(*secret), *pid, *n, *conc, *settle, *duration)
	case "fanout":
		r, err = fanout(ctx, *url, *api, *apiKey, []byte(*secret), *pid, *channel, *members, *conc, *rate, *duration)
	default:
		err = fmt.Errorf("unknown scenario %q", flag.Arg(0))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "centrifugo load:", err)
		os.Exit(1)
	}
	r.Target = *url
	b, _ := json.MarshalIndent(r, "", "  ")
	fmt.Println(string(b))
}

// connectAll dials n connections with conc parallel dials.
func connectAll(ctx context.Context, url string, secret []byte, prefix, channel string, n, conc int, onPush func(i int, line []byte)) ([]*conn, int64, time.Duration) {
	conns := make([]*conn, n)
	var failed atomic.Int64
	next := atomic.Int64{}
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := dial(ctx, url, secret, prefix+strconv.Itoa(i), channel)
				if err != nil {
					if failed.Add(1) <= 3 {
						fmt.Fprintln(os.Stderr, "dial:", err)
					}
					continue
				}
				conns[i] = c
				go func() {
					var f func([]byte)
					if onPush != nil {
						f = func(line []byte) { onPush(i, line) }
					}
					_ = c.readLoop(f)
				}()
			}
		}()
	}
	wg.Wait()
	return conns, failed.Load(), time.Since(start)
}

func idle(ctx context.Context, url string, secret []byte, pid, n, conc int, settle, hold time.Duration) (*result, error) {
	r := &result{Scenario: "idle", Params: map[string]any{"n": n, "duration": hold.String()}, Figures: map[string]float64{}}
	before := rssKiB(pid)
	conns, failed, dur := connectAll(ctx, url, secret, "ci"+strconv.FormatInt(time.Now().UnixNano()%1e6, 10)+"-", "", n, conc, nil)
	connected := int64(n) - failed
	atConnect := rssKiB(pid)
	time.Sleep(settle)
	settled := rssKiB(pid)
	time.Sleep(hold)
	after := rssKiB(pid)
	open := 0
	for _, c := range conns {
		if c != nil {
			open++
			_ = c.ws.Close()
		}
	}
	r.Figures["connected"], r.Figures["failed"] = float64(connected), float64(failed)
	r.Figures["connect_seconds"] = dur.Seconds()
	r.Figures["server_rss_before_mib"] = float64(before) / 1024
	r.Figures["server_rss_settled_mib"] = float64(settled) / 1024
	r.Figures["server_rss_after_hold_mib"] = float64(after) / 1024
	r.Figures["server_rss_connected_mib"] = float64(atConnect) / 1024
	if connected > 0 {
		r.Figures["server_rss_per_conn_connected_kib"] = float64(atConnect-before) / float64(connected)
		r.Figures["server_rss_per_conn_settled_kib"] = float64(settled-before) / float64(connected)
		r.Figures["server_rss_per_conn_after_hold_kib"] = float64(after-before) / float64(connected)
	}
	r.Notes = append(r.Notes, "raw gorilla/websocket clients, Centrifugo JSON protocol, HS256 connection JWTs; clients in a separate process")
	return r, nil
}

func fanout(ctx context.Context, url, api, apiKey string, secret []byte, pid int, channel string, members, conc int, rate float64, dur time.Duration) (*result, error) {
	r := &result{Scenario: "fanout", Params: map[string]any{"members": members, "rate_per_sec": rate, "duration": dur.String()},
		Figures: map[string]float64{}, Latency: map[string]percentiles{}}
	type msg struct{ got atomic.Int64 }
	var (
		msgs      sync.Map
		each      = newHist()
		last      = newHist()
		pubLat    = newHist()
		delivered atomic.Int64
		complete  atomic.Int64
	)
	onPush := func(_ int, line []byte) {
		var p struct {
			Push struct {
				Pub struct {
					Data struct {
						T int64 `json:"t"`
						K int64 `json:"k"`
					} `json:"data"`
				} `json:"pub"`
			} `json:"push"`
		}
		if json.Unmarshal(line, &p) != nil || p.Push.Pub.Data.T == 0 {
			return
		}
		lat := time.Since(time.Unix(0, p.Push.Pub.Data.T))
		delivered.Add(1)
		each.record(lat)
		if v, ok := msgs.Load(p.Push.Pub.Data.K); ok && v.(*msg).got.Add(1) == int64(members) {
			last.record(lat)
			complete.Add(1)
		}
	}
	setup := time.Now()
	conns, failed, _ := connectAll(ctx, url, secret, "cf"+strconv.FormatInt(time.Now().UnixNano()%1e6, 10)+"-", channel, members, conc, onPush)
	if failed > 0 {
		return nil, fmt.Errorf("%d of %d subscribers failed", failed, members)
	}
	r.Figures["setup_seconds"] = time.Since(setup).Seconds()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64,
		DialContext: (&net.Dialer{}).DialContext}}
	var ok, errs atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	interval := time.Duration(float64(time.Second) / rate)
	cpu := markCPU(pid)
	start := time.Now()
	due := int64(dur.Seconds() * rate)
	for k := int64(1); k <= due; k++ {
		if d := time.Until(start.Add(time.Duration(k-1) * interval)); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func(k int64) {
			defer wg.Done()
			defer func() { <-sem }()
			msgs.Store(k, &msg{})
			t0 := time.Now()
			body := fmt.Sprintf(`{"channel":%q,"data":{"t":%d,"k":%d,"text":"bench message payload"}}`, channel, t0.UnixNano(), k)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, api+"/publish", strings.NewReader(body))
			req.Header.Set("X-API-Key", apiKey)
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				errs.Add(1)
				return
			}
			var out struct {
				Error json.RawMessage `json:"error"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&out)
			_ = resp.Body.Close()
			if resp.StatusCode != 200 || out.Error != nil {
				errs.Add(1)
				return
			}
			pubLat.record(time.Since(t0))
			ok.Add(1)
		}(k)
	}
	wg.Wait()
	sendDur := time.Since(start)
	cpu.into(r, pid, "sends", ok.Load())
	// Drain: wait until every delivery arrived or 10 s passed.
	for deadline := time.Now().Add(10 * time.Second); delivered.Load() < ok.Load()*int64(members) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range conns {
		_ = c.ws.Close()
	}
	r.Figures["sends_due"], r.Figures["sends_ok"], r.Figures["send_errors"] = float64(due), float64(ok.Load()), float64(errs.Load())
	r.Figures["deliveries"] = float64(delivered.Load())
	r.Figures["deliveries_expected"] = float64(ok.Load() * int64(members))
	r.Figures["messages_fully_delivered"] = float64(complete.Load())
	r.Figures["sends_per_sec"] = float64(ok.Load()) / sendDur.Seconds()
	r.Figures["deliveries_per_sec"] = float64(delivered.Load()) / sendDur.Seconds()
	r.Latency["send_to_each_member"] = each.summary()
	r.Latency["send_to_last_member"] = last.summary()
	r.Latency["send_to_send_ok"] = pubLat.summary()
	r.Notes = append(r.Notes, "publisher uses the server HTTP API; subscribers are raw gorilla/websocket clients in this process (same machine as the server)")
	return r, nil
}
