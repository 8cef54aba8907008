package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	"github.com/parleychat/parley/runtime/client/internal/fakegw"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

func TestParse(t *testing.T) {
	cases := []struct {
		line string
		want command
		err  string
	}{
		{"", command{}, ""},
		{"   ", command{}, ""},
		{"hello there", command{name: "say", text: "hello there"}, ""},
		{"  indented", command{name: "say", text: "  indented"}, ""},
		{"//slash at start", command{name: "say", text: "/slash at start"}, ""},
		{"/dm bob", command{name: "dm", args: []string{"bob"}}, ""},
		{"/dm", command{}, "usage: /dm <user>"},
		{"/dm bob carol", command{}, "usage: /dm <user>"},
		{"/dm dm:a:b", command{}, "dm:a:b is not a valid user id"},
		{"/dm bob/x", command{}, "bob/x is not a valid user id"},
		{"/who bob carol/x", command{}, "carol/x is not a valid user id"},
		{"/add \"b c\"", command{}, "b c is not a valid user id"},
		{`/group create "Team chat" bob carol`, command{name: "group-create", args: []string{"Team chat", "bob", "carol"}}, ""},
		{"/group create solo", command{name: "group-create", args: []string{"solo"}}, ""},
		{"/group delete x", command{}, "usage: /group create"},
		{"/group create", command{}, "usage: /group create"},
		{`/group create "unterminated`, command{}, "unterminated quote"},
		{"/join g:42", command{name: "join", args: []string{"g:42"}}, ""},
		{"/add bob  carol", command{name: "add", args: []string{"bob", "carol"}}, ""},
		{"/add", command{}, "usage: /add"},
		{"/who bob", command{name: "who", args: []string{"bob"}}, ""},
		{"/leave", command{name: "leave"}, ""},
		{"/leave now", command{}, "usage: /leave"},
		{"/history", command{name: "history"}, ""},
		{"/inbox", command{name: "inbox"}, ""},
		{"/read", command{name: "read"}, ""},
		{"/edit  fixed  text ", command{name: "edit", text: "fixed  text"}, ""},
		{"/edit", command{}, "usage: /edit <new text>"},
		{"/edit   ", command{}, "usage: /edit <new text>"},
		{"/delete", command{name: "delete"}, ""},
		{"/reply 7 sounds  good ", command{name: "reply", seq: 7, text: "sounds  good"}, ""},
		{"/reply #12\tme too", command{name: "reply", seq: 12, text: "me too"}, ""},
		{"/reply", command{}, "usage: /reply <seq> <text>"},
		{"/reply 7", command{}, "usage: /reply <seq> <text>"},
		{"/reply 7   ", command{}, "usage: /reply <seq> <text>"},
		{"/reply seven hi", command{}, "seven is not a message number"},
		{"/reply 0 hi", command{}, "0 is not a message number"},
		{"/reply -3 hi", command{}, "-3 is not a message number"},
		{"/delete 3", command{}, "usage: /delete"},
		{"/react 7 👍", command{name: "react", seq: 7, text: "👍"}, ""},
		{"/react #7  ❤️ ", command{name: "react", seq: 7, text: "❤️"}, ""},
		{"/unreact 7 👍", command{name: "unreact", seq: 7, text: "👍"}, ""},
		{"/react 7", command{}, "usage: /react <seq> <emoji>"},
		{"/react", command{}, "usage: /react <seq> <emoji>"},
		{"/react 7 👍 ❤️", command{}, "usage: /react <seq> <emoji>"},
		{"/react x 👍", command{}, "x is not a message number"},
		{"/unreact 0 👍", command{}, "0 is not a message number; usage: /unreact"},
		{"/admin bob", command{name: "admin", args: []string{"bob"}}, ""},
		{"/unadmin bob", command{name: "unadmin", args: []string{"bob"}}, ""},
		{"/remove bob", command{name: "remove", args: []string{"bob"}}, ""},
		{"/admin", command{}, "usage: /admin <user>"},
		{"/admin bob carol", command{}, "usage: /admin <user>"},
		{"/remove b/c", command{}, "b/c is not a valid user id"},
		{"/rename  Book  club ", command{name: "rename", text: "Book  club"}, ""},
		{"/rename", command{}, "usage: /rename <title>"},
		{"/rename   ", command{}, "usage: /rename <title>"},
		{"/help", command{name: "help"}, ""},
		{"/quit\r", command{name: "quit"}, ""},
		{"/", command{}, "empty command"},
		{"/frobnicate", command{}, "unknown command /frobnicate"},
	}
	for _, c := range cases {
		got, err := parse(c.line)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("parse(%q) error %v, want one containing %q", c.line, err, c.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("parse(%q) = %+v, %v; want %+v", c.line, got, err, c.want)
		}
	}
}

