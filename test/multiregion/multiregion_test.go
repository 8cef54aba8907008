// Package multiregion checks Parley across two regions, each in its own
// Linux network namespace with its own Kafka and Redis, one Cassandra
// cluster with a datacenter per region, and an 80 ms round trip between
// them: the bed `hack/regions.sh up` builds. `make test-multiregion` starts
// it and runs this package with its environment (`hack/regions.sh env`).
//
// Without that environment the tests skip, unless CI is set: then they fail.
package multiregion

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/auth"
	"github.com/parleychat/parley/runtime/chat/rules"
	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// region is one region of the bed, from hack/regions.sh env.
type region struct {
	name string
	http string // http://addr:port
	data string // data dir holding the dev secret
}

func regions(t testing.TB) map[string]region {
	t.Helper()
	names := os.Getenv("PARLEY_MR_REGIONS")
	if names == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("PARLEY_MR_REGIONS is not set: run through `make test-multiregion` (hack/regions.sh up, then its env)")
		}
		t.Skip("no two-region bed: run `make test-multiregion`")
	}
	out := map[string]region{}
	for _, n := range strings.Split(names, ",") {
		up := strings.ToUpper(n)
		r := region{name: n, http: os.Getenv("PARLEY_MR_" + up + "_HTTP"), data: os.Getenv("PARLEY_MR_" + up + "_DATA")}
		if r.http == "" || r.data == "" {
			t.Fatalf("PARLEY_MR_%s_HTTP or _DATA is not set", up)
		}
		out[n] = r
	}
	if _, ok := out["eu"]; !ok {
		t.Fatalf("regions %q: want eu and us", names)
	}
	if _, ok := out["us"]; !ok {
		t.Fatalf("regions %q: want eu and us", names)
	}
	return out
}

// regionsScript runs hack/regions.sh with args.
func regionsScript(t testing.TB, args ...string) {
	t.Helper()
	script, err := filepath.Abs("../../hack/regions.sh")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, script, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("hack/regions.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("hack/regions.sh %s: done", strings.Join(args, " "))
}

// runID keeps users of different runs apart (the bed's store outlives a run).
var runID = func() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}()

// user returns a fresh user id with name in it; ids sort by name, so tests
// choose which user of a DM is its lower id (its home's deciding user).
func user(name string) string { return name + "-" + runID }

func token(t testing.TB, r region, user, home string) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(r.data, auth.DevSecretFile)); err != nil {
		t.Fatalf("dev secret of region %s: %v", r.name, err)
	}
	secret, err := auth.LoadOrCreateDevSecret(r.data)
	if err != nil {
		t.Fatalf("dev secret of region %s: %v", r.name, err)
	}
	tok, err := auth.NewDevIssuer(secret).IssueHome(user, "d1", home, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// person is an SDK client of one user connected to one region, recording
// every message event.
type person struct {
	user   string
	region region
	c      *client.Client
	rest   *client.REST

	mu       sync.Mutex
	msgs     map[string][]*parleyv1.Message // by conversation, in emitted order
	live     map[string]time.Time           // client_msg_id -> when pushed live
	presence map[string]parleyv1.PresenceStatus
	typing   map[string]bool // "conversation/user" seen typing
}

func connect(t testing.TB, r region, u, home string) *person {
	t.Helper()
	p := &person{user: u, region: r, msgs: map[string][]*parleyv1.Message{}, live: map[string]time.Time{},
		presence: map[string]parleyv1.PresenceStatus{}, typing: map[string]bool{}}
	tok := token(t, r, u, home)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: r.http, Token: tok, OnEvent: p.event})
	if err != nil {
		t.Fatalf("%s dials region %s: %v", u, r.name, err)
	}
	p.c = c
	p.rest = client.NewREST(r.http, tok)
	t.Cleanup(func() { _ = c.Close() })
	return p
}

func (p *person) event(ev client.Event) {
	switch e := ev.(type) {
	case client.PresenceEvent:
		p.mu.Lock()
		p.presence[e.Presence.GetUserId()] = e.Presence.GetStatus()
		p.mu.Unlock()
		return
	case client.TypingEvent:
		p.mu.Lock()
		p.typing[e.Typing.GetConversationId()+"/"+e.Typing.GetUserId()] = true
		p.mu.Unlock()
		return
	}
	me, ok := ev.(client.MessageEvent)
	if !ok {
		return
	}
	m := me.Message
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs[m.GetConversationId()] = append(p.msgs[m.GetConversationId()], m)
	if !me.Pulled {
		p.live[m.GetClientMsgId()] = time.Now()
	}
}

