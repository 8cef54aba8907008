package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parleychat/parley/runtime/client"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// TestMediaMessage: a picture sent as a user would, on the embedded store —
// the SDK sender asks REST for an upload, PUTs the file to the signed URL,
// sends a media message naming the object, and the recipient's history shows
// it with its type and size and the object URL serves the same bytes. Sending
// an object that was never uploaded is invalid and stores nothing.
func TestMediaMessage(t *testing.T) {
	p := startServer(t, "")
	ctx := ctxT(t, time.Minute)
	dm := "dm:alice:bob"
	alice, _ := dialSDK(t, p, p.token("alice", "phone", time.Hour), wire.SubprotocolProto, nil)
	if _, err := alice.Send(ctx, dm, "a picture for you"); err != nil {
		t.Fatal(err)
	}

	pic := bytes.Repeat([]byte{0x42}, 3000)
	copy(pic, "\x89PNG\r\n\x1a\n")
	status, body := restCall(t, http.MethodPost, p.HTTP()+"/v1/media/uploads", p.token("alice", "phone", time.Hour),
		[]byte(`{"mime":"image/png","size":3000}`))
	if status != http.StatusOK {
		t.Fatalf("POST /v1/media/uploads: %d %s", status, body)
	}
	var up struct {
		UploadURL string            `json:"upload_url"`
		Method    string            `json:"method"`
		Headers   map[string]string `json:"headers"`
		ObjectURL string            `json:"object_url"`
	}
	if err := json.Unmarshal(body, &up); err != nil || up.UploadURL == "" || up.ObjectURL == "" {
		t.Fatalf("upload answer %s: %v", body, err)
	}
	req, err := http.NewRequestWithContext(ctx, up.Method, up.UploadURL, bytes.NewReader(pic))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range up.Headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PUT the picture: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("PUT the picture: %s", resp.Status)
	}

	ok, err := alice.SendMedia(ctx, dm, &parleyv1.Media{Url: up.ObjectURL, Mime: "image/png", Size: int64(len(pic))})
	if err != nil {
		t.Fatalf("send the media message: %v", err)
	}
	history := allHistory(t, ctx, client.NewREST(p.HTTP(), p.token("bob", "rest", time.Hour)), dm)
	last := history[len(history)-1]
	if last.GetSeq() != ok.GetSeq() || last.GetKind() != parleyv1.MessageKind_MESSAGE_KIND_MEDIA ||
		last.GetMedia().GetUrl() != up.ObjectURL || last.GetMedia().GetMime() != "image/png" || last.GetMedia().GetSize() != int64(len(pic)) {
		t.Fatalf("bob's last message = %v, want the media message at seq %d naming %s", last, ok.GetSeq(), up.ObjectURL)
	}
	got, err := http.Get(p.HTTP() + up.ObjectURL)
	if err != nil {
		t.Fatalf("GET the object: %v", err)
	}
	b, err := io.ReadAll(got.Body)
	_ = got.Body.Close()
	if err != nil || got.StatusCode != http.StatusOK || !bytes.Equal(b, pic) {
		t.Fatalf("GET %s: %s, %d bytes (err %v), want the %d bytes uploaded", up.ObjectURL, got.Status, len(b), err, len(pic))
	}

	never := up.ObjectURL[:strings.LastIndex(up.ObjectURL, "/")+1] + "never-uploaded.png"
	_, err = alice.SendMedia(ctx, dm, &parleyv1.Media{Url: never, Mime: "image/png", Size: 10})
	wantCode(t, "a media message naming an object never uploaded", err, wire.CodeInvalid)
	if n := len(allHistory(t, ctx, client.NewREST(p.HTTP(), p.token("bob", "rest", time.Hour)), dm)); n != len(history) {
		t.Fatalf("history has %d messages after the refused send, want %d", n, len(history))
	}
}
