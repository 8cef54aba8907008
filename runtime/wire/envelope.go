package wire

import (
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
)

// The frames' envelope (an id and a oneof body) is decoded here and only the
// body goes through proto.Unmarshal. protobuf-go stores a decoded oneof
// member through reflection (reflect.Value.Set into the interface field,
// which checks the interface by method name each time): in profiles of the
// fleet's gateway at 2,000 DM sends/s that was 6-7 % of its CPU, and the
// deeper reflective decode grew every fresh reader goroutine's stack
// (docs/benchmarks.md, issue 16). Here the body is a typed Go assignment.
//
// Only the plain shape takes this path: at most one id (field 1, varint)
// and exactly one body field, nothing else. Anything else — a repeated or
// unknown field, a wrong wire type, a truncated tag — is left to
// proto.Unmarshal of the whole frame, so the result, every error and the
// unknown fields it keeps are protobuf-go's own (FuzzDecodeClient and
// FuzzDecodeServer compare both ways). TestEnvelopeTablesCoverOneofs keeps
// the tables in step with the .proto.

// clientBodies[n] sets a new body of field number n on f and returns it to
// decode into; nil where n is not a body field.
var clientBodies = [...]func(f *parleyv1.ClientFrame) proto.Message{
	2: body(func(f *parleyv1.ClientFrame, b *parleyv1.Send) { f.Body = &parleyv1.ClientFrame_Send{Send: b} }),
	3: body(func(f *parleyv1.ClientFrame, b *parleyv1.Ack) { f.Body = &parleyv1.ClientFrame_Ack{Ack: b} }),
	4: body(func(f *parleyv1.ClientFrame, b *parleyv1.Read) { f.Body = &parleyv1.ClientFrame_Read{Read: b} }),
	5: body(func(f *parleyv1.ClientFrame, b *parleyv1.Sync) { f.Body = &parleyv1.ClientFrame_Sync{Sync: b} }),
	6: body(func(f *parleyv1.ClientFrame, b *parleyv1.History) { f.Body = &parleyv1.ClientFrame_History{History: b} }),
	7: body(func(f *parleyv1.ClientFrame, b *parleyv1.Typing) { f.Body = &parleyv1.ClientFrame_Typing{Typing: b} }),
	8: body(func(f *parleyv1.ClientFrame, b *parleyv1.PresenceSub) {
		f.Body = &parleyv1.ClientFrame_PresenceSub{PresenceSub: b}
	}),
	9:  body(func(f *parleyv1.ClientFrame, b *parleyv1.Ping) { f.Body = &parleyv1.ClientFrame_Ping{Ping: b} }),
	10: body(func(f *parleyv1.ClientFrame, b *parleyv1.Edit) { f.Body = &parleyv1.ClientFrame_Edit{Edit: b} }),
	11: body(func(f *parleyv1.ClientFrame, b *parleyv1.Delete) { f.Body = &parleyv1.ClientFrame_Delete{Delete: b} }),
	12: body(func(f *parleyv1.ClientFrame, b *parleyv1.React) { f.Body = &parleyv1.ClientFrame_React{React: b} }),
	13: body(func(f *parleyv1.ClientFrame, b *parleyv1.SetRole) { f.Body = &parleyv1.ClientFrame_SetRole{SetRole: b} }),
	14: body(func(f *parleyv1.ClientFrame, b *parleyv1.Rename) { f.Body = &parleyv1.ClientFrame_Rename{Rename: b} }),
	15: body(func(f *parleyv1.ClientFrame, b *parleyv1.Mute) { f.Body = &parleyv1.ClientFrame_Mute{Mute: b} }),
	16: body(func(f *parleyv1.ClientFrame, b *parleyv1.Block) { f.Body = &parleyv1.ClientFrame_Block{Block: b} }),
}

// serverBodies is clientBodies for ServerFrame (the SDK's and the load
// generator's decode).
var serverBodies = [...]func(f *parleyv1.ServerFrame) proto.Message{
	2: body(func(f *parleyv1.ServerFrame, b *parleyv1.Welcome) { f.Body = &parleyv1.ServerFrame_Welcome{Welcome: b} }),
	3: body(func(f *parleyv1.ServerFrame, b *parleyv1.SendOk) { f.Body = &parleyv1.ServerFrame_SendOk{SendOk: b} }),
	4: body(func(f *parleyv1.ServerFrame, b *parleyv1.Message) { f.Body = &parleyv1.ServerFrame_Message{Message: b} }),
	5: body(func(f *parleyv1.ServerFrame, b *parleyv1.Receipt) { f.Body = &parleyv1.ServerFrame_Receipt{Receipt: b} }),
	6: body(func(f *parleyv1.ServerFrame, b *parleyv1.Presence) {
		f.Body = &parleyv1.ServerFrame_Presence{Presence: b}
	}),
	7: body(func(f *parleyv1.ServerFrame, b *parleyv1.SyncResult) {
		f.Body = &parleyv1.ServerFrame_SyncResult{SyncResult: b}
	}),
	8: body(func(f *parleyv1.ServerFrame, b *parleyv1.HistoryResult) {
		f.Body = &parleyv1.ServerFrame_HistoryResult{HistoryResult: b}
	}),
	9:  body(func(f *parleyv1.ServerFrame, b *parleyv1.Typing) { f.Body = &parleyv1.ServerFrame_Typing{Typing: b} }),
	10: body(func(f *parleyv1.ServerFrame, b *parleyv1.Error) { f.Body = &parleyv1.ServerFrame_Error{Error: b} }),
	11: body(func(f *parleyv1.ServerFrame, b *parleyv1.Reconnect) {
		f.Body = &parleyv1.ServerFrame_Reconnect{Reconnect: b}
	}),
	12: body(func(f *parleyv1.ServerFrame, b *parleyv1.Pong) { f.Body = &parleyv1.ServerFrame_Pong{Pong: b} }),
	13: body(func(f *parleyv1.ServerFrame, b *parleyv1.SendAccepted) {
		f.Body = &parleyv1.ServerFrame_SendAccepted{SendAccepted: b}
	}),
	14: body(func(f *parleyv1.ServerFrame, b *parleyv1.Mute) { f.Body = &parleyv1.ServerFrame_Mute{Mute: b} }),
	15: body(func(f *parleyv1.ServerFrame, b *parleyv1.Block) { f.Body = &parleyv1.ServerFrame_Block{Block: b} }),
}

// body makes a clientBodies or serverBodies entry: it allocates a body of
// type B, sets it on the frame with set and returns it to decode into.
func body[F any, B any, PB interface {
	*B
	proto.Message
}](set func(F, PB)) func(F) proto.Message {
	return func(f F) proto.Message {
		b := PB(new(B))
		set(f, b)
		return b
	}
}

// decodeEnvelope decodes b into f when b has the plain shape (above) and
// its body decodes; it reports false, leaving f to be discarded, otherwise.
func decodeEnvelope[F any](b []byte, f F, id *uint64, bodies []func(F) proto.Message) bool {
	var (
		body    []byte
		newBody func(F) proto.Message
		haveID  bool
	)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType && !haveID:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			*id, haveID, b = v, true, b[n:]
		case typ == protowire.BytesType && newBody == nil && int(num) < len(bodies) && bodies[num] != nil:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			body, newBody, b = v, bodies[num], b[n:]
		default:
			return false
		}
	}
	return newBody != nil && proto.Unmarshal(body, newBody(f)) == nil
}