// texts returns the texts p has seen in conv, in order.
func (p *person) texts(conv string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range p.msgs[conv] {
		if m.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_TEXT {
			out = append(out, m.GetText())
		}
	}
	return out
}

// waitTexts waits until p has seen every text of want in conv.
func (p *person) waitTexts(t *testing.T, conv string, want []string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := p.texts(conv)
		missing := 0
		for _, w := range want {
			if !slices.Contains(got, w) {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (in %s) saw %d of %d messages of %s within %s; missing e.g. from %q; saw %q",
				p.user, p.region.name, len(want)-missing, len(want), conv, within, want, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *person) send(t *testing.T, conv, text string) (*parleyv1.SendOk, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return p.c.SendMessage(ctx, &parleyv1.Send{ConversationId: conv, ClientMsgId: text, Content: &parleyv1.Send_Text{Text: text}})
}

func (p *person) mustSend(t *testing.T, conv, text string) *parleyv1.SendOk {
	t.Helper()
	ok, err := p.send(t, conv, text)
	if err != nil {
		t.Fatalf("%s (in %s) sends %q: %v", p.user, p.region.name, text, err)
	}
	return ok
}

// history returns conv's whole log as r's REST API serves it (r's
// datacenter, which may lag behind the home's).
func history(t testing.TB, p *person, conv string) []*parleyv1.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []*parleyv1.Message
	var after uint64
	for {
		h, err := p.rest.HistoryAfter(ctx, conv, after, 200)
		if err != nil {
			t.Fatalf("history of %s from %s: %v", conv, p.region.name, err)
		}
		out = append(out, h.GetMessages()...)
		if !h.GetHasMore() || len(h.GetMessages()) == 0 {
			return out
		}
		after = h.GetMessages()[len(h.GetMessages())-1].GetSeq()
	}
}

// checkLog asserts the log is dense from 1 and holds every text of sent
// exactly once, each sender's texts in the order they were sent.
func checkLog(t *testing.T, log []*parleyv1.Message, sent map[string][]string) {
	t.Helper()
	count := map[string]int{}
	bySender := map[string][]string{}
	for i, m := range log {
		if m.GetSeq() != uint64(i+1) {
			t.Fatalf("log entry %d has seq %d: seqs are not dense", i, m.GetSeq())
		}
		if m.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_TEXT {
			count[m.GetText()]++
			bySender[m.GetSenderId()] = append(bySender[m.GetSenderId()], m.GetText())
		}
	}
	for sender, texts := range sent {
		for _, x := range texts {
			if count[x] != 1 {
				t.Errorf("%q from %s is stored %d times, want exactly once", x, sender, count[x])
			}
		}
		if got := bySender[sender]; !slices.Equal(got, texts) {
			t.Errorf("%s's messages in the log: %q, want %q (each once, in send order)", sender, got, texts)
		}
	}
}

// TestCrossRegionDM: alice (home eu, connected to eu) and bob (home us,
// connected to us) talk live in both directions; the DM is homed in eu
// (alice has the lower id), so bob's sends cross the link twice.
func TestCrossRegionDM(t *testing.T) {
	rs := regions(t)
	alice := connect(t, rs["eu"], user("alice"), "eu")
	bob := connect(t, rs["us"], user("bob"), "us")
	conv := rules.DMID(alice.user, bob.user)

	var fromA, fromB []string
	for i := range 5 {
		a, b := fmt.Sprintf("a->b %d %s", i, runID), fmt.Sprintf("b->a %d %s", i, runID)
		alice.mustSend(t, conv, a)
		bob.mustSend(t, conv, b)
		fromA, fromB = append(fromA, a), append(fromB, b)
	}
	bob.waitTexts(t, conv, fromA, 10*time.Second)
	alice.waitTexts(t, conv, fromB, 10*time.Second)
	for _, x := range fromB {
		alice.mu.Lock()
		_, live := alice.live[x]
		alice.mu.Unlock()
		if !live {
			t.Errorf("alice got %q by pull, not by a live push across regions", x)
		}
	}
	checkLog(t, history(t, alice, conv), map[string][]string{alice.user: fromA, bob.user: fromB})
}

// TestGroupAcrossRegions: a group created by carol (home us) with members in
// both regions; every member sees every message live.
func TestGroupAcrossRegions(t *testing.T) {
	rs := regions(t)
	carol := connect(t, rs["us"], user("carol"), "us")
	dave := connect(t, rs["eu"], user("dave"), "eu")
	erin := connect(t, rs["us"], user("erin"), "us")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, err := carol.rest.CreateGroup(ctx, "across "+runID, []string{dave.user, erin.user})
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	sent := map[string][]string{}
	for i, p := range []*person{carol, dave, erin, dave} {
		x := fmt.Sprintf("group %d from %s", i, p.user)
		p.mustSend(t, g, x)
		all = append(all, x)
		sent[p.user] = append(sent[p.user], x)
	}
	for _, p := range []*person{carol, dave, erin} {
		p.waitTexts(t, g, all, 10*time.Second)
	}
	checkLog(t, history(t, carol, g), sent)
}

// TestRoaming: frank (home us) talks to alice from us, then from eu's
// gateway (roaming), then from us again; the conversation keeps one order.
func TestRoaming(t *testing.T) {
	rs := regions(t)
	alice := connect(t, rs["eu"], user("alice2"), "eu")
	frankUS := connect(t, rs["us"], user("frank"), "us")
	conv := rules.DMID(alice.user, frankUS.user)
	var sent []string
	x := "from us " + runID
	frankUS.mustSend(t, conv, x)
	sent = append(sent, x)
	frankEU := connect(t, rs["eu"], frankUS.user, "us")
	x = "roaming in eu " + runID
	frankEU.mustSend(t, conv, x)
	sent = append(sent, x)
	x = "back in us " + runID
	frankUS.mustSend(t, conv, x)
	sent = append(sent, x)
	alice.waitTexts(t, conv, sent, 10*time.Second)
	frankEU.waitTexts(t, conv, sent[2:], 10*time.Second)
	frankUS.waitTexts(t, conv, sent[1:2], 10*time.Second)
	checkLog(t, history(t, alice, conv), map[string][]string{frankUS.user: sent})
}

// partitionFor is how long TestPartition keeps the link cut
// (PARLEY_MR_PARTITION, default 60s).
func partitionFor(t *testing.T) time.Duration {
	if v := os.Getenv("PARLEY_MR_PARTITION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("PARLEY_MR_PARTITION: %v", err)
		}
		return d
	}
	return 60 * time.Second
}

