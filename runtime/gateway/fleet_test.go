package gateway

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// A presence change broadcast on the deliver partition (the distributed
// mode's presence role) reaches the local subscribers of its user, while a
// presence delivery addressed to users still goes to those users only.
func TestPresenceBroadcast(t *testing.T) {
	h := newHarness(t)
	h.createDM("alice", "zed") // presence is visible to users who share a conversation
	alice := h.dial("alice", "d", wire.SubprotocolJSON)
	id := alice.sendFrame(&parleyv1.ClientFrame{Body: &parleyv1.ClientFrame_PresenceSub{PresenceSub: &parleyv1.PresenceSub{UserIds: []string{"zed"}}}})
	alice.reply(id)

	publish := func(d *parleyv1.Delivery) {
		t.Helper()
		v, err := proto.Marshal(&parleyv1.DeliverRecord{Deliveries: []*parleyv1.Delivery{d}})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.bus.Publish(context.Background(), h.chat.DeliverTopic, 0, nil, v); err != nil {
			t.Fatal(err)
		}
	}
	publish(&parleyv1.Delivery{Body: &parleyv1.Delivery_Presence{Presence: &parleyv1.Presence{
		UserId: "zed", Status: parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE, LastActive: 42}}})
	p := alice.nextMatching("zed's presence", func(f *parleyv1.ServerFrame) bool {
		return f.GetPresence().GetUserId() == "zed"
	}).GetPresence()
	if p.GetStatus() != parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE || p.GetLastActive() != 42 {
		t.Fatalf("alice got %v, want zed online at 42", p)
	}

	// Addressed to alice (not a broadcast): pushed to her although she does
	// not follow yuri.
	publish(&parleyv1.Delivery{UserIds: []string{"alice"}, Body: &parleyv1.Delivery_Presence{Presence: &parleyv1.Presence{
		UserId: "yuri", Status: parleyv1.PresenceStatus_PRESENCE_STATUS_OFFLINE}}})
	alice.nextMatching("yuri's presence", func(f *parleyv1.ServerFrame) bool {
		return f.GetPresence().GetUserId() == "yuri"
	})
}
