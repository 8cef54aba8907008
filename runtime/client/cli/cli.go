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
	"strconv"
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
  /remove <user>                      remove a member (owner: anyone; admins: members)
  /admin <user>                       make a member an admin (the owner only)
  /unadmin <user>                     make an admin a plain member again (the owner only)
  /rename <title>                     rename the current group (owner and admins)
  /history                            show older messages of the current conversation
  /inbox                              list your conversations
  /who <user...>                      watch users' presence
  /read                               mark the current conversation read
  /members                            list the current conversation's members
  /reply <seq> <text>                 reply to message #<seq> here (the number a message line starts with)
  /edit <new text>                    replace the text of your last message here
  /delete                             delete your last message here
  /react <seq> <emoji>                react to message #<seq> here (e.g. /react 7 👍)
  /unreact <seq> <emoji>              take your reaction back
  /mute                               no offline notifications for the current conversation
  /unmute                             notifications again
  /block <user>                       <user> can no longer message you in a DM or see your presence
  /unblock <user>                     lift the block
  /help                               this text
  /quit                               exit
any other line is sent to the current conversation (start it with // to send a leading /)
a terminal cuts a typed or pasted line at 4095 bytes without a warning; the server
takes messages up to its --max-message-bytes (4096 bytes by default)`

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
	s := &session{ctx: ctx, out: out, c: c, rest: rest, user: user, watch: map[string]bool{}, left: map[string]time.Time{},
		mine: map[string]uint64{}, gone: map[string]map[uint64]bool{}}
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
	s.printf("connected as %s. /help lists commands.", Sanitize(user))
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
	// left holds the groups left in this session and when: the server may
	// still answer an ack or read of such a group, sent before the leave
	// took effect, with not_member, which says nothing new.
	left map[string]time.Time
	// mine is the seq of the user's newest text message per conversation
	// seen in this session (what /edit and /delete act on), and gone the
	// seqs deleted since.
	mine map[string]uint64
	gone map[string]map[uint64]bool
}

// printf prints one line (or several, for /help). Every string from the
// network must already be sanitised by its caller (Sanitize, SanitizeText,
// errText), which is what keeps a newline in it from starting a line of its
// own; as a second line of defence printf escapes any terminal control left
// in the result except the newlines.
func (s *session) printf(format string, args ...any) {
	lines := strings.Split(fmt.Sprintf(format, args...), "\n")
	for i, l := range lines {
		lines[i] = Sanitize(l)
	}
	fmt.Fprint(s.out, strings.Join(lines, "\n")+"\n")
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
		s.say(cmd.text, 0)
	case "reply":
		s.say(cmd.text, cmd.seq)
	case "dm":
		if cmd.args[0] == s.user {
			s.printf("you can't DM yourself")
			break
		}
		if s.open(DMID(s.user, cmd.args[0]), true) {
			s.who(cmd.args[:1]) // show whether the peer is online now, and follow it
		}
	case "join":
		s.open(cmd.args[0], false)
	case "group-create":
		s.createGroup(cmd.args[0], cmd.args[1:])
	case "add":
		s.add(cmd.args)
	case "leave":
		s.leave()
	case "remove":
		s.remove(cmd.args[0])
	case "admin", "unadmin":
		s.setRole(cmd.args[0], cmd.name == "admin")
	case "rename":
		s.rename(cmd.text)
	case "history":
		s.history()
	case "inbox":
		s.inbox()
	case "members":
		s.members()
	case "who":
		s.who(cmd.args)
	case "read":
		if s.needConv() {
			s.markRead(true)
		}
	case "edit":
		s.change(cmd.text, false)
	case "delete":
		s.change("", true)
	case "react", "unreact":
		s.react(cmd.seq, cmd.text, cmd.name == "unreact")
	case "mute", "unmute":
		s.mute(cmd.name == "mute")
	case "block", "unblock":
		s.block(cmd.args[0], cmd.name == "block")
	}
	return false
}

// command is one parsed input line.
type command struct {
	// name: "" (blank line), "say", or a command name; "/group create" is
	// "group-create".
	name string
	args []string
	// text is the message of "say" and "reply", the new text of "edit",
	// the emoji of "react" and "unreact", the title of "rename".
	text string
	// seq is the message "reply" answers, "react" and "unreact" act on.
	seq uint64
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
	if c, ok, err := parseTextCommand(trimmed); ok {
		return c, err
	}
	return parseArgsCommand(trimmed)
}

// parseTextCommand parses the commands whose last argument is the rest of
// the line as typed (/edit, /rename, /reply) or a seq and an emoji (/react,
// /unreact); ok is false for any other command.
func parseTextCommand(trimmed string) (c command, ok bool, err error) {
	switch {
	case trimmed == "/edit" || strings.HasPrefix(trimmed, "/edit "):
		// The rest of the line is the new text, as typed (no quoting).
		text := strings.TrimSpace(strings.TrimPrefix(trimmed, "/edit"))
		if text == "" {
			return command{}, true, errors.New("usage: /edit <new text>")
		}
		return command{name: "edit", text: text}, true, nil
	case trimmed == "/rename" || strings.HasPrefix(trimmed, "/rename "):
		// The rest of the line is the title, as typed (no quoting).
		title := strings.TrimSpace(strings.TrimPrefix(trimmed, "/rename"))
		if title == "" {
			return command{}, true, errors.New("usage: /rename <title>")
		}
		return command{name: "rename", text: title}, true, nil
	case trimmed == "/reply" || strings.HasPrefix(trimmed, "/reply "):
		// "/reply <seq> <text>": the rest of the line after the seq is the
		// text, as typed (no quoting); the seq may be written "#7".
		rest := strings.TrimSpace(strings.TrimPrefix(trimmed, "/reply"))
		num, text := rest, ""
		if i := strings.IndexAny(rest, " \t"); i >= 0 {
			num, text = rest[:i], strings.TrimSpace(rest[i+1:])
		}
		if text == "" {
			return command{}, true, errors.New("usage: /reply <seq> <text>")
		}
		seq, err := strconv.ParseUint(strings.TrimPrefix(num, "#"), 10, 64)
		if err != nil || seq == 0 {
			return command{}, true, fmt.Errorf("%s is not a message number; usage: /reply <seq> <text>", Sanitize(num))
		}
		return command{name: "reply", text: text, seq: seq}, true, nil
	}
	for _, name := range []string{"react", "unreact"} {
		if trimmed != "/"+name && !strings.HasPrefix(trimmed, "/"+name+" ") {
			continue
		}
		// "/react <seq> <emoji>"; the seq may be written "#7".
		usage := fmt.Sprintf("usage: /%s <seq> <emoji>", name)
		f := strings.Fields(strings.TrimPrefix(trimmed, "/"+name))
		if len(f) != 2 {
			return command{}, true, errors.New(usage)
		}
		seq, err := strconv.ParseUint(strings.TrimPrefix(f[0], "#"), 10, 64)
		if err != nil || seq == 0 {
			return command{}, true, fmt.Errorf("%s is not a message number; %s", Sanitize(f[0]), usage)
		}
		return command{name: name, text: f[1], seq: seq}, true, nil
	}
	return command{}, false, nil
}

// parseArgsCommand parses the commands of blank-separated arguments
// ("double quoted" runs kept together).
func parseArgsCommand(trimmed string) (command, error) {
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
			return command{}, fmt.Errorf("%s is not a valid user id (user ids have no ':'); use /join for a conversation id", Sanitize(args[0]))
		}
		if err := checkUserIDs(args); err != nil {
			return command{}, err
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
		if err := checkUserIDs(args); err != nil {
			return command{}, err
		}
	case "remove", "admin", "unadmin", "block", "unblock":
		if err := want(1, 1, "/"+name+" <user>"); err != nil {
			return command{}, err
		}
		if err := checkUserIDs(args); err != nil {
			return command{}, err
		}
	case "who":
		if err := want(1, -1, "/who <user...>"); err != nil {
			return command{}, err
		}
		if err := checkUserIDs(args); err != nil {
			return command{}, err
		}
	case "leave", "history", "inbox", "read", "help", "quit", "delete", "members", "mute", "unmute":
		if err := want(0, 0, "/"+name); err != nil {
			return command{}, err
		}
	default:
		return command{}, fmt.Errorf("unknown command /%s; /help lists commands", name)
	}
	return command{name: name, args: args}, nil
}

// ValidUserID reports whether id is a valid user id (wire.ValidID).
func ValidUserID(id string) bool { return wire.ValidID(id) }

// checkUserIDs returns an error naming the first id that is not a valid
// user id, before it reaches a conversation id or the presence watch list.
func checkUserIDs(ids []string) error {
	for _, id := range ids {
		if !ValidUserID(id) {
			return fmt.Errorf("%s is not a valid user id: 1..64 characters of A-Z a-z 0-9 . _ @ -", Sanitize(id))
		}
	}
	return nil
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

// say sends text to the current conversation, as a reply to the message at
// seq replyTo unless it is 0.
func (s *session) say(text string, replyTo uint64) {
	if !s.needConv() {
		return
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	var err error
	if replyTo != 0 {
		_, err = s.c.SendReply(ctx, s.conv, text, replyTo)
	} else {
		_, err = s.c.Send(ctx, s.conv, text)
	}
	var acc *client.AcceptedError
	switch {
	case errors.As(err, &acc):
		s.printf("pending: %q waits in this region's outbox until %s is reachable; it appears here once sequenced",
			text, acc.Accepted.GetHomeRegion())
	case err != nil:
		s.printf("not sent: %s", errText(err))
	}
	// The message itself is printed when its event arrives.
}

// open switches to conv and shows its newest page. It reports whether it
// switched: a conversation that cannot be read (not_found, not_member,
// invalid, or any other error) leaves the current one selected. A DM that
// does not exist yet is selected: the first message creates it.
func (s *session) open(conv string, dm bool) bool {
	ctx, cancel := s.callCtx()
	defer cancel()
	res, err := s.c.History(ctx, conv, 0, 0, PageSize)
	var we *wire.Error
	switch {
	case err == nil:
	case dm && errors.As(err, &we) && (we.Code == wire.CodeNotFound || we.Code == wire.CodeNotMember):
		s.conv, s.oldest, s.newest, s.read = conv, 0, 0, 0
		s.printf("--- %s ---", Sanitize(conv))
		s.printf("(no messages yet)")
		return true
	default:
		s.printf("cannot open %s: %s", Sanitize(conv), errText(err))
		if s.conv != "" {
			s.printf("(still in %s)", Sanitize(s.conv))
		}
		return false
	}
	s.conv, s.oldest, s.newest, s.read = conv, 0, 0, 0
	delete(s.left, conv) // joined again: its errors count again
	s.printf("--- %s ---", Sanitize(conv))
	msgs := slices.Clone(res.GetMessages())
	slices.Reverse(msgs) // newest first -> oldest first
	if len(msgs) == 0 {
		s.printf("(no messages yet)")
		return true
	}
	for _, m := range msgs {
		s.show(m)
	}
	s.oldest, s.newest = msgs[0].GetSeq(), msgs[len(msgs)-1].GetSeq()
	s.markRead(false)
	return true
}

func (s *session) history() {
	if !s.needConv() {
		return
	}
	if s.oldest <= 1 {
		s.printf("(beginning of %s)", Sanitize(s.conv))
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
	s.printf("--- earlier in %s ---", Sanitize(s.conv))
	for _, m := range msgs {
		s.show(m)
	}
	if len(msgs) > 0 {
		s.oldest = msgs[0].GetSeq()
	}
	if !res.GetHasMore() {
		s.oldest = 1
		s.printf("(beginning of %s)", Sanitize(s.conv))
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
	s.printf("created group %s %s", Sanitize(id), quote(title))
	s.open(id, false)
}

func (s *session) add(users []string) {
	if !s.needConv() || !s.needREST() {
		return
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	if _, err := s.rest.AddMembers(ctx, s.conv, users); err != nil {
		s.printf("cannot add %s: %s", joinClean(users), errText(err))
		return
	}
	s.printf("added %s to %s", joinClean(users), Sanitize(s.conv))
}

func (s *session) leave() {
	if !s.removeMember(s.user, "leave "+Sanitize(s.conv)) {
		return
	}
	s.printf("left %s", Sanitize(s.conv))
	s.left[s.conv] = time.Now()
	s.conv, s.oldest, s.newest, s.read = "", 0, 0, 0
}

// remove removes user from the current group.
func (s *session) remove(user string) {
	if s.removeMember(user, "remove "+Sanitize(user)) {
		s.printf("removed %s from %s", Sanitize(user), Sanitize(s.conv))
	}
}

// removeMember removes user from the current group over REST, printing
// "cannot <what>: <error>" when it fails.
func (s *session) removeMember(user, what string) bool {
	if !s.needConv() || !s.needREST() {
		return false
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	if _, err := s.rest.RemoveMember(ctx, s.conv, user); err != nil {
		s.printf("cannot %s: %s", what, errText(err))
		return false
	}
	return true
}

// setRole makes user an admin of the current group, or a member again.
func (s *session) setRole(user string, admin bool) {
	if !s.needConv() {
		return
	}
	role := "member"
	if admin {
		role = "admin"
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	ev, err := s.c.SetRole(ctx, s.conv, user, role)
	if err != nil {
		s.printf("cannot make %s %s: %s", Sanitize(user), role, errText(err))
		return
	}
	switch {
	case ev.GetSeq() == 0:
		s.printf("%s is already %s", Sanitize(user), map[bool]string{true: "an admin", false: "not an admin"}[admin])
	case admin:
		s.printf("%s is now an admin", Sanitize(user))
	default:
		s.printf("%s is no longer an admin", Sanitize(user))
	}
}

// mute mutes (or unmutes) the current conversation, until unmuted.
func (s *session) mute(on bool) {
	if !s.needConv() {
		return
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	var err error
	if on {
		err = s.c.Mute(ctx, s.conv, 0)
	} else {
		err = s.c.Unmute(ctx, s.conv)
	}
	if err != nil {
		s.printf("cannot %s %s: %s", map[bool]string{true: "mute", false: "unmute"}[on], Sanitize(s.conv), errText(err))
		return
	}
	if on {
		s.printf("muted %s: no notifications until /unmute", Sanitize(s.conv))
	} else {
		s.printf("unmuted %s", Sanitize(s.conv))
	}
}

// block blocks (or unblocks) user.
func (s *session) block(user string, on bool) {
	ctx, cancel := s.callCtx()
	defer cancel()
	var err error
	if on {
		err = s.c.Block(ctx, user)
	} else {
		err = s.c.Unblock(ctx, user)
	}
	switch {
	case err != nil:
		s.printf("cannot %s %s: %s", map[bool]string{true: "block", false: "unblock"}[on], Sanitize(user), errText(err))
	case on:
		s.printf("blocked %s: they can no longer message you in a DM or see your presence", Sanitize(user))
	default:
		s.printf("unblocked %s", Sanitize(user))
	}
}

// rename sets the current group's title.
func (s *session) rename(title string) {
	if !s.needConv() {
		return
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	if _, err := s.c.Rename(ctx, s.conv, title); err != nil {
		s.printf("cannot rename %s: %s", Sanitize(s.conv), errText(err))
		return
	}
	s.printf("renamed %s to %s", Sanitize(s.conv), quote(title))
}

// members prints the current group's members, the owner and admins marked.
func (s *session) members() {
	if !s.needConv() || !s.needREST() {
		return
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	ms, err := s.rest.Members(ctx, s.conv)
	if err != nil {
		s.printf("cannot list members: %s", errText(err))
		return
	}
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = Sanitize(m.UserID)
		if m.Role == "owner" || m.Role == "admin" {
			names[i] += " (" + m.Role + ")"
		}
	}
	s.printf("members of %s: %s", Sanitize(s.conv), strings.Join(names, ", "))
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
	s.printf("watching %s", joinClean(all))
}

// markRead moves the read pointer of the current conversation to the newest
// message shown (force: report it even when nothing changed).
func (s *session) markRead(force bool) {
	if s.newest == 0 {
		if force {
			s.printf("(no messages in %s to mark read)", Sanitize(s.conv))
		}
		return
	}
	if s.newest <= s.read {
		if force {
			s.printf("%s is read up to #%d", Sanitize(s.conv), s.read)
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
		s.printf("%s is read up to #%d", Sanitize(s.conv), s.read)
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
		s.show(m)
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
			s.printf("[%s] %s is typing…", Sanitize(e.Typing.GetConversationId()), Sanitize(e.Typing.GetUserId()))
		}
	case client.ErrorEvent:
		if s.aboutLeft(e.Err) {
			return
		}
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

// show prints message m: m's line (FormatMessage) numbered with its seq,
// the number /reply and /react take, then for a reply the line quoting the
// message it answers (FormatQuote) and the line of its reactions
// (FormatReactions).
func (s *session) show(m *parleyv1.Message) {
	s.printf("#%d %s", m.GetSeq(), FormatMessage(m))
	if q := FormatQuote(m); q != "" {
		s.printf("%s", q) // under the reply it belongs to
	}
	if r := FormatReactions(m.GetReactions()); r != "" && !isReaction(m) {
		s.printf("%s", r)
	}
	s.noteMine(m)
}

func isReaction(m *parleyv1.Message) bool {
	return m.GetKind() == parleyv1.MessageKind_MESSAGE_KIND_REACTION
}

// react adds (or with remove takes back) the user's reaction emoji on
// message seq of the current conversation. Success shows when the event
// arrives; a reaction that changes nothing says so.
func (s *session) react(seq uint64, emoji string, remove bool) {
	if !s.needConv() {
		return
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	var ev *parleyv1.Message
	var err error
	if remove {
		ev, err = s.c.Unreact(ctx, s.conv, seq, emoji)
	} else {
		ev, err = s.c.React(ctx, s.conv, seq, emoji)
	}
	switch {
	case err != nil:
		s.printf("cannot react to #%d: %s", seq, errText(err))
	case ev.GetSeq() == 0 && remove:
		s.printf("(you had not reacted %s to #%d)", Sanitize(emoji), seq)
	case ev.GetSeq() == 0:
		s.printf("(you already reacted %s to #%d)", Sanitize(emoji), seq)
	}
}

// noteMine keeps the seq of the user's newest text message per
// conversation, and forgets a deleted one.
func (s *session) noteMine(m *parleyv1.Message) {
	conv := m.GetConversationId()
	switch m.GetKind() {
	case parleyv1.MessageKind_MESSAGE_KIND_TEXT:
		if m.GetSenderId() == s.user && !m.GetDeleted() && !s.gone[conv][m.GetSeq()] && m.GetSeq() > s.mine[conv] {
			s.mine[conv] = m.GetSeq()
		}
	case parleyv1.MessageKind_MESSAGE_KIND_DELETED:
		if s.gone[conv] == nil {
			s.gone[conv] = map[uint64]bool{}
		}
		s.gone[conv][m.GetTargetSeq()] = true
		if s.mine[conv] == m.GetTargetSeq() {
			delete(s.mine, conv)
		}
	}
}

// change edits (text) or deletes the user's newest text message in the
// current conversation.
func (s *session) change(text string, del bool) {
	if !s.needConv() {
		return
	}
	seq := s.mine[s.conv]
	if seq == 0 {
		s.printf("no message of yours in %s to change in this session", Sanitize(s.conv))
		return
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	var err error
	if del {
		_, err = s.c.Delete(ctx, s.conv, seq)
	} else {
		_, err = s.c.Edit(ctx, s.conv, seq, text)
	}
	if err != nil {
		what := "edit"
		if del {
			what = "delete"
		}
		s.printf("cannot %s your message %d: %s", what, seq, errText(err))
	}
	// Success is shown when the event arrives, like a send.
}

// leftQuiet is how long after /leave a not_member error that names no
// conversation is taken to be about the group just left.
const leftQuiet = 5 * time.Second

// aboutLeft reports whether err is a not_member answer to an ack or read of
// a group this session left: one that names the group, or names none and
// comes right after a /leave.
func (s *session) aboutLeft(err *wire.Error) bool {
	if err == nil || err.Code != wire.CodeNotMember || len(s.left) == 0 {
		return false
	}
	named := strings.Contains(err.Message, "g:") || strings.Contains(err.Message, "dm:")
	for conv, at := range s.left {
		if mentions(err.Message, conv) || (!named && time.Since(at) < leftQuiet) {
			return true
		}
	}
	return false
}

// mentions reports whether msg names conversation conv (so "g:1" is not
// found in "g:12").
func mentions(msg, conv string) bool {
	for i := 0; ; {
		j := strings.Index(msg[i:], conv)
		if j < 0 {
			return false
		}
		end := i + j + len(conv)
		if end == len(msg) || !ValidUserID(msg[end:end+1]) {
			return true
		}
		i = end
	}
}

// errText renders err for the terminal, sanitised: error messages can come
// from the server (error frames, close reasons, HTTP error bodies).
func errText(err error) string {
	if err == nil {
		return "no error"
	}
	var we *wire.Error
	if errors.As(err, &we) {
		return Sanitize(we.Code + ": " + we.Message)
	}
	return Sanitize(err.Error())
}

// FormatMessage renders a message as one line: "[conv] alice: hi", or a
// "* ..." line for system events. Every field is sanitised (Sanitize); a
// newline in the text continues on an indented line (TextNewline).
func FormatMessage(m *parleyv1.Message) string {
	conv, who := Sanitize(m.GetConversationId()), Sanitize(m.GetSenderId())
	switch m.GetKind() {
	case parleyv1.MessageKind_MESSAGE_KIND_MEDIA:
		md := m.GetMedia()
		return fmt.Sprintf("[%s] %s sent %s (%s, %d bytes)", conv, who, Sanitize(md.GetUrl()), Sanitize(md.GetMime()), md.GetSize())
	case parleyv1.MessageKind_MESSAGE_KIND_CONVERSATION_CREATED:
		if strings.HasPrefix(m.GetConversationId(), "dm:") {
			return fmt.Sprintf("[%s] * %s started the conversation", conv, who)
		}
		title := ""
		if m.GetText() != "" {
			title = " " + quote(m.GetText())
		}
		if len(m.GetMembers()) > 0 {
			return fmt.Sprintf("[%s] * %s created the group%s with %s", conv, who, title, joinClean(m.GetMembers()))
		}
		return fmt.Sprintf("[%s] * %s created the group%s", conv, who, title)
	case parleyv1.MessageKind_MESSAGE_KIND_MEMBER_ADDED:
		return fmt.Sprintf("[%s] * %s added %s", conv, who, joinClean(m.GetMembers()))
	case parleyv1.MessageKind_MESSAGE_KIND_MEMBER_REMOVED:
		if len(m.GetMembers()) == 1 && m.GetMembers()[0] == m.GetSenderId() {
			return fmt.Sprintf("[%s] * %s left", conv, who)
		}
		return fmt.Sprintf("[%s] * %s removed %s", conv, who, joinClean(m.GetMembers()))
	case parleyv1.MessageKind_MESSAGE_KIND_ROLE_CHANGED:
		if m.GetText() == "admin" {
			return fmt.Sprintf("[%s] * %s made %s an admin", conv, who, joinClean(m.GetMembers()))
		}
		return fmt.Sprintf("[%s] * %s removed %s as admin", conv, who, joinClean(m.GetMembers()))
	case parleyv1.MessageKind_MESSAGE_KIND_RENAMED:
		return fmt.Sprintf("[%s] * %s renamed the group to %s", conv, who, quote(m.GetText()))
	case parleyv1.MessageKind_MESSAGE_KIND_OWNER_CHANGED:
		return fmt.Sprintf("[%s] * %s is now the owner", conv, joinClean(m.GetMembers()))
	case parleyv1.MessageKind_MESSAGE_KIND_EDITED:
		return fmt.Sprintf("[%s] * %s edited a message: %s", conv, who, SanitizeText(m.GetText()))
	case parleyv1.MessageKind_MESSAGE_KIND_DELETED:
		return fmt.Sprintf("[%s] * %s deleted a message", conv, who)
	case parleyv1.MessageKind_MESSAGE_KIND_REACTION:
		verb, prep := "reacted", "to"
		if m.GetReactionRemoved() {
			verb, prep = "took back", "on"
		}
		line := fmt.Sprintf("[%s] * %s %s %s %s #%d", conv, who, verb, Sanitize(m.GetEmoji()), prep, m.GetTargetSeq())
		if r := FormatReactions(m.GetReactions()); r != "" {
			line += " —" + strings.TrimPrefix(r, "  reactions:")
		}
		return line
	}
	if m.GetDeleted() {
		return fmt.Sprintf("[%s] %s: (message deleted)", conv, who)
	}
	if m.GetEditedAt() != 0 {
		return fmt.Sprintf("[%s] %s: %s (edited)", conv, who, SanitizeText(m.GetText()))
	}
	return fmt.Sprintf("[%s] %s: %s", conv, who, SanitizeText(m.GetText()))
}

// FormatReactions renders a message's reactions as the line printed under
// it: "  reactions: 👍 2 (you) · ❤️ 1", sanitised; "" when it has none.
func FormatReactions(rs []*parleyv1.Reaction) string {
	if len(rs) == 0 {
		return ""
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = fmt.Sprintf("%s %d", Sanitize(r.GetEmoji()), r.GetCount())
		if r.GetMe() {
			parts[i] += " (you)"
		}
	}
	return "  reactions: " + strings.Join(parts, " · ")
}

// quoteNewlines flattens a quote's text to one line.
var quoteNewlines = strings.NewReplacer("\r\n", " ", "\n", " ")

// FormatQuote renders what a reply answers as the line printed before it:
// "  ↳ in reply to #7 alice: the original text" ("(attachment)" for media,
// "(deleted)" for a message deleted before the reply), sanitised and on one
// line. It is "" for a message that is not a reply, or is deleted.
func FormatQuote(m *parleyv1.Message) string {
	q := m.GetReplyTo()
	if q == nil || m.GetDeleted() {
		return ""
	}
	line := fmt.Sprintf("  ↳ in reply to #%d", q.GetSeq())
	if q.GetSenderId() != "" {
		line += " " + Sanitize(q.GetSenderId())
	}
	switch {
	case q.GetDeleted():
		return line + ": (deleted)"
	case q.GetMedia():
		return line + ": (attachment)"
	}
	return line + ": " + Sanitize(quoteNewlines.Replace(q.GetText()))
}

// FormatReceipt renders another member's receipt ("" for the user's own,
// which come from its other devices and say nothing new), sanitised.
func FormatReceipt(r *parleyv1.Receipt, user string) string {
	if r.GetUserId() == user && r.GetKind() != parleyv1.ReceiptKind_RECEIPT_KIND_READ_BY_ALL {
		return ""
	}
	conv, who, seq := Sanitize(r.GetConversationId()), Sanitize(r.GetUserId()), r.GetSeq()
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
// The user id is sanitised.
func FormatPresence(p *parleyv1.Presence) string {
	who := Sanitize(p.GetUserId())
	switch p.GetStatus() {
	case parleyv1.PresenceStatus_PRESENCE_STATUS_ONLINE:
		return who + " is online"
	case parleyv1.PresenceStatus_PRESENCE_STATUS_OFFLINE:
		if p.GetLastActive() > 0 {
			return who + " was last seen " + time.UnixMilli(p.GetLastActive()).UTC().Format("2006-01-02 15:04:05 UTC")
		}
		return who + " is offline"
	}
	return who + "'s presence is unknown"
}

// FormatState renders one inbox entry: id, title or peer, unread count and
// the last message, sanitised.
func FormatState(st *parleyv1.ConversationState, user string) string {
	var b strings.Builder
	b.WriteString(Sanitize(st.GetConversationId()))
	if st.GetTitle() != "" {
		b.WriteString(" " + quote(st.GetTitle()))
	} else if peer := dmPeer(st.GetConversationId(), user); peer != "" {
		fmt.Fprintf(&b, " (with %s)", Sanitize(peer))
	}
	if st.GetUnread() > 0 {
		fmt.Fprintf(&b, "  %d unread", st.GetUnread())
	}
	if st.GetMuted() {
		b.WriteString("  (muted)")
	}
	if lm := st.GetLastMessage(); lm != nil {
		line := FormatMessage(lm)
		line = strings.TrimPrefix(line, "["+Sanitize(lm.GetConversationId())+"] ")
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