// TestPartition cuts the link while both sides of a DM homed in eu keep
// sending. eu's user is answered send_ok (its home is reachable); us's user
// is answered send_accepted (taken into us's outbox). Then the process that
// holds us's outbox is killed with SIGKILL before the heal, started again,
// and the link healed: every send answered either way is stored exactly
// once, the log is dense, and each sender's order is kept.
func TestPartition(t *testing.T) {
	rs := regions(t)
	alice := connect(t, rs["eu"], user("alice3"), "eu")
	bob := connect(t, rs["us"], user("bob3"), "us")
	conv := rules.DMID(alice.user, bob.user)
	sent := map[string][]string{}
	x := "before " + runID
	bob.mustSend(t, conv, x)
	sent[bob.user] = append(sent[bob.user], x)
	alice.waitTexts(t, conv, []string{x}, 10*time.Second)
	// carol (us) shares a DM with alice, written over REST: no session, so
	// never online yet. She connects while the link is cut; eu learns it
	// from us's periodic re-announcement of its online users after the heal.
	carolID := user("carol3")
	carolREST := client.NewREST(rs["us"].http, token(t, rs["us"], carolID, "us"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := carolREST.Send(ctx, rules.DMID(alice.user, carolID), "c0", "hi alice "+runID); err != nil {
		t.Fatalf("carol's REST send: %v", err)
	}
	carolOnline := func() bool {
		ps, err := alice.rest.Presence(ctx, []string{carolID})
		return err == nil && len(ps) == 1 && ps[0].GetStatus() == parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE
	}

	regionsScript(t, "partition")
	healed := false
	t.Cleanup(func() {
		if !healed {
			regionsScript(t, "heal")
		}
	})
	d := partitionFor(t)
	connect(t, rs["us"], carolID, "us")
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted, oks := 0, 0
	var cutOff *person // the one whose sends wait for the other side
	stop := time.Now().Add(d)
	for _, p := range []*person{alice, bob} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				x := fmt.Sprintf("partition %s %d %s", p.user, i, runID)
				_, err := p.send(t, conv, x)
				var acc *client.AcceptedError
				switch {
				case err == nil:
					mu.Lock()
					oks++
					sent[p.user] = append(sent[p.user], x)
					mu.Unlock()
				case errors.As(err, &acc):
					mu.Lock()
					accepted++
					cutOff = p
					sent[p.user] = append(sent[p.user], x)
					mu.Unlock()
				default:
					t.Errorf("%s's send %q during the partition: %v (want send_ok or send_accepted)", p.user, x, err)
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	t.Logf("during a %s partition: %d sends answered send_ok, %d send_accepted", d, oks, accepted)
	if accepted == 0 {
		t.Fatal("no send was answered send_accepted while the home region was cut off")
	}
	// An edit needs the home's answer: refused at once, naming the home, and
	// nothing queued (the message keeps its text after the heal).
	ectx, ecancel := context.WithTimeout(context.Background(), 30*time.Second)
	_, err := cutOff.c.Edit(ectx, conv, 1, "edited during the partition")
	ecancel()
	var we *wire.Error
	if !errors.As(err, &we) || we.Code != wire.CodeUnavailable || !strings.Contains(we.Message, "home region") {
		t.Errorf("%s's edit during the partition: %v, want unavailable naming the home region", cutOff.user, err)
	}
	// The process holding us's outbox dies before it could forward it.
	regionsScript(t, "restart-parley", "us", "--kill9")
	regionsScript(t, "heal")
	healed = true

	var all []string
	for _, xs := range sent {
		all = append(all, xs...)
	}
	sort.Strings(all)
	alice.waitTexts(t, conv, sent[bob.user], 2*time.Minute)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		log := history(t, alice, conv)
		n := 0
		for _, m := range log {
			if m.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_TEXT {
				n++
			}
		}
		if n >= len(all) || time.Now().After(deadline) {
			checkLog(t, log, sent)
			break
		}
		time.Sleep(time.Second)
	}
	// The non-home region reads its own datacenter: what eu stored while
	// the link was cut (alice's sends) reaches us's replicas after the heal
	// (hinted handoff), so bob's history there catches up too.
	// Polled once a second: each poll pages the whole log (a few history
	// requests), and the user's read budget is 20 a second.
	waitForEvery(t, 2*time.Minute, time.Second, "us's datacenter holds every message after the heal", func() bool {
		n := 0
		for _, m := range history(t, bob, conv) {
			if m.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_TEXT {
				n++
			}
		}
		return n >= len(all)
	})
	checkLog(t, history(t, bob, conv), sent)
	// And bob's SDK in us shows every one of them: the next live message
	// reveals the gap, and the pull from us's datacenter fills it.
	x = "after the heal " + runID
	alice.mustSend(t, conv, x)
	bob.waitTexts(t, conv, append(slices.Clone(sent[alice.user]), x), 2*time.Minute)
	// Presence caught up too: within a heartbeat or two (30 s each) of the
	// heal, eu reads carol online.
	ctx, cancel = context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	waitForEvery(t, 80*time.Second, time.Second, "eu reads carol (connected in us during the partition) online", carolOnline)
}

// waitFor polls cond every 20 ms for up to within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	waitForEvery(t, within, 20*time.Millisecond, what, cond)
}

// waitForEvery polls cond every every for up to within.
func waitForEvery(t *testing.T, within, every time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(every)
	}
}

