package rollout

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleychat/parley/runtime/auth"
	pclient "github.com/parleychat/parley/runtime/client"
)

// The test binary re-executes itself as a load child when this variable holds a loadConfig
// (JSON): the child runs SDK clients in DM pairs, reports on stdout one JSON line per phase and,
// at the end, one per client.
const loadChildEnv = "PARLEY_ROLLOUT_LOAD_CHILD"

// loadConfig is the work of one load child.
type loadConfig struct {
	// Resolver is the parent's endpoint resolver: GET <Resolver>/resolve?addr=<service:port>
	// answers the IP:port of a Ready endpoint of the Service (see serviceDialer).
	Resolver string `json:"resolver"`
	// Service is the client Service, "<name>:<port>".
	Service string `json:"service"`
	// Home is the home_region claim of the clients' tokens ("": none, so a user's home is the
	// region of its first connection).
	Home string `json:"home,omitempty"`
	// PeerService and PeerHome, when PeerService is set, replace Service and Home for the second
	// client of each pair (odd index): a DM across two regions.
	PeerService string `json:"peer_service,omitempty"`
	PeerHome    string `json:"peer_home,omitempty"`
	// SecretDir holds the cluster's dev secret; the child issues its users' tokens with it.
	SecretDir string `json:"secret_dir"`
	// N clients, users Prefix<Offset>…Prefix<Offset+N-1>, paired (2k, 2k+1); N is even.
	Prefix string `json:"prefix"`
	Offset int    `json:"offset"`
	N      int    `json:"n"`
	// Each pair sends one message every SendMin..SendMax (uniform jitter), the two sides in turn.
	SendMin time.Duration `json:"send_min"`
	SendMax time.Duration `json:"send_max"`
	// Settle bounds the wait, after "stop", for every acknowledged message to be shown to both
	// sides of its DM.
	Settle time.Duration `json:"settle"`
}

// loadLine is one line a load child prints.
type loadLine struct {
	Phase string `json:"phase"` // "connected", "client", "done"
	// connected
	Connected int    `json:"connected,omitempty"`
	Failed    int    `json:"failed,omitempty"`
	FirstErr  string `json:"first_err,omitempty"`
	// done
	Settled bool `json:"settled,omitempty"`
	// client
	Client *clientReport `json:"client,omitempty"`
}

// clientReport is what one client did and was shown.
type clientReport struct {
	ID   string `json:"id"`
	Peer string `json:"peer"`
	Conv string `json:"conv"`
	// Acked are the messages this client sent that the server acknowledged (send_ok).
	Acked []ackedMsg `json:"acked"`
	// Shown is every MessageEvent of Conv: seq → text.
	Shown map[uint64]string `json:"shown"`
	// Duplicates counts MessageEvents of a (conversation, seq) already shown.
	Duplicates int `json:"duplicates"`
	// Reconnects counts ReconnectedEvents.
	Reconnects int    `json:"reconnects"`
	SendErrors int    `json:"send_errors"`
	SendErr    string `json:"send_err,omitempty"`
}

// side returns the Service and home claim of client i (Offset is even, so i's parity is its
// side of the pair).
func (cfg loadConfig) side(i int) (service, home string) {
	if i%2 == 1 && cfg.PeerService != "" {
		return cfg.PeerService, cfg.PeerHome
	}
	return cfg.Service, cfg.Home
}

type ackedMsg struct {
	Seq  uint64 `json:"seq"`
	Text string `json:"text"`
}

// loadClient is one SDK client of a child.
type loadClient struct {
	rep clientReport
	c   *pclient.Client

	mu sync.Mutex
}

func (lc *loadClient) onEvent(ev pclient.Event) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	switch e := ev.(type) {
	case pclient.MessageEvent:
		m := e.Message
		if m.GetConversationId() != lc.rep.Conv {
			return
		}
		if _, seen := lc.rep.Shown[m.GetSeq()]; seen {
			lc.rep.Duplicates++
		}
		lc.rep.Shown[m.GetSeq()] = m.GetText()
	case pclient.ReconnectedEvent:
		lc.rep.Reconnects++
	}
}

