package chat

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/bus"
	"github.com/parleychat/parley/runtime/chat/ingress"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/store"
	"github.com/parleychat/parley/runtime/wire"
)

// elsewhere is a mesh in which every conversation is homed in region "far"
// (a unit-test stand-in; runtime/region tests the real mesh).
type elsewhere struct {
	mu       sync.Mutex
	forwards int
	down     time.Time // when the link to "far" went down; zero: up
}

func (e *elsewhere) Down(string) (bool, time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !e.down.IsZero(), e.down
}

func (*elsewhere) Local() string                    { return ingress.DefaultRegion }
func (*elsewhere) Known(name string) bool           { return name == ingress.DefaultRegion || name == "far" }
func (*elsewhere) RegionByID(id int) (string, bool) { return "far", true }
func (*elsewhere) Peers() []string                  { return []string{"far"} }
func (*elsewhere) Publish(context.Context, string, []bus.Message) []error {
	return nil
}
func (e *elsewhere) Forward(_ context.Context, _ string, recs []*parleyv1.IngressRecord) error {
	e.mu.Lock()
	e.forwards += len(recs)
	e.mu.Unlock()
	return nil
}

// TestForwardedRecordNotForwardedAgain: a record another region forwarded
// here, for a conversation this region homes elsewhere, is answered
// unavailable instead of being forwarded again (two regions that disagree
// on a home must not bounce a record between them) or sequenced here.
func TestForwardedRecordNotForwardedAgain(t *testing.T) {
	m := &elsewhere{}
	e := newEnv(t, func(c *Config) { c.Regions = m })
	e.startSequencer(t, "chat-0", 0)
	g := "g:" + "4194304" // any group id: the stub homes it in "far"
	if err := e.st.CreateConversation(context.Background(), store.Conversation{ID: g, Kind: store.KindGroup, HomeRegion: "far"}); err != nil {
		t.Fatal(err)
	}

	// Stamped as coming from a gateway of "far", which took this region for
	// the home (the router here has no mesh, so the reply still reaches
	// the test's gateway).
	e.gws[0].client.SetRegion("far")
	_, err := e.call(&parleyv1.IngressRecord{Origin: origin("alice"), ConversationId: g,
		Op: &parleyv1.IngressRecord_Send{Send: &parleyv1.Send{ConversationId: g, ClientMsgId: "c1", Content: &parleyv1.Send_Text{Text: "hi"}}}})
	if we := wire.AsError(err); err == nil || we.Code != wire.CodeUnavailable || !strings.Contains(we.Message, "disagree") {
		t.Fatalf("forwarded record for a conversation homed elsewhere = %v, want unavailable (disagree)", err)
	}
	// A record from this region's own gateway is forwarded as usual (and
	// not answered here: the home answers it).
	e.gws[0].client.SetRegion(ingress.DefaultRegion)
	e.gws[0].client.Do(context.Background(), &parleyv1.IngressRecord{Origin: origin("alice"), ConversationId: g,
		Op: &parleyv1.IngressRecord_Send{Send: &parleyv1.Send{ConversationId: g, ClientMsgId: "c2", Content: &parleyv1.Send_Text{Text: "hi"}}}},
		func(*parleyv1.Reply) {})
	waitFor(t, "the local record forwarded", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.forwards == 1
	})
	if log := e.log(t, g); len(log) != 0 {
		t.Fatalf("conversation homed elsewhere got %d messages stored here", len(log))
	}
	// A group id homed elsewhere that is stored nowhere is not_found here,
	// not forwarded to wait in the outbox.
	_, err = e.call(&parleyv1.IngressRecord{Origin: origin("alice"), ConversationId: "g:8388608",
		Op: &parleyv1.IngressRecord_Send{Send: &parleyv1.Send{ConversationId: "g:8388608", ClientMsgId: "c3", Content: &parleyv1.Send_Text{Text: "hi"}}}})
	if we := wire.AsError(err); err == nil || we.Code != wire.CodeNotFound {
		t.Fatalf("send to a made-up group homed elsewhere = %v, want not_found", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.forwards != 1 {
		t.Errorf("%d records forwarded, want only the one of the existing group", m.forwards)
	}
}

// TestHomeDownRefusesWhatWaitsForIt: while the link to a conversation's home
// region is known down, an edit (which only the home can answer, and which
// the outbox does not answer) is refused at once with unavailable naming the
// region, and nothing is queued; a send is still queued for the outbox
// (send_accepted) and an ack still goes the same way.
func TestHomeDownRefusesWhatWaitsForIt(t *testing.T) {
	m := &elsewhere{down: time.Now().Add(-time.Minute)}
	e := newEnv(t, func(c *Config) { c.Regions = m })
	e.startSequencer(t, "chat-0", 0)
	g := "g:" + "4194304"
	if err := e.st.CreateConversation(context.Background(), store.Conversation{ID: g, Kind: store.KindGroup, HomeRegion: "far"}); err != nil {
		t.Fatal(err)
	}
	_, err := e.call(&parleyv1.IngressRecord{Origin: origin("alice"), ConversationId: g,
		Op: &parleyv1.IngressRecord_Edit{Edit: &parleyv1.Edit{ConversationId: g, Seq: 1, Text: "fixed"}}})
	if we := wire.AsError(err); err == nil || we.Code != wire.CodeUnavailable || !strings.Contains(we.Message, "home region far") || we.RetryAfterMs == 0 {
		t.Fatalf("an edit while the home region is down = %v, want unavailable naming far with a retry hint", err)
	}
	for i, op := range []*parleyv1.IngressRecord{
		{Op: &parleyv1.IngressRecord_Send{Send: &parleyv1.Send{ConversationId: g, ClientMsgId: "c1", Content: &parleyv1.Send_Text{Text: "hi"}}}},
		{Op: &parleyv1.IngressRecord_Ack{Ack: &parleyv1.Ack{ConversationId: g, Seq: 1}}},
	} {
		op.Origin, op.ConversationId = origin("alice"), g
		e.gws[0].client.Do(context.Background(), op, func(*parleyv1.Reply) {})
		waitFor(t, "the send and the ack queued for far", func() bool {
			m.mu.Lock()
			defer m.mu.Unlock()
			return m.forwards == i+1
		})
	}
}
