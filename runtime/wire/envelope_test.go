package wire

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// TestEnvelopeTablesCoverOneofs checks clientBodies and serverBodies against
// the frames' descriptors: every body field has an entry that sets exactly
// that field, and nothing else has one. A body added to the .proto without
// an entry would still decode (through proto.Unmarshal), only slower.
func TestEnvelopeTablesCoverOneofs(t *testing.T) {
	checkTable(t, &parleyv1.ClientFrame{}, clientBodies[:], func() *parleyv1.ClientFrame { return &parleyv1.ClientFrame{} })
	checkTable(t, &parleyv1.ServerFrame{}, serverBodies[:], func() *parleyv1.ServerFrame { return &parleyv1.ServerFrame{} })
}

func checkTable[F proto.Message](t *testing.T, zero F, table []func(F) proto.Message, newFrame func() F) {
	t.Helper()
	md := zero.ProtoReflect().Descriptor()
	od := md.Oneofs().ByName("body")
	if od == nil {
		t.Fatalf("%s has no oneof body", md.FullName())
	}
	want := map[protoreflect.FieldNumber]protoreflect.FieldDescriptor{}
	for i := 0; i < od.Fields().Len(); i++ {
		fd := od.Fields().Get(i)
		want[fd.Number()] = fd
	}
	for n, set := range table {
		fd, isBody := want[protoreflect.FieldNumber(n)]
		switch {
		case set == nil && isBody:
			t.Errorf("%s: body field %s (%d) has no entry", md.FullName(), fd.Name(), n)
		case set != nil && !isBody:
			t.Errorf("%s: entry %d is not a body field", md.FullName(), n)
		case set != nil:
			f := newFrame()
			b := set(f)
			got := f.ProtoReflect().WhichOneof(od)
			if got == nil || got.Number() != fd.Number() {
				t.Errorf("%s: entry %d sets %v, want %s", md.FullName(), n, got, fd.Name())
			}
			if b.ProtoReflect().Descriptor() != fd.Message() {
				t.Errorf("%s: entry %d decodes into %s, want %s", md.FullName(), n, b.ProtoReflect().Descriptor().FullName(), fd.Message().FullName())
			}
		}
	}
	for n, fd := range want {
		if int(n) >= len(table) {
			t.Errorf("%s: body field %s (%d) has no entry", md.FullName(), fd.Name(), n)
		}
	}
}

// TestEnvelopeShapes decodes frames of every shape the fast path takes or
// refuses and checks each against proto.Unmarshal of the whole frame.
func TestEnvelopeShapes(t *testing.T) {
	send, err := proto.Marshal(&parleyv1.Send{ConversationId: "dm:a:b", ClientMsgId: "c", Content: &parleyv1.Send_Text{Text: "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	ack, err := proto.Marshal(&parleyv1.Ack{ConversationId: "g:1", Seq: 9})
	if err != nil {
		t.Fatal(err)
	}
	ackSeq, err := proto.Marshal(&parleyv1.Ack{Seq: 10}) // merged into ack: g:1 at 10
	if err != nil {
		t.Fatal(err)
	}
	id := func(b []byte, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, 1, protowire.VarintType), v)
	}
	field := func(b []byte, n protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, n, protowire.BytesType), v)
	}
	badUTF8, err := proto.Marshal(&parleyv1.Ack{Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	badUTF8 = field(badUTF8, 1, []byte{0xff, 0xfe}) // conversation_id, not UTF-8
	tests := []struct {
		name    string
		in      []byte
		wantErr bool
	}{
		{"id then body", field(id(nil, 7), 2, send), false},
		{"body then id", id(field(nil, 3, ack), 8), false},
		{"body without id", field(nil, 3, ack), false},
		{"empty body", field(id(nil, 1), 9, nil), false},
		{"two bodies: the last wins", field(field(id(nil, 1), 2, send), 3, ack), false},
		{"the same body twice: merged", field(field(id(nil, 1), 3, ack), 3, ackSeq), false},
		{"id twice: the last wins", field(id(id(nil, 1), 2), 3, ack), false},
		{"unknown field kept", field(field(id(nil, 1), 3, ack), 99, []byte("x")), false},
		{"id with the wrong wire type", field(field(nil, 1, []byte("x")), 3, ack), false},
		{"no body", id(nil, 4), true},
		{"body not UTF-8", field(id(nil, 1), 3, badUTF8), true},
		{"body truncated", field(id(nil, 1), 2, send[:len(send)-1]), true},
		{"frame truncated", field(id(nil, 1), 2, send)[:5], true},
		{"field number 0", []byte{0x02, 0x00}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Codec{Binary: true}.DecodeClient(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			want := &parleyv1.ClientFrame{}
			if err := proto.Unmarshal(tt.in, want); err != nil {
				t.Fatalf("proto.Unmarshal refused what DecodeClient took: %v", err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("DecodeClient = %v, proto.Unmarshal = %v", got, want)
			}
		})
	}
}

// sameAsUnmarshal fails t unless a decode of b (got, err) and
// proto.Unmarshal(b) agree: both refuse b, or both take it and give equal
// frames. requireBody: the decoder also refuses a frame without a body
// (DecodeClient does, by design).
func sameAsUnmarshal[F proto.Message](t *testing.T, b []byte, got F, err error, want F, requireBody bool) {
	t.Helper()
	werr := proto.Unmarshal(b, want)
	switch {
	case werr != nil && err == nil:
		t.Fatalf("decoded %v where proto.Unmarshal refused: %v", got, werr)
	case werr != nil:
		return
	case err != nil:
		m := want.ProtoReflect()
		if !requireBody || m.WhichOneof(m.Descriptor().Oneofs().ByName("body")) != nil {
			t.Fatalf("refused (%v) what proto.Unmarshal took: %v", err, want)
		}
	case !proto.Equal(got, want):
		t.Fatalf("decoded %v, proto.Unmarshal %v", got, want)
	}
}

// FuzzDecodeServer: decoding a server frame never panics and agrees with
// proto.Unmarshal (the envelope fast path is only an optimisation).
func FuzzDecodeServer(f *testing.F) {
	for _, fr := range []*parleyv1.ServerFrame{
		{Id: 3, Body: &parleyv1.ServerFrame_SendOk{SendOk: &parleyv1.SendOk{ConversationId: "dm:a:b", Seq: 4, MessageId: 5}}},
		{Body: &parleyv1.ServerFrame_Message{Message: &parleyv1.Message{ConversationId: "g:1", Seq: 2, SenderId: "a", Text: "hi"}}},
		{Id: 1, Body: &parleyv1.ServerFrame_Error{Error: &parleyv1.Error{Code: "invalid", Message: "no"}}},
	} {
		b, err := proto.Marshal(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Codec{Binary: true}.DecodeServer(b)
		sameAsUnmarshal(t, b, got, err, &parleyv1.ServerFrame{}, false)
	})
}

func BenchmarkDecodeAck(b *testing.B) {
	in, err := proto.Marshal(&parleyv1.ClientFrame{Id: 12, Body: &parleyv1.ClientFrame_Ack{Ack: &parleyv1.Ack{ConversationId: "g:team", Seq: 123456}}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := (Codec{Binary: true}).DecodeClient(in); err != nil {
			b.Fatal(err)
		}
	}
}
