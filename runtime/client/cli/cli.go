// Package cli is Parley's line-oriented terminal chat (parley chat): it reads
// commands and messages line by line and prints what happens in plain text,
// one event per line, so it works in any terminal, in a pipe and in tests.
package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// PageSize is how many messages /join and /history show.
const PageSize = 20

// callTimeout bounds one command's calls, so a command issued while the
// connection is down reports an error instead of hanging the prompt.
const callTimeout = 30 * time.Second

// Help is the text /help prints.
const Help = `commands:
  /dm <user>                          talk to <user> (direct message)
  /group create <title> [members...]  create a group and switch to it ("quote a title with spaces")
  /join <conversation-id>             switch to a conversation and show its last messages
  /add <user...>                      add users to the current group
  /leave                              leave the current group
  /history                            show older messages of the current conversation
  /inbox                              list your conversations
  /who <user...>                      watch users' presence
  /read                               mark the current conversation read
  /help                               this text
  /quit                               exit
any other line is sent to the current conversation (start it with // to send a leading /)`

// Run runs a chat session for user until /quit, the end of in, the end of
// ctx, or the client stopping for good. c must be dialed without
// Options.OnEvent (Run reads c.Events()); rest may be nil, which disables
// /group, /add, /leave and uses Sync for /inbox. Run returns nil on /quit
// or end of input, ctx's error when it ends, and an error wrapping the
// client's cause when the connection closed for good.
//
// A goroutine reads in; when Run returns while that goroutine is blocked in
// a Read (an idle terminal), it ends at the next line or when in is closed.
func Run(ctx context.Context, in io.Reader, out io.Writer, c *client.Client, rest *client.REST, user string) error {
	events := c.Events()
	if events == nil {
		return errors.New("cli: the client was dialed with Options.OnEvent; the CLI needs its Events channel")
	}
	s := &session{ctx: ctx, out: out, c: c, rest: rest, user: user, watch: map[string]bool{}}
	done := make(chan struct{})
	defer close(done)
	lines := make(chan string)
	scanErr := make(chan error, 1)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 0, 4096), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-done:
				return
			}
		}
		scanErr <- sc.Err()
	}()
	s.printf("connected as %s. /help lists commands.", user)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case line, ok := <-lines:
			if !ok {
				select {
				case err := <-scanErr:
					if err != nil {
						return fmt.Errorf("cli: read input: %w", err)
					}
				default:
				}
				return nil
			}
			if s.line(line) {
				return nil
			}
		case ev, ok := <-events:
			if !ok {
				return fmt.Errorf("cli: connection closed: %w", c.Err())
			}
			if closed, isClosed := ev.(client.ClosedEvent); isClosed {
				s.event(ev)
				return fmt.Errorf("cli: connection closed: %w", closed.Err)
			}
			s.event(ev)
		}
	}
}

// session is the state of one Run.
type session struct {
	ctx  context.Context
	out  io.Writer
	c    *client.Client
	rest *client.REST
	user string
	// conv is the current conversation ("" for none).
	conv string
	// oldest and newest are the lowest and highest seq shown in conv.
	oldest, newest uint64
	// read is the read pointer sent for conv.
	read  uint64
	watch map[string]bool
}

func (s *session) printf(format string, args ...any) {
	fmt.Fprintf(s.out, format+"\n", args...)
}

func (s *session) callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, callTimeout)
}

// line handles one input line; it returns true on /quit.
func (s *session) line(line string) bool {
	cmd, err := parse(line)
	if err != nil {
		s.printf("%v", err)
		return false
	}
	switch cmd.name {
	case "":
	case "quit":
		s.printf("bye")
		return true
	case "help":
		s.printf("%s", Help)
	case "say":
		s.say(cmd.text)
	case "dm":
		s.open(DMID(s.user, cmd.args[0]), true)
		s.who(cmd.args[:1]) // show whether the peer is online now, and follow it
	case "join":
		s.open(cmd.args[0], false)
	case "group-create":
		s.createGroup(cmd.args[0], cmd.args[1:])
	case "add":
		s.add(cmd.args)
	case "leave":
		s.leave()
	case "history":
		s.history()
	case "inbox":
		s.inbox()
	case "who":
		s.who(cmd.args)
	case "read":
		if s.needConv() {
			s.markRead(true)
		}
	}
	return false
}

// command is one parsed input line.
type command struct {
	// name: "" (blank line), "say", or a command name; "/group create" is
	// "group-create".
	name string
	args []string
	// text is the message of "say".
	text string
}

