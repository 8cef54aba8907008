package e2e

import (
	"errors"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// TestKill9AfterSendOK: kill -9 the server right after send_ok, start it on
// the same data dir: the message is in history and seq continues without a
// gap or a repeat.
func TestKill9AfterSendOK(t *testing.T) {
	p := startServer(t, "", "--send-rate", "1000", "--send-burst", "1000")
	const conv = "dm:alice:bob"
	ctx := ctxT(t, 60*time.Second)
	rest := client.NewREST(p.HTTP(), p.token("alice", "web", time.Hour))
	var acked []*parleyv1.SendOk
	for i := 0; i < 20; i++ {
		ok, err := rest.Send(ctx, conv, client.NewClientMsgID(), "durable")
		if err != nil {
			t.Fatal(err)
		}
		acked = append(acked, ok)
	}
	p.kill() // SIGKILL straight after the last send_ok
	p.restart()

	rest = client.NewREST(p.HTTP(), p.token("alice", "web", time.Hour))
	res, err := rest.History(ctx, conv, 0, 0, 200)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[uint64]*parleyv1.Message{}
	for _, m := range res.Messages {
		stored[m.Seq] = m
	}
	for _, ok := range acked {
		m := stored[ok.Seq]
		if m == nil || m.MessageId != ok.MessageId {
			t.Fatalf("send_ok'd seq %d (id %d) is not in history after kill -9: %v", ok.Seq, ok.MessageId, m)
		}
	}
	next, err := rest.Send(ctx, conv, client.NewClientMsgID(), "after restart")
	if err != nil {
		t.Fatal(err)
	}
	if want := acked[len(acked)-1].Seq + 1; next.Seq != want {
		t.Fatalf("first send after restart got seq %d, want %d (no gap, no repeat)", next.Seq, want)
	}
}

// TestGracefulShutdown: on SIGTERM /readyz goes false, connected clients get
// a reconnect frame with a jittered after_ms, the process exits cleanly and
// no acknowledged message is lost.
func TestGracefulShutdown(t *testing.T) {
	p := startServer(t, "", "--drain-window", "2s")
	const conv = "dm:alice:bob"
	ctx := ctxT(t, 60*time.Second)
	alice := connect(t, p, "alice", "phone")
	ok, err := alice.Send(ctx, conv, "before shutdown")
	if err != nil {
		t.Fatal(err)
	}

	hdr := http.Header{"Authorization": {"Bearer " + p.token("bob", "raw", time.Hour)}}
	d := websocket.Dialer{Subprotocols: []string{wire.SubprotocolJSON}}
	ws, _, err := d.Dial(p.WS()+"/v1/ws", hdr)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	codec := wire.Codec{}
	frames := make(chan *parleyv1.ServerFrame, 64)
	closeCode := make(chan int, 1)
	go func() {
		defer close(frames)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					closeCode <- ce.Code
				}
				return
			}
			if f, err := codec.DecodeServer(b); err == nil {
				frames <- f
			}
		}
	}()

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "/readyz false while draining", func() bool {
		resp, err := http.Get(p.HTTP() + "/readyz")
		if err != nil {
			return true // already gone is fine too: it stopped accepting
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	var reconnect *parleyv1.Reconnect
	for f := range frames {
		if r := f.GetReconnect(); r != nil {
			reconnect = r
		}
	}
	if reconnect == nil {
		t.Fatal("no reconnect frame before the connection closed")
	}
	if reconnect.AfterMs >= 2000 {
		t.Fatalf("reconnect after_ms %d outside the 2s drain window", reconnect.AfterMs)
	}
	select {
	case code := <-closeCode:
		if code != wire.CloseDrain {
			t.Fatalf("close code %d, want %d (drain)", code, wire.CloseDrain)
		}
	default:
		t.Fatal("connection ended without a close frame")
	}
	select {
	case <-p.exited:
		if !p.cmd.ProcessState.Success() {
			t.Fatalf("parley exited with %v after SIGTERM:\n%s", p.cmd.ProcessState, p.Logs())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("parley did not exit after SIGTERM")
	}

	p.restart()
	rest := client.NewREST(p.HTTP(), p.token("alice", "web", time.Hour))
	res, err := rest.History(ctx, conv, 0, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Messages) == 0 || res.Messages[0].Seq != ok.Seq || res.Messages[0].Text != "before shutdown" {
		t.Fatalf("after restart the newest message is %v, want seq %d", res.Messages, ok.Seq)
	}
}
