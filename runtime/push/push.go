// Package push is the offline-push pipeline of the distributed mode: when
// the chat role routes a message, the members with no live session
// (chat.Router.OnOffline) are published with it on the push topic
// "parley.<region>.push", keyed by conversation; push workers (consumer
// group "parley.push") POST each one to a webhook — the bridge to APNs/FCM
// or any notification service — retrying with exponential backoff.
//
// Webhook request: POST <webhook>, Content-Type application/json, header
// X-Parley-Delivery (a stable id per notification: "<conversation>/<seq>",
// for the receiver to dedupe, since delivery is at least once), body:
//
//	{"users": ["bob", "carol"],
//	 "message": {"conversation_id": "g:…", "seq": 12, "message_id": "…",
//	             "sender_id": "alice", "kind": "text", "text": "hi",
//	             "created_at": 1700000000000}}
//
// Any 2xx is success. 408, 429 and 5xx and network errors are retried (a
// Retry-After in seconds is honoured, within the backoff bounds); any other
// status is final. After Config.MaxAttempts the notification is dropped
// with a warning.
//
// Decisions: only text and media messages are pushed, never to their
// sender, nor to users who muted the conversation (SkipMuted); pushes are at least once (a worker that dies before committing
// replays) and best effort (the chat role queues them in memory, so a chat
// process killed with queued pushes loses those; the messages themselves
// are stored and pulled when the app opens).
package push

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parleychat/parley/runtime/bus"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// GroupName is the push workers' consumer group.
const GroupName = "parley.push"

// DefaultPartitions is the push topic's partition count `parley migrate`
// creates by default.
const DefaultPartitions = 8

// Topic returns the push topic of region: "parley.<region>.push".
func Topic(region string) string { return "parley." + region + ".push" }

// Notification is one push: a message for users who are offline. It is
// the push topic's record value and the webhook's request body.
type Notification struct {
	Users   []string `json:"users"`
	Message Message  `json:"message"`
}

// Message is the pushed message.
type Message struct {
	ConversationID string `json:"conversation_id"`
	Seq            uint64 `json:"seq"`
	MessageID      string `json:"message_id"`
	SenderID       string `json:"sender_id"`
	Kind           string `json:"kind"`
	Text           string `json:"text,omitempty"`
	MediaURL       string `json:"media_url,omitempty"`
	MediaMime      string `json:"media_mime,omitempty"`
	// CreatedAt is Unix milliseconds.
	CreatedAt int64 `json:"created_at"`
}

// ID is the notification's stable id, "<conversation>/<seq>".
func (n *Notification) ID() string {
	return n.Message.ConversationID + "/" + strconv.FormatUint(n.Message.Seq, 10)
}

// notification builds the push of d for users, or nil when d is not pushed.
func notification(users []string, d *parleyv1.Delivery) *Notification {
	m := d.GetMessage()
	if m == nil {
		return nil
	}
	var kind string
	switch m.GetKind() {
	case parleyv1.MessageKind_MESSAGE_KIND_TEXT:
		kind = "text"
	case parleyv1.MessageKind_MESSAGE_KIND_MEDIA:
		kind = "media"
	default:
		return nil // membership events are not pushed
	}
	var to []string
	for _, u := range users {
		if u != m.GetSenderId() {
			to = append(to, u)
		}
	}
	if len(to) == 0 {
		return nil
	}
	return &Notification{Users: to, Message: Message{
		ConversationID: m.GetConversationId(),
		Seq:            m.GetSeq(),
		MessageID:      strconv.FormatInt(m.GetMessageId(), 10),
		SenderID:       m.GetSenderId(),
		Kind:           kind,
		Text:           m.GetText(),
		MediaURL:       m.GetMedia().GetUrl(),
		MediaMime:      m.GetMedia().GetMime(),
		CreatedAt:      m.GetCreatedAt(),
	}}
}

// MaxQueued bounds the notifications a Publisher holds while the bus is
// slow; newer ones are dropped beyond it.
const MaxQueued = 100_000