// parse reads one input line. Lines not starting with "/" are messages;
// "//..." sends the line without its first "/".
func parse(line string) (command, error) {
	line = strings.TrimRight(line, "\r\n")
	trimmed := strings.TrimSpace(line)
	switch {
	case trimmed == "":
		return command{}, nil
	case strings.HasPrefix(trimmed, "//"):
		return command{name: "say", text: strings.TrimPrefix(strings.TrimLeft(line, " \t"), "/")}, nil
	case !strings.HasPrefix(trimmed, "/"):
		return command{name: "say", text: line}, nil
	}
	fields, err := splitArgs(trimmed[1:])
	if err != nil {
		return command{}, err
	}
	name, args := fields[0], fields[1:]
	if len(args) == 0 {
		args = nil
	}
	want := func(min, max int, usage string) error {
		if len(args) < min || (max >= 0 && len(args) > max) {
			return fmt.Errorf("usage: %s", usage)
		}
		return nil
	}
	switch name {
	case "dm":
		if err := want(1, 1, "/dm <user>"); err != nil {
			return command{}, err
		}
		if strings.Contains(args[0], ":") {
			return command{}, fmt.Errorf("%q is not a user id (user ids have no ':'); use /join for a conversation id", args[0])
		}
	case "group":
		if len(args) < 2 || args[0] != "create" {
			return command{}, errors.New("usage: /group create <title> [members...]")
		}
		return command{name: "group-create", args: args[1:]}, nil
	case "join":
		if err := want(1, 1, "/join <conversation-id>"); err != nil {
			return command{}, err
		}
	case "add":
		if err := want(1, -1, "/add <user...>"); err != nil {
			return command{}, err
		}
	case "who":
		if err := want(1, -1, "/who <user...>"); err != nil {
			return command{}, err
		}
	case "leave", "history", "inbox", "read", "help", "quit":
		if err := want(0, 0, "/"+name); err != nil {
			return command{}, err
		}
	default:
		return command{}, fmt.Errorf("unknown command /%s; /help lists commands", name)
	}
	return command{name: name, args: args}, nil
}

// splitArgs splits on blanks, keeping "double quoted" runs together.
func splitArgs(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote, have = !inQuote, true
		case (r == ' ' || r == '\t') && !inQuote:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if inQuote {
		return nil, errors.New("unterminated quote")
	}
	if have {
		out = append(out, cur.String())
	}
	if len(out) == 0 || out[0] == "" {
		return nil, errors.New("empty command; /help lists commands")
	}
	return out, nil
}

// DMID is the conversation id of the DM between users a and b:
// "dm:<a>:<b>" with a < b in byte order.
func DMID(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "dm:" + a + ":" + b
}

func (s *session) needConv() bool {
	if s.conv == "" {
		s.printf("no conversation selected: /dm <user>, /join <id> or /group create <title>")
		return false
	}
	return true
}

func (s *session) needREST() bool {
	if s.rest == nil {
		s.printf("this command needs the REST API, which this session has not configured")
		return false
	}
	return true
}