func TestDMID(t *testing.T) {
	if a, b := DMID("bob", "alice"), DMID("alice", "bob"); a != "dm:alice:bob" || b != a {
		t.Fatalf("DMID = %q, %q; want dm:alice:bob both ways", a, b)
	}
}

func TestFormat(t *testing.T) {
	cases := []struct {
		got, want string
	}{
		{FormatMessage(&parleyv1.Message{ConversationId: "c", SenderId: "alice", Kind: parleyv1.MessageKind_MESSAGE_KIND_TEXT, Text: "hi"}), "[c] alice: hi"},
		{FormatMessage(&parleyv1.Message{ConversationId: "g:1", SenderId: "alice", Kind: parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED, Text: "Team", Members: []string{"bob"}}), `[g:1] * alice created the group "Team" with bob`},
		{FormatMessage(&parleyv1.Message{ConversationId: "g:1", SenderId: "alice", Kind: parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED, Members: []string{"bob", "carol"}}), "[g:1] * alice added bob, carol"},
		{FormatMessage(&parleyv1.Message{ConversationId: "g:1", SenderId: "bob", Kind: parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED, Members: []string{"bob"}}), "[g:1] * bob left"},
		{FormatMessage(&parleyv1.Message{ConversationId: "g:1", SenderId: "alice", Kind: parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED, Members: []string{"bob"}}), "[g:1] * alice removed bob"},
		{FormatMessage(&parleyv1.Message{ConversationId: "g:1", SenderId: "alice", Kind: parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED, Members: []string{"bob"}, Text: "admin"}), "[g:1] * alice made bob an admin"},
		{FormatMessage(&parleyv1.Message{ConversationId: "g:1", SenderId: "alice", Kind: parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED, Members: []string{"bob"}, Text: "member"}), "[g:1] * alice removed bob as admin"},
		{FormatMessage(&parleyv1.Message{ConversationId: "g:1", SenderId: "alice", Kind: parleyv1.MessageKind_MESSAGE_KIND_RENAMED, Text: "Book\x1b[2J club"}), `[g:1] * alice renamed the group to "Book\x1b[2J club"`},
		{FormatMessage(&parleyv1.Message{ConversationId: "g:1", SenderId: "alice", Kind: parleyv1.MessageKind_MESSAGE_KIND_OWNER_CHANGED, Members: []string{"bob"}}), "[g:1] * bob is now the owner"},
		{FormatMessage(&parleyv1.Message{ConversationId: "c", SenderId: "a", Kind: parleyv1.MessageKind_MESSAGE_KIND_MEDIA, Media: &parleyv1.Media{Url: "https://x/y.png", Mime: "image/png", Size: 10}}), "[c] a sent https://x/y.png (image/png, 10 bytes)"},
		{FormatQuote(&parleyv1.Message{ConversationId: "c", SenderId: "bob", Text: "yes", ReplyTo: &parleyv1.Quote{Seq: 7, SenderId: "alice", Text: "lunch?\nat noon"}}), "  ↳ in reply to #7 alice: lunch? at noon"},
		{FormatQuote(&parleyv1.Message{ReplyTo: &parleyv1.Quote{Seq: 7, SenderId: "alice", Media: true}}), "  ↳ in reply to #7 alice: (attachment)"},
		{FormatQuote(&parleyv1.Message{ReplyTo: &parleyv1.Quote{Seq: 7, SenderId: "alice", Deleted: true}}), "  ↳ in reply to #7 alice: (deleted)"},
		{FormatQuote(&parleyv1.Message{ReplyTo: &parleyv1.Quote{Seq: 7, SenderId: "a\x1b[2Jb", Text: "x\x1b]0;t\x07\u202E"}}), `  ↳ in reply to #7 a\x1b[2Jb: x\x1b]0;t\x07<U+202E>`},
		{FormatQuote(&parleyv1.Message{ReplyTo: &parleyv1.Quote{Seq: 7, SenderId: "alice", Text: "hi"}, Deleted: true}), ""},
		{FormatQuote(&parleyv1.Message{Text: "not a reply"}), ""},
		{FormatReceipt(&parleyv1.Receipt{ConversationId: "c", UserId: "bob", Kind: parleyv1.ReceiptKind_RECEIPT_KIND_DELIVERED, Seq: 3}, "alice"), "[c] ✓ delivered to bob up to #3"},
		{FormatReceipt(&parleyv1.Receipt{ConversationId: "c", UserId: "bob", Kind: parleyv1.ReceiptKind_RECEIPT_KIND_READ, Seq: 12}, "alice"), "[c] ✓✓ read by bob up to #12"},
		{FormatReceipt(&parleyv1.Receipt{ConversationId: "c", UserId: "alice", Kind: parleyv1.ReceiptKind_RECEIPT_KIND_READ, Seq: 12}, "alice"), ""},
		{FormatReceipt(&parleyv1.Receipt{ConversationId: "g", Kind: parleyv1.ReceiptKind_RECEIPT_KIND_READ_BY_ALL, Seq: 5}, "alice"), "[g] ✓✓ read by everyone up to #5"},
		{FormatPresence(&parleyv1.Presence{UserId: "bob", Status: parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE}), "bob is online"},
		{FormatPresence(&parleyv1.Presence{UserId: "bob", Status: parleyv1.PresenceStatus_PRESENCE_STATUS_OFFLINE, LastActive: time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC).UnixMilli()}), "bob was last seen 2025-03-04 05:06:07 UTC"},
		{FormatPresence(&parleyv1.Presence{UserId: "bob", Status: parleyv1.PresenceStatus_PRESENCE_STATUS_OFFLINE}), "bob is offline"},
		{FormatPresence(&parleyv1.Presence{UserId: "bob"}), "bob's presence is unknown"},
		{FormatState(&parleyv1.ConversationState{ConversationId: "dm:alice:bob", Unread: 2, LastMessage: &parleyv1.Message{ConversationId: "dm:alice:bob", SenderId: "bob", Text: "yo"}}, "alice"), "dm:alice:bob (with bob)  2 unread  last: bob: yo"},
		{FormatState(&parleyv1.ConversationState{ConversationId: "g:1", Title: "Team"}, "alice"), `g:1 "Team"`},
	}
	for i, c := range cases {
		if c.got != c.want {
			t.Errorf("case %d: got %q, want %q", i, c.got, c.want)
		}
	}
}