// TestPresenceAndTypingAcrossRegions: alice (eu) sees bob come online in us,
// reads him online afterwards (REST, a new subscription), and sees him
// typing; bob sees alice typing. Presence changes travel as relayed
// broadcasts (and are kept by the receiving region), typing as relayed
// deliveries.
func TestPresenceAndTypingAcrossRegions(t *testing.T) {
	rs := regions(t)
	alice := connect(t, rs["eu"], user("alice4"), "eu")
	bobID := user("bob4")
	conv := rules.DMID(alice.user, bobID)
	alice.mustSend(t, conv, "are you there? "+runID) // a shared conversation makes presence visible
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := alice.c.SubscribePresence(ctx, []string{bobID}); err != nil {
		t.Fatal(err)
	}
	bob := connect(t, rs["us"], bobID, "us")
	waitFor(t, 15*time.Second, "alice in eu sees bob online in us", func() bool {
		alice.mu.Lock()
		defer alice.mu.Unlock()
		return alice.presence[bobID] == parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE
	})
	// A read after the change (REST, and a new subscription's snapshot) comes
	// from eu's store of what us announced, not from eu's own sessions.
	waitFor(t, 10*time.Second, "GET /v1/presence in eu says bob (in us) is online", func() bool {
		ps, err := alice.rest.Presence(ctx, []string{bobID})
		return err == nil && len(ps) == 1 && ps[0].GetStatus() == parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE
	})
	alice2 := connect(t, rs["eu"], alice.user, "eu")
	if err := alice2.c.SubscribePresence(ctx, []string{bobID}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a new subscription in eu starts with bob online", func() bool {
		alice2.mu.Lock()
		defer alice2.mu.Unlock()
		return alice2.presence[bobID] == parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE
	})
	if err := bob.c.Typing(ctx, conv); err != nil {
		t.Fatal(err)
	}
	if err := alice.c.Typing(ctx, conv); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "alice sees bob typing", func() bool {
		alice.mu.Lock()
		defer alice.mu.Unlock()
		return alice.typing[conv+"/"+bobID]
	})
	waitFor(t, 10*time.Second, "bob sees alice typing", func() bool {
		bob.mu.Lock()
		defer bob.mu.Unlock()
		return bob.typing[conv+"/"+alice.user]
	})
}