// runLoadChild is the body of a load child: connect, report "connected", send until a line
// arrives on stdin, settle, report every client, report "done".
func runLoadChild(raw string) int {
	var cfg loadConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "load child: config: %v\n", err)
		return 2
	}
	secret, err := auth.LoadOrCreateDevSecret(cfg.SecretDir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "load child: secret: %v\n", err)
		return 2
	}
	issuer := auth.NewDevIssuer(secret)
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	enc := json.NewEncoder(out)
	emit := func(l loadLine) {
		_ = enc.Encode(l)
		_ = out.Flush()
	}

	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	resolve := func(ctx context.Context, addr string) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Resolver+"/resolve?addr="+url.QueryEscape(addr), nil)
		if err != nil {
			return "", err
		}
		resp, err := httpc.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("resolve %s: %s", addr, strings.TrimSpace(string(b)))
		}
		return strings.TrimSpace(string(b)), nil
	}
	wsDialer := &websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		target, err := resolve(ctx, addr)
		if err != nil {
			return nil, err
		}
		var nd net.Dialer
		return nd.DialContext(ctx, network, target)
	}}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	clients := make([]*loadClient, cfg.N)
	for i := range clients {
		id := cfg.Prefix + strconv.Itoa(cfg.Offset+i)
		peer := cfg.Prefix + strconv.Itoa(cfg.Offset+(i^1))
		clients[i] = &loadClient{rep: clientReport{ID: id, Peer: peer, Conv: dmID(id, peer), Shown: map[uint64]string{}}}
	}

	// Connect, 32 at a time, each with a few attempts.
	ctx := context.Background()
	var (
		failed   atomic.Int64
		firstErr atomic.Pointer[string]
		wg       sync.WaitGroup
		sem      = make(chan struct{}, 32)
	)
	for i, lc := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			service, home := cfg.side(i)
			tok, err := issuer.IssueHome(lc.rep.ID, "", home, 4*time.Hour)
			if err == nil {
				for attempt := 0; attempt < 5; attempt++ {
					dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					lc.c, err = pclient.Dial(dctx, pclient.Options{
						URL:     "ws://" + service,
						Token:   tok,
						Dialer:  wsDialer,
						Backoff: pclient.Backoff{Min: 250 * time.Millisecond, Max: 5 * time.Second},
						OnEvent: lc.onEvent,
						Logger:  quiet,
					})
					cancel()
					if err == nil {
						return
					}
					time.Sleep(time.Duration(500+rand.IntN(1000)) * time.Millisecond)
				}
			}
			failed.Add(1)
			s := fmt.Sprintf("%s: %v", lc.rep.ID, err)
			firstErr.CompareAndSwap(nil, &s)
		}()
	}
	wg.Wait()
	l := loadLine{Phase: "connected", Connected: cfg.N - int(failed.Load()), Failed: int(failed.Load())}
	if p := firstErr.Load(); p != nil {
		l.FirstErr = *p
	}
	emit(l)
	if failed.Load() > 0 {
		return 1
	}

	// Send until the parent says stop (or goes away).
	stop := make(chan struct{})
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		close(stop)
	}()
	var senders sync.WaitGroup
	for k := 0; k+1 < len(clients); k += 2 {
		pair := [2]*loadClient{clients[k], clients[k+1]}
		senders.Add(1)
		go func() {
			defer senders.Done()
			// Spread the pairs' first sends over one period.
			wait := time.Duration(rand.Int64N(int64(cfg.SendMax)))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-time.After(wait):
				}
				wait = cfg.SendMin + time.Duration(rand.Int64N(int64(cfg.SendMax-cfg.SendMin)+1))
				from := pair[n%2]
				text := fmt.Sprintf("%s#%d", from.rep.ID, n)
				sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
				ok, err := from.c.Send(sctx, from.rep.Conv, text)
				cancel()
				from.mu.Lock()
				if err != nil {
					from.rep.SendErrors++
					if from.rep.SendErr == "" {
						from.rep.SendErr = err.Error()
					}
				} else {
					from.rep.Acked = append(from.rep.Acked, ackedMsg{Seq: ok.GetSeq(), Text: text})
				}
				from.mu.Unlock()
			}
		}()
	}
	<-stop
	senders.Wait() // in-flight sends finish (acknowledged or failed)

	// Settle: every acknowledged message shown on both sides of its DM, or the timeout.
	settled := false
	deadline := time.Now().Add(cfg.Settle)
	for !settled && time.Now().Before(deadline) {
		settled = true
		for k := 0; k+1 < len(clients) && settled; k += 2 {
			a, b := clients[k], clients[k+1]
			for _, from := range []*loadClient{a, b} {
				from.mu.Lock()
				acked := append([]ackedMsg(nil), from.rep.Acked...)
				from.mu.Unlock()
				for _, to := range []*loadClient{a, b} {
					to.mu.Lock()
					for _, m := range acked {
						if _, ok := to.rep.Shown[m.Seq]; !ok {
							settled = false
							break
						}
					}
					to.mu.Unlock()
				}
			}
		}
		if !settled {
			time.Sleep(250 * time.Millisecond)
		}
	}
	for _, lc := range clients {
		lc.mu.Lock()
		rep := lc.rep
		rep.Shown = make(map[uint64]string, len(lc.rep.Shown))
		for k, v := range lc.rep.Shown {
			rep.Shown[k] = v
		}
		lc.mu.Unlock()
		_ = enc.Encode(loadLine{Phase: "client", Client: &rep})
	}
	_ = out.Flush()
	emit(loadLine{Phase: "done", Settled: settled})
	return 0
}

// loadChild is a running load child, as the parent sees it.
type loadChild struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	connected chan loadLine
	done      chan loadLine
	reports   []clientReport
	exited    chan struct{}
	err       error
	stderr    string // the path of its stderr
}

// startLoadChild re-executes the test binary as a load child of cfg; its stderr goes to stderrPath.
func startLoadChild(cfg loadConfig, stderrPath string) (*loadChild, error) {
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	errf, err := os.Create(stderrPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), loadChildEnv+"="+string(raw))
	cmd.Stderr = errf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		errf.Close()
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		errf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		errf.Close()
		return nil, err
	}
	ch := &loadChild{cmd: cmd, stdin: stdin, connected: make(chan loadLine, 1), done: make(chan loadLine, 1), exited: make(chan struct{}), stderr: stderrPath}
	go func() {
		defer close(ch.exited)
		defer errf.Close()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var l loadLine
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			switch l.Phase {
			case "connected":
				ch.connected <- l
			case "client":
				ch.reports = append(ch.reports, *l.Client)
			case "done":
				ch.done <- l
			}
		}
		ch.err = cmd.Wait()
	}()
	return ch, nil
}

// stop tells the child to stop sending and settle.
func (ch *loadChild) stop() { _, _ = io.WriteString(ch.stdin, "stop\n") }

// kill ends the child at once and waits for it.
func (ch *loadChild) kill() {
	if ch.cmd.Process != nil {
		_ = ch.cmd.Process.Kill()
	}
	<-ch.exited
}

// dmID is the DM's conversation id, as runtime/chat/rules.DMID makes it: "dm:<lo>:<hi>" in byte order.
func dmID(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "dm:" + a + ":" + b
}