// syncBuffer is an io.Writer the test can read while Run writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// terminal drives one Run.
type terminal struct {
	t    *testing.T
	in   *io.PipeWriter
	out  *syncBuffer
	done chan error
}

func (term *terminal) send(line string) {
	term.t.Helper()
	if _, err := io.WriteString(term.in, line+"\n"); err != nil {
		term.t.Fatalf("type %q: %v", line, err)
	}
}

// expect waits until the output contains want.
func (term *terminal) expect(want string) {
	term.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(term.out.String(), want) {
		if time.Now().After(deadline) {
			term.t.Fatalf("output never showed %q; output:\n%s", want, term.out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dial(t *testing.T, srv *fakegw.Server, token string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: srv.URL, Token: token, Logger: slog.New(slog.DiscardHandler),
		Backoff: client.Backoff{Min: 5 * time.Millisecond, Max: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func start(t *testing.T, srv *fakegw.Server, token, user string) *terminal {
	c := dial(t, srv, token)
	inR, inW := io.Pipe()
	term := &terminal{t: t, in: inW, out: &syncBuffer{}, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { term.done <- Run(ctx, inR, term.out, c, client.NewREST(srv.HTTP.URL, token), user) }()
	t.Cleanup(func() {
		cancel()
		_ = inW.Close()
		<-term.done
	})
	return term
}

func TestRunChat(t *testing.T) {
	srv := fakegw.New(t)
	srv.AddToken("ta", "alice")
	srv.AddToken("tb", "bob")
	alice := start(t, srv, "ta", "alice")
	alice.expect("connected as alice")
	bob := dial(t, srv, "tb")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	alice.send("no conversation yet")
	alice.expect("no conversation selected")
	alice.send("/dm bob")
	alice.expect("--- dm:alice:bob ---\n(no messages yet)")
	alice.send("/edit nothing yet")
	alice.expect("no message of yours in dm:alice:bob to change")
	alice.send("helo bob")
	alice.expect("[dm:alice:bob] alice: helo bob")
	alice.send("/edit hello bob")
	alice.expect("[dm:alice:bob] * alice edited a message: hello bob")
	alice.send("oops")
	alice.expect("[dm:alice:bob] alice: oops")
	alice.send("/delete")
	alice.expect("[dm:alice:bob] * alice deleted a message")

	// Bob answers; alice sees it and, since it is her current
	// conversation, marks it read.
	if _, err := bob.Send(ctx, "dm:alice:bob", "hi alice"); err != nil {
		t.Fatal(err)
	}
	alice.expect("[dm:alice:bob] bob: hi alice")
	waitRead(t, srv, "alice", "dm:alice:bob", 5) // after hello, its edit, oops and its delete
	// Bob reads; alice gets the receipt.
	if err := bob.Read(ctx, "dm:alice:bob", 1); err != nil {
		t.Fatal(err)
	}
	alice.expect("[dm:alice:bob] ✓✓ read by bob up to #1")

	alice.send("/who bob")
	alice.expect("watching bob")
	alice.expect("bob is online")

	alice.send(`/group create "Team chat" bob`)
	alice.expect(`created group g:`)
	alice.expect(`* alice created the group "Team chat" with bob`)
	alice.send("/add carol")
	alice.expect("added carol to g:")
	alice.expect("* alice added carol")

	alice.send("/inbox")
	alice.expect("dm:alice:bob (with bob)")
	alice.expect(`"Team chat"`)

	alice.send("/leave")
	alice.expect("left g:")
	alice.send("/history")
	alice.expect("no conversation selected")

	alice.send("/join dm:alice:bob")
	alice.expect("--- dm:alice:bob ---\n#1 [dm:alice:bob] alice: hello bob (edited)\n#2 [dm:alice:bob] * alice edited a message: hello bob\n" +
		"#3 [dm:alice:bob] alice: (message deleted)\n#4 [dm:alice:bob] * alice deleted a message\n#5 [dm:alice:bob] bob: hi alice\n")
	alice.send("/history")
	alice.expect("(beginning of dm:alice:bob)")
	alice.send("/read")
	alice.expect("dm:alice:bob is read up to #5")

	alice.send("/nonsense")
	alice.expect("unknown command /nonsense")
	alice.send("/help")
	alice.expect("/group create <title> [members...]")
	alice.send("/quit")
	alice.expect("bye")
	select {
	case err := <-alice.done:
		if err != nil {
			t.Fatalf("Run after /quit: %v", err)
		}
		alice.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after /quit")
	}
}

func TestRunReply(t *testing.T) {
	srv := fakegw.New(t)
	srv.AddToken("ta", "alice")
	srv.AddToken("tb", "bob")
	// The fake stores no quotes: as the server does, a reply gets a quote of
	// the message it answers (set on the stored message as it is first
	// pushed), and a reply_to past the last message is invalid.
	var mu sync.Mutex
	replyTo := map[string]uint64{}           // client_msg_id -> reply_to
	stored := map[uint64]*parleyv1.Message{} // seq -> message (one conversation)
	srv.OnSend = func(user string, snd *parleyv1.Send) *wire.Error {
		mu.Lock()
		defer mu.Unlock()
		if r := snd.GetReplyTo(); r != 0 {
			if stored[r] == nil {
				return &wire.Error{Code: wire.CodeInvalid, Message: "reply_to is after the last message"}
			}
			replyTo[snd.GetClientMsgId()] = r
		}
		return nil
	}
	srv.DropPush = func(m *parleyv1.Message, user string) bool {
		mu.Lock()
		defer mu.Unlock()
		stored[m.GetSeq()] = m
		if r := replyTo[m.GetClientMsgId()]; r != 0 && m.ReplyTo == nil {
			o := stored[r]
			m.ReplyTo = &parleyv1.Quote{Seq: r, SenderId: o.GetSenderId(), Text: o.GetText()}
		}
		return false
	}
	alice := start(t, srv, "ta", "alice")
	alice.expect("connected as alice")
	bob := dial(t, srv, "tb")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	alice.send("/dm bob")
	alice.expect("--- dm:alice:bob ---")
	if _, err := bob.Send(ctx, "dm:alice:bob", "lunch?\nnoon or one"); err != nil {
		t.Fatal(err)
	}
	alice.expect("#1 [dm:alice:bob] bob: lunch?\n    │ noon or one\n")
	alice.send("/reply 1 noon works")
	alice.expect("#1 [dm:alice:bob] bob: lunch?\n    │ noon or one\n#2 [dm:alice:bob] alice: noon works\n  ↳ in reply to #1 bob: lunch? noon or one\n")
	var sent *parleyv1.Send
	for _, f := range srv.Frames("alice") {
		if snd := f.GetSend(); snd != nil && snd.GetText() == "noon works" {
			sent = snd
		}
	}
	if sent.GetReplyTo() != 1 {
		t.Fatalf("alice's reply went as %v, want reply_to 1", sent)
	}

	// Bob answers alice's reply; alice sees his reply quote hers.
	if _, err := bob.SendReply(ctx, "dm:alice:bob", "see you", 2); err != nil {
		t.Fatal(err)
	}
	alice.expect("#3 [dm:alice:bob] bob: see you\n  ↳ in reply to #2 alice: noon works\n")

	alice.send("/reply #9 too far")
	alice.expect("not sent: invalid: reply_to is after the last message")
	alice.send("/reply x")
	alice.expect("usage: /reply <seq> <text>")

	// History shows the quotes too.
	alice.send("/join dm:alice:bob")
	alice.expect("--- dm:alice:bob ---\n#1 [dm:alice:bob] bob: lunch?\n    │ noon or one\n" +
		"#2 [dm:alice:bob] alice: noon works\n  ↳ in reply to #1 bob: lunch? noon or one\n#3 [dm:alice:bob] bob: see you\n  ↳ in reply to #2 alice: noon works\n")
	alice.send("/help")
	alice.expect("/reply <seq> <text>")
}

// TestRunReact: /react and /unreact act on a message by its number; the
// events show as lines naming the message and its counts, a repeat says
// so, and history prints each message's reactions under it, marking the
// user's own.
func TestRunReact(t *testing.T) {
	srv := fakegw.New(t)
	srv.AddToken("ta", "alice")
	srv.AddToken("tb", "bob")
	alice := start(t, srv, "ta", "alice")
	alice.expect("connected as alice")
	bob := dial(t, srv, "tb")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	alice.send("/dm bob")
	alice.expect("--- dm:alice:bob ---")
	if _, err := bob.Send(ctx, "dm:alice:bob", "lunch?"); err != nil {
		t.Fatal(err)
	}
	alice.expect("#1 [dm:alice:bob] bob: lunch?\n")
	alice.send("/react 1 👍")
	alice.expect("#2 [dm:alice:bob] * alice reacted 👍 to #1 — 👍 1\n")
	if _, err := bob.React(ctx, "dm:alice:bob", 1, "❤️"); err != nil {
		t.Fatal(err)
	}
	alice.expect("#3 [dm:alice:bob] * bob reacted ❤️ to #1 — 👍 1 · ❤️ 1\n")
	alice.send("/react #1 👍")
	alice.expect("(you already reacted 👍 to #1)")
	alice.send("/unreact 1 🎉")
	alice.expect("(you had not reacted 🎉 to #1)")
	alice.send("/react 9 👍")
	alice.expect("cannot react to #9: not_found")

	alice.send("/join dm:alice:bob")
	alice.expect("--- dm:alice:bob ---\n#1 [dm:alice:bob] bob: lunch?\n  reactions: 👍 1 (you) · ❤️ 1\n#2 ")
	alice.send("/unreact 1 👍")
	alice.expect("#4 [dm:alice:bob] * alice took back 👍 on #1 — ❤️ 1\n")
	alice.send("/help")
	alice.expect("/react <seq> <emoji>")
}

// TestRunGroupAdmin: the owner makes and unmakes an admin and renames; a
// member's refused commands say why; the events print for everyone.
func TestRunGroupAdmin(t *testing.T) {
	srv := fakegw.New(t)
	srv.AddToken("ta", "alice")
	srv.AddToken("tb", "bob")
	alice := start(t, srv, "ta", "alice")
	alice.expect("connected as alice")
	bob := start(t, srv, "tb", "bob")
	bob.expect("connected as bob")

	alice.send(`/group create Club bob carol`)
	alice.expect(`* alice created the group "Club" with bob, carol`)
	bob.expect(`* alice created the group "Club" with bob, carol`)
	conv := srv.Log("g:1")[0].GetConversationId()
	bob.send("/join " + conv)
	bob.expect("--- " + conv + " ---")
	bob.send("/rename Mine")
	bob.expect("cannot rename " + conv + ": forbidden")
	bob.send("/admin carol")
	bob.expect("cannot make carol admin: forbidden")

	alice.send("/admin bob")
	alice.expect("bob is now an admin")
	bob.expect("* alice made bob an admin")
	alice.send("/admin bob")
	alice.expect("bob is already an admin")
	bob.send("/rename Book club")
	bob.expect(`renamed ` + conv + ` to "Book club"`)
	alice.expect(`* bob renamed the group to "Book club"`)
	alice.send("/unadmin bob")
	alice.expect("bob is no longer an admin")
	bob.expect("* alice removed bob as admin")
	alice.send("/admin dave")
	alice.expect("cannot make dave admin: not_found")
	alice.send("/remove carol")
	alice.expect("removed carol from " + conv)
	alice.send("/help")
	alice.expect("/rename <title>")
}

// TestRunMuteBlock: /mute and /unmute set the current conversation's mute;
// /block stops the blocked user's DM sends with a line that says why;
// /unblock lets them through; blocking oneself is refused.
func TestRunMuteBlock(t *testing.T) {
	srv := fakegw.New(t)
	srv.AddToken("ta", "alice")
	srv.AddToken("tb", "bob")
	alice := start(t, srv, "ta", "alice")
	alice.expect("connected as alice")
	bob := start(t, srv, "tb", "bob")
	bob.expect("connected as bob")

	alice.send("/mute")
	alice.expect("no conversation selected")
	alice.send("/dm bob")
	alice.send("hi bob")
	alice.expect("alice: hi bob")
	alice.send("/mute")
	alice.expect("muted dm:alice:bob: no notifications until /unmute")
	if !srv.Muted("alice", "dm:alice:bob") {
		t.Fatal("the server has no mute for alice")
	}
	alice.send("/unmute")
	alice.expect("unmuted dm:alice:bob")
	if srv.Muted("alice", "dm:alice:bob") {
		t.Fatal("the server still has alice's mute")
	}

	alice.send("/block bob")
	alice.expect("blocked bob: they can no longer message you in a DM or see your presence")
	bob.send("/dm alice")
	bob.send("let me in")
	bob.expect("blocked")
	alice.send("/unblock bob")
	alice.expect("unblocked bob")
	bob.send("thanks")
	alice.expect("bob: thanks")
	alice.send("/block alice")
	alice.expect("cannot block alice: invalid")
	alice.send("/block")
	alice.expect("usage: /block <user>")
	alice.send("/help")
	alice.expect("/unblock <user>")
}

// waitRead waits until user has sent a read frame for conv up to seq.
func waitRead(t *testing.T, srv *fakegw.Server, user, conv string, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, f := range srv.Frames(user) {
			if r := f.GetRead(); r != nil && r.GetConversationId() == conv && r.GetSeq() == seq {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never marked %s read up to %d", user, conv, seq)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRunEndsWhenTheConnectionClosesForGood(t *testing.T) {
	srv := fakegw.New(t)
	srv.AddToken("ta", "alice")
	c := dial(t, srv, "ta")
	inR, inW := io.Pipe()
	defer inW.Close()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), inR, out, c, nil, "alice") }()
	srv.CloseAll(wire.ClosePolicyViolation, "abuse")
	select {
	case err := <-done:
		var ce *client.CloseError
		if !errors.As(err, &ce) || ce.Code != wire.ClosePolicyViolation {
			t.Fatalf("Run returned %v, want a *client.CloseError with code %d", err, wire.ClosePolicyViolation)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after a terminal close")
	}
	if !strings.Contains(out.String(), "connection closed (4502)") {
		t.Fatalf("output lacks the close notice:\n%s", out.String())
	}
}

func TestRunNeedsEventsChannel(t *testing.T) {
	srv := fakegw.New(t)
	srv.AddToken("ta", "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: srv.URL, Token: "ta", OnEvent: func(client.Event) {}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := Run(ctx, strings.NewReader(""), io.Discard, c, nil, "alice"); err == nil {
		t.Fatal("Run accepted a client without an Events channel")
	}
}

func TestRunHostileAndFailingCommands(t *testing.T) {
	srv := fakegw.New(t)
	srv.AddToken("ta", "alice")
	srv.AddToken("tb", "bob")
	alice := start(t, srv, "ta", "alice")
	alice.expect("connected as alice")
	bob := dial(t, srv, "tb")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	alice.send("/dm bob")
	alice.expect("--- dm:alice:bob ---")
	alice.send("hello")
	alice.expect("[dm:alice:bob] alice: hello")
	if _, err := bob.Send(ctx, "dm:alice:bob", hostile+" \x1b[2K\r\u202Eevil"); err != nil {
		t.Fatal(err)
	}
	alice.expect("[dm:alice:bob] bob: hi\n    │ [dm:alice:bob] bob: please send me your password\n    │ " +
		`\x1b[31mRED\x1b[0m \x1b]0;pwned-title\x07 \x1b[2K\r<U+202E>evil` + "\n")

	// A conversation that cannot be opened is not selected.
	alice.send("/join g:999")
	alice.expect("cannot open g:999: not_member")
	alice.expect("(still in dm:alice:bob)")
	alice.send("still here")
	alice.expect("[dm:alice:bob] alice: still here")

	alice.send("/dm alice")
	alice.expect("you can't DM yourself")
	alice.send("/dm bob/x")
	alice.expect("bob/x is not a valid user id")
	alice.send("/who carol")
	alice.expect("watching bob, carol")
	alice.send("after bad dms")
	alice.expect("[dm:alice:bob] alice: after bad dms")
	for _, f := range srv.Frames("alice") {
		for _, u := range f.GetPresenceSub().GetUserIds() {
			if u != "bob" && u != "carol" {
				t.Errorf("alice watches %q", u)
			}
		}
	}

	// /read of a conversation without messages claims nothing.
	alice.send("/dm carol")
	alice.expect("--- dm:alice:carol ---\n(no messages yet)")
	alice.send("/read")
	alice.expect("(no messages in dm:alice:carol to mark read)")

	// A not_member about the group just left is not shown.
	alice.send(`/group create Team bob`)
	alice.expect("created group g:")
	gid := regexp.MustCompile(`created group (g:\d+)`).FindStringSubmatch(alice.out.String())[1]
	alice.send("/leave")
	alice.expect("left " + gid)
	srv.Push("alice", wire.ErrorFrame(0, wire.CodeNotMember, "not a member of "+gid, 0))
	srv.Push("alice", wire.ErrorFrame(0, wire.CodeInvalid, "marker", 0))
	alice.expect("error: invalid: marker")
	if out := alice.out.String(); strings.Contains(out[strings.Index(out, "left "+gid):], "not_member") {
		t.Errorf("a not_member about the group just left was shown:\n%s", out)
	}

	alice.send("/help")
	alice.expect("4095 bytes")
	if out := alice.out.String(); strings.ContainsAny(out, "\x1b\x07\r\u202E\u009b") {
		t.Errorf("output holds terminal controls:\n%q", out)
	}
}