func (s *session) say(text string) {
	if !s.needConv() {
		return
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	if _, err := s.c.Send(ctx, s.conv, text); err != nil {
		s.printf("not sent: %s", errText(err))
	}
	// The message itself is printed when its event arrives.
}

// open switches to conv and shows its newest page.
func (s *session) open(conv string, dm bool) {
	s.conv, s.oldest, s.newest, s.read = conv, 0, 0, 0
	ctx, cancel := s.callCtx()
	defer cancel()
	res, err := s.c.History(ctx, conv, 0, 0, PageSize)
	var we *wire.Error
	switch {
	case err == nil:
	case dm && errors.As(err, &we) && (we.Code == wire.CodeNotFound || we.Code == wire.CodeNotMember):
		s.printf("--- %s ---", conv)
		s.printf("(no messages yet)")
		return
	default:
		s.printf("cannot open %s: %s", conv, errText(err))
		return
	}
	s.printf("--- %s ---", conv)
	msgs := slices.Clone(res.GetMessages())
	slices.Reverse(msgs) // newest first -> oldest first
	if len(msgs) == 0 {
		s.printf("(no messages yet)")
		return
	}
	for _, m := range msgs {
		s.printf("%s", FormatMessage(m))
	}
	s.oldest, s.newest = msgs[0].GetSeq(), msgs[len(msgs)-1].GetSeq()
	s.markRead(false)
}

func (s *session) history() {
	if !s.needConv() {
		return
	}
	if s.oldest <= 1 {
		s.printf("(beginning of %s)", s.conv)
		return
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	res, err := s.c.History(ctx, s.conv, s.oldest, 0, PageSize)
	if err != nil {
		s.printf("cannot load history: %s", errText(err))
		return
	}
	msgs := slices.Clone(res.GetMessages())
	slices.Reverse(msgs)
	s.printf("--- earlier in %s ---", s.conv)
	for _, m := range msgs {
		s.printf("%s", FormatMessage(m))
	}
	if len(msgs) > 0 {
		s.oldest = msgs[0].GetSeq()
	}
	if !res.GetHasMore() {
		s.oldest = 1
		s.printf("(beginning of %s)", s.conv)
	}
}

func (s *session) createGroup(title string, members []string) {
	if !s.needREST() {
		return
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	id, err := s.rest.CreateGroup(ctx, title, members)
	if err != nil {
		s.printf("cannot create group: %s", errText(err))
		return
	}
	s.printf("created group %s %q", id, title)
	s.open(id, false)
}

func (s *session) add(users []string) {
	if !s.needConv() || !s.needREST() {
		return
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	if _, err := s.rest.AddMembers(ctx, s.conv, users); err != nil {
		s.printf("cannot add %s: %s", strings.Join(users, ", "), errText(err))
		return
	}
	s.printf("added %s to %s", strings.Join(users, ", "), s.conv)
}

func (s *session) leave() {
	if !s.needConv() || !s.needREST() {
		return
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	if _, err := s.rest.RemoveMember(ctx, s.conv, s.user); err != nil {
		s.printf("cannot leave %s: %s", s.conv, errText(err))
		return
	}
	s.printf("left %s", s.conv)
	s.conv, s.oldest, s.newest, s.read = "", 0, 0, 0
}

func (s *session) inbox() {
	ctx, cancel := s.callCtx()
	defer cancel()
	var states []*parleyv1.ConversationState
	var err error
	if s.rest != nil {
		states, err = s.rest.Inbox(ctx)
	} else {
		var res *parleyv1.SyncResult
		if res, err = s.c.Sync(ctx, nil); err == nil {
			states = res.GetConversations()
		}
	}
	if err != nil {
		s.printf("cannot load inbox: %s", errText(err))
		return
	}
	if len(states) == 0 {
		s.printf("(no conversations yet: /dm <user> or /group create <title>)")
		return
	}
	for _, st := range states {
		s.printf("%s", FormatState(st, s.user))
	}
}

func (s *session) who(users []string) {
	for _, u := range users {
		s.watch[u] = true
	}
	all := make([]string, 0, len(s.watch))
	for u := range s.watch {
		all = append(all, u)
	}
	slices.Sort(all)
	ctx, cancel := s.callCtx()
	defer cancel()
	if err := s.c.SubscribePresence(ctx, all); err != nil {
		s.printf("cannot watch presence: %s", errText(err))
		return
	}
	s.printf("watching %s", strings.Join(all, ", "))
}

// markRead moves the read pointer of the current conversation to the newest
// message shown (force: report it even when nothing changed).
func (s *session) markRead(force bool) {
	if s.newest <= s.read {
		if force {
			s.printf("%s is read up to #%d", s.conv, s.read)
		}
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Second)
	defer cancel()
	if err := s.c.Read(ctx, s.conv, s.newest); err != nil {
		s.printf("cannot mark read: %s", errText(err))
		return
	}
	s.read = s.newest
	if force {
		s.printf("%s is read up to #%d", s.conv, s.read)
	}
}

// event prints one client event.
func (s *session) event(ev client.Event) {
	switch e := ev.(type) {
	case client.MessageEvent:
		m := e.Message
		if m.GetConversationId() == s.conv {
			if m.GetSeq() <= s.newest {
				return // already on screen from /join
			}
			s.newest = m.GetSeq()
			if s.oldest == 0 {
				s.oldest = m.GetSeq()
			}
		}
		s.printf("%s", FormatMessage(m))
		if m.GetConversationId() == s.conv {
			if m.GetSenderId() == s.user {
				s.read = max(s.read, m.GetSeq()) // sending advances the sender's read pointer
			} else {
				s.markRead(false)
			}
		}
	case client.ReceiptEvent:
		if line := FormatReceipt(e.Receipt, s.user); line != "" {
			s.printf("%s", line)
		}
	case client.PresenceEvent:
		s.printf("%s", FormatPresence(e.Presence))
	case client.TypingEvent:
		if e.Typing.GetUserId() != s.user {
			s.printf("[%s] %s is typing…", e.Typing.GetConversationId(), e.Typing.GetUserId())
		}
	case client.ErrorEvent:
		s.printf("error: %s", errText(e.Err))
	case client.ReconnectingEvent:
		s.printf("… connection lost (%s); reconnecting in %s (attempt %d)", errText(e.Err), e.Delay.Round(time.Millisecond), e.Attempt)
	case client.ReconnectedEvent:
		s.printf("… reconnected")
	case client.ClosedEvent:
		if e.Code != 0 {
			s.printf("connection closed (%d): %s", e.Code, errText(e.Err))
		} else {
			s.printf("connection closed: %s", errText(e.Err))
		}
	}
}

func errText(err error) string {
	if err == nil {
		return "no error"
	}
	var we *wire.Error
	if errors.As(err, &we) {
		return we.Code + ": " + we.Message
	}
	return err.Error()
}

// FormatMessage renders a message as one line: "[conv] alice: hi", or a
// "* ..." line for system events.
func FormatMessage(m *parleyv1.Message) string {
	conv, who := m.GetConversationId(), m.GetSenderId()
	switch m.GetKind() {
	case parleyv1.MessageKind_MESSAGE_KIND_MEDIA:
		md := m.GetMedia()
		return fmt.Sprintf("[%s] %s sent %s (%s, %d bytes)", conv, who, md.GetUrl(), md.GetMime(), md.GetSize())
	case parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED:
		if strings.HasPrefix(conv, "dm:") {
			return fmt.Sprintf("[%s] * %s started the conversation", conv, who)
		}
		title := ""
		if m.GetText() != "" {
			title = fmt.Sprintf(" %q", m.GetText())
		}
		if len(m.GetMembers()) > 0 {
			return fmt.Sprintf("[%s] * %s created the group%s with %s", conv, who, title, strings.Join(m.GetMembers(), ", "))
		}
		return fmt.Sprintf("[%s] * %s created the group%s", conv, who, title)
	case parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED:
		return fmt.Sprintf("[%s] * %s added %s", conv, who, strings.Join(m.GetMembers(), ", "))
	case parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED:
		if len(m.GetMembers()) == 1 && m.GetMembers()[0] == who {
			return fmt.Sprintf("[%s] * %s left", conv, who)
		}
		return fmt.Sprintf("[%s] * %s removed %s", conv, who, strings.Join(m.GetMembers(), ", "))
	}
	return fmt.Sprintf("[%s] %s: %s", conv, who, m.GetText())
}

// FormatReceipt renders another member's receipt ("" for the user's own,
// which come from its other devices and say nothing new).
func FormatReceipt(r *parleyv1.Receipt, user string) string {
	if r.GetUserId() == user && r.GetKind() != parleyv1.ReceiptKind_RECEIPT_KIND_READ_BY_ALL {
		return ""
	}
	conv, who, seq := r.GetConversationId(), r.GetUserId(), r.GetSeq()
	switch r.GetKind() {
	case parleyv1.ReceiptKind_RECEIPT_KIND_DELIVERED:
		return fmt.Sprintf("[%s] ✓ delivered to %s up to #%d", conv, who, seq)
	case parleyv1.ReceiptKind_RECEIPT_KIND_READ:
		return fmt.Sprintf("[%s] ✓✓ read by %s up to #%d", conv, who, seq)
	case parleyv1.ReceiptKind_RECEIPT_KIND_READ_BY_ALL:
		return fmt.Sprintf("[%s] ✓✓ read by everyone up to #%d", conv, seq)
	}
	return ""
}

// FormatPresence renders a presence change: "bob is online", "bob was last
// seen 2006-01-02 15:04:05 UTC", "bob is offline" (never seen), or unknown.
func FormatPresence(p *parleyv1.Presence) string {
	switch p.GetStatus() {
	case parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE:
		return p.GetUserId() + " is online"
	case parleyv1.PresenceStatus_PRESENCE_STATUS_OFFLINE:
		if p.GetLastActive() > 0 {
			return p.GetUserId() + " was last seen " + time.UnixMilli(p.GetLastActive()).UTC().Format("2006-01-02 15:04:05 UTC")
		}
		return p.GetUserId() + " is offline"
	}
	return p.GetUserId() + "'s presence is unknown"
}

// FormatState renders one inbox entry: id, title or peer, unread count and
// the last message.
func FormatState(st *parleyv1.ConversationState, user string) string {
	var b strings.Builder
	b.WriteString(st.GetConversationId())
	if st.GetTitle() != "" {
		fmt.Fprintf(&b, " %q", st.GetTitle())
	} else if peer := dmPeer(st.GetConversationId(), user); peer != "" {
		fmt.Fprintf(&b, " (with %s)", peer)
	}
	if st.GetUnread() > 0 {
		fmt.Fprintf(&b, "  %d unread", st.GetUnread())
	}
	if lm := st.GetLastMessage(); lm != nil {
		line := FormatMessage(lm)
		line = strings.TrimPrefix(line, "["+lm.GetConversationId()+"] ")
		fmt.Fprintf(&b, "  last: %s", line)
	}
	return b.String()
}

func dmPeer(conv, user string) string {
	parts := strings.Split(conv, ":")
	if len(parts) != 3 || parts[0] != "dm" {
		return ""
	}
	if parts[1] == user {
		return parts[2]
	}
	return parts[1]
}
