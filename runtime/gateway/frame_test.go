package gateway

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/gateway/transport"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// TestEncodeFrame: frames encoded by the gateway and written by a session's
// writer through the transport are read by an independent WebSocket
// implementation (gorilla's client) as one message each, of the right type
// and payload, at every RFC 6455 length form's boundary (125/126 bytes,
// 65535/65536 bytes), when several go out in one writev, when one goes
// alone, written without waiting, and when a frame is finished from the
// middle. (Interleaving with gorilla's own control frames:
// transport.TestWriteFrames.)
func TestEncodeFrame(t *testing.T) {
	frameOf := func(textLen int) *parleyv1.ServerFrame {
		return &parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Message{Message: &parleyv1.Message{Text: strings.Repeat("x", textLen)}}}
	}
	// Text lengths whose proto payload lands on each boundary.
	var frames []*parleyv1.ServerFrame
	for _, want := range []int{0, 125, 126, 65535, 65536, 70000} {
		for n := max(want-8, 0); n <= want; n++ {
			f := frameOf(n)
			if proto.Size(f) == want || (want == 0 && n == 0) {
				frames = append(frames, f)
				break
			}
		}
	}
	if len(frames) != 6 {
		t.Fatalf("test setup: found frames for %d of 6 boundary sizes", len(frames))
	}
	for _, binary := range []bool{true, false} {
		t.Run(map[bool]string{true: "proto", false: "json"}[binary], func(t *testing.T) {
			up := websocket.Upgrader{}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				conn, err := transport.Upgrade(&up, w, r, wire.MaxFrameBytes)
				if err != nil {
					return
				}
				defer conn.Close()
				s := &session{conn: conn, g: &Gateway{cfg: Config{WriteTimeout: 5e9}}}
				var batch []outFrame
				for _, f := range frames {
					b, n, err := encodeFrame(binary, f)
					if err != nil {
						t.Error(err)
						return
					}
					if n != len(b)-transport.HeaderSize(n) {
						t.Errorf("payload %d of a %d-byte frame", n, len(b))
					}
					batch = append(batch, outFrame{wire: b, size: n})
				}
				write := func(w batchWriter) {
					if err := s.writeBatch(&w); err != nil {
						t.Error(err)
					}
				}
				write(batchWriter{batch: batch[:3]}) // one writev of three
				// One frame alone, first without waiting (writeNow); what
				// the socket did not take goes on from where it stopped.
				bw := batchWriter{batch: batch[3:4]}
				if err := s.tryWriteBatch(&bw); err != nil {
					t.Error(err)
				}
				write(bw)
				// A frame begun elsewhere and finished from its offset, as
				// after a partial write without waiting.
				half := len(batch[4].wire) / 2
				if err := conn.WriteFrames([][]byte{batch[4].wire[:half]}, 5e9); err != nil {
					t.Error(err)
				}
				write(batchWriter{batch: batch[4:5], off: half})
				write(batchWriter{batch: batch[5:]})
				conn.Serve(endOnClose{}) // until the client closes
			}))
			defer srv.Close()
			c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			codec := wire.Codec{Binary: binary}
			for i, f := range frames {
				mt, data, err := c.ReadMessage()
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				want, _ := codec.EncodeServer(f)
				wantType := websocket.TextMessage
				if binary {
					wantType = websocket.BinaryMessage
				}
				if mt != wantType || !bytes.Equal(data, want) {
					t.Fatalf("frame %d: type %d, %d bytes; want type %d, %d bytes", i, mt, len(data), wantType, len(want))
				}
			}
		})
	}
}

// endOnClose is a transport.Handler that ignores messages.
type endOnClose struct{}

func (endOnClose) HandleFrame(int, []byte) {}
func (endOnClose) HandlePing([]byte)       {}
func (endOnClose) ReadEnded(error)         {}