// Publisher is the chat role's side: Offline (a chat.Router.OnOffline
// hook) queues notifications and Run publishes them.
type Publisher struct {
	b     bus.Bus
	topic string
	log   *slog.Logger

	dropped atomic.Uint64
	mu      sync.Mutex
	queue   []*Notification
	wake    chan struct{}

	// skip, when set, names the users of a notification not to push
	// (SkipUsers).
	skip func(ctx context.Context, users []string) (map[string]bool, error)
	// muted, when set, names the users who muted the conversation
	// (SkipMuted).
	muted func(ctx context.Context, conv string, users []string) (map[string]bool, error)
}

// SkipMuted makes the publisher ask muted, off the routing path and before
// each notification is published, which of its users muted its
// conversation (chat.Queries.Muted): they get no offline push (issue 13,
// mute). As with SkipUsers, a notification left without users is not
// published, and when muted fails everyone is pushed. Call before Run.
func (p *Publisher) SkipMuted(muted func(ctx context.Context, conv string, users []string) (map[string]bool, error)) {
	p.muted = muted
}

// SkipUsers makes the publisher ask skip, off the routing path and before
// each notification is published, which of its users not to push: in a
// multi-region deployment, those online in another region
// (presence.Service.OnlineElsewhere), since the home region's router sees
// only its own sessions. A notification left without users is not
// published; when skip fails, everyone is pushed (a push too many rather
// than one missing). Call before Run.
func (p *Publisher) SkipUsers(skip func(ctx context.Context, users []string) (map[string]bool, error)) {
	p.skip = skip
}

// without removes from n the users muted and skip name; it reports whether
// any are left.
func (p *Publisher) without(ctx context.Context, n *Notification) bool {
	drop := func(what string, skip map[string]bool, err error) {
		if err != nil {
			p.log.Warn("push: "+what+" is unknown; pushing to them", "id", n.ID(), "err", err)
			return
		}
		n.Users = slices.DeleteFunc(n.Users, func(u string) bool { return skip[u] })
	}
	if p.muted != nil {
		muted, err := p.muted(ctx, n.Message.ConversationID, n.Users)
		drop("who muted the conversation", muted, err)
	}
	if p.skip != nil && len(n.Users) > 0 {
		skip, err := p.skip(ctx, n.Users)
		drop("who to skip", skip, err)
	}
	return len(n.Users) > 0
}

// NewPublisher returns a publisher to topic (Topic of the region).
func NewPublisher(b bus.Bus, topic string) *Publisher {
	return &Publisher{b: b, topic: topic, log: slog.Default().With("component", "push.publisher"), wake: make(chan struct{}, 1)}
}

// Offline queues the push of d for users (who have no live session). It
// does not block.
func (p *Publisher) Offline(_ context.Context, users []string, d *parleyv1.Delivery) {
	n := notification(users, d)
	if n == nil {
		return
	}
	p.mu.Lock()
	if len(p.queue) >= MaxQueued {
		p.mu.Unlock()
		if p.dropped.Add(1)%1000 == 1 {
			p.log.Warn("push notifications dropped: the bus is not keeping up", "dropped", p.dropped.Load())
		}
		return
	}
	p.queue = append(p.queue, n)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run publishes queued notifications until ctx ends, then what is still
// queued (bounded by a few seconds).
func (p *Publisher) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
			p.flush(fctx)
			cancel()
			return
		case <-p.wake:
			p.flush(ctx)
		}
	}
}

func (p *Publisher) flush(ctx context.Context) {
	p.mu.Lock()
	ns := p.queue
	p.queue = nil
	p.mu.Unlock()
	if len(ns) == 0 {
		return
	}
	// Concurrently, bounded: records of one conversation may then be
	// published out of order, which a push does not mind.
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, n := range ns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if !p.without(ctx, n) {
				return
			}
			v, err := json.Marshal(n)
			if err == nil {
				err = p.b.Publish(ctx, p.topic, -1, []byte(n.Message.ConversationID), v)
			}
			if err != nil {
				p.dropped.Add(1)
				p.log.Warn("push notification dropped", "id", n.ID(), "err", err)
			}
		})
	}
	wg.Wait()
}

// validWebhook checks a webhook URL.
func validWebhook(u string) error {
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return fmt.Errorf("push webhook %q: want an http:// or https:// URL", u)
	}
	return nil
}
