package wire

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

func TestDecodeClient(t *testing.T) {
	send := &parleyv1.ClientFrame{Id: 7, Body: &parleyv1.ClientFrame_Send{Send: &parleyv1.Send{
		ConversationId: "dm:alice:bob", ClientMsgId: "c1", Content: &parleyv1.Send_Text{Text: "hi"}}}}
	binSend, err := proto.Marshal(send)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		codec   Codec
		in      []byte
		wantErr bool
		wantID  uint64
	}{
		{"proto send", Codec{Binary: true}, binSend, false, 7},
		{"json send", Codec{}, []byte(`{"id":"7","send":{"conversation_id":"dm:alice:bob","client_msg_id":"c1","text":"hi"}}`), false, 7},
		{"json camelCase accepted", Codec{}, []byte(`{"id":7,"ping":{}}`), false, 7},
		{"json invalid", Codec{}, []byte(`{"id":`), true, 0},
		{"json unknown field", Codec{}, []byte(`{"id":1,"explode":{}}`), true, 0},
		{"json no body", Codec{}, []byte(`{"id":1}`), true, 1},
		{"proto garbage", Codec{Binary: true}, []byte{0xff, 0xff, 0xff}, true, 0},
		{"proto empty frame", Codec{Binary: true}, nil, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := tt.codec.DecodeClient(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrDecode) {
				t.Fatalf("err %v does not wrap ErrDecode", err)
			}
			if f != nil && f.Id != tt.wantID {
				t.Fatalf("id = %d, want %d", f.Id, tt.wantID)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	for _, c := range []Codec{{Binary: true}, {}} {
		in := &parleyv1.ServerFrame{Id: 3, Body: &parleyv1.ServerFrame_SendOk{SendOk: &parleyv1.SendOk{ConversationId: "g:1", Seq: 42, MessageId: 99}}}
		b, err := c.EncodeServer(in)
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.DecodeServer(b)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(in, out) {
			t.Fatalf("binary=%v: round trip changed the frame: %v vs %v", c.Binary, in, out)
		}
	}
}

func TestShouldReconnect(t *testing.T) {
	for code, want := range map[int]bool{
		1000: true, 1006: true, CloseDrain: true, CloseSlowConsumer: true,
		CloseUnauthenticated: false, CloseTokenExpired: false, ClosePolicyViolation: false,
	} {
		if got := ShouldReconnect(code); got != want {
			t.Errorf("ShouldReconnect(%d) = %v, want %v", code, got, want)
		}
	}
}

func BenchmarkEncodeMessage(b *testing.B) {
	f := &parleyv1.ServerFrame{Body: &parleyv1.ServerFrame_Message{Message: &parleyv1.Message{
		ConversationId: "g:0123456789abcdef", Seq: 123456, MessageId: 1234567890123, SenderId: "alice",
		ClientMsgId: "0123456789abcdef", Kind: parleyv1.MessageKind_MESSAGE_KIND_TEXT,
		Text: "the quick brown fox jumps over the lazy dog", CreatedAt: 1764400000000}}}
	for _, c := range []struct {
		name  string
		codec Codec
	}{{"proto", Codec{Binary: true}}, {"json", Codec{}}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := c.codec.EncodeServer(f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeSend(b *testing.B) {
	f := &parleyv1.ClientFrame{Id: 9, Body: &parleyv1.ClientFrame_Send{Send: &parleyv1.Send{
		ConversationId: "dm:alice:bob", ClientMsgId: "0123456789abcdef", Content: &parleyv1.Send_Text{Text: "hello there"}}}}
	for _, c := range []struct {
		name  string
		codec Codec
	}{{"proto", Codec{Binary: true}}, {"json", Codec{}}} {
		in, _ := c.codec.EncodeClient(f)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := c.codec.DecodeClient(in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