// TestUnknownHomeRegion: a token whose home_region names no region of the
// deployment is refused at connect with a message naming it.
func TestUnknownHomeRegion(t *testing.T) {
	rs := regions(t)
	tok := token(t, rs["eu"], user("mars"), "mars")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: rs["eu"].http, Token: tok, NoReconnect: true})
	if err == nil {
		_ = c.Close()
		t.Fatal("a token homed in region mars connected")
	}
	if !strings.Contains(err.Error(), "unauthenticated") || !strings.Contains(err.Error(), `"mars"`) {
		t.Fatalf("dial error = %v, want unauthenticated naming mars", err)
	}
	// REST refuses it the same way (it could otherwise home a DM in "mars").
	rest := client.NewREST(rs["eu"].http, tok)
	if _, err := rest.Inbox(ctx); err == nil || !strings.Contains(err.Error(), "unauthenticated") || !strings.Contains(err.Error(), `"mars"`) {
		t.Fatalf("REST with a token homed in mars = %v, want unauthenticated naming mars", err)
	}
}

// TestRESTOnlyUserHome: a user who only ever uses REST has the home of
// their token's claim stored, so the DM rule homes a DM with them where
// their claim says (a new-user trial found such DMs homed by the other
// side's region).
func TestRESTOnlyUserHome(t *testing.T) {
	rs := regions(t)
	a, b := user("arest"), user("brest") // a < b: the DM is homed in a's home, eu
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	aREST := client.NewREST(rs["eu"].http, token(t, rs["eu"], a, "eu"))
	bREST := client.NewREST(rs["us"].http, token(t, rs["us"], b, "us"))
	if _, err := aREST.Inbox(ctx); err != nil { // a's first request: stores a's home
		t.Fatal(err)
	}
	conv := rules.DMID(a, b)
	before := metricSum(t, rs["us"].http, `parley_outbox_forwarded_total{home="eu"}`)
	waitFor(t, 10*time.Second, "b's first send (from us) is answered", func() bool {
		_, err := bREST.Send(ctx, conv, "", "first, from us")
		return err == nil
	})
	h := history(t, &person{user: a, region: rs["eu"], rest: aREST}, conv)
	if len(h) == 0 {
		t.Fatal("eu's history of the DM is empty")
	}
	// The conversation row names its home; the inbox's state carries it only
	// indirectly, so ask the metrics: us forwarded the send to eu.
	if n := metricSum(t, rs["us"].http, `parley_outbox_forwarded_total{home="eu"}`) - before; n < 1 {
		t.Errorf("us forwarded %v records to eu for b's send; want the DM homed in eu (a's claim)", n)
	}
}
