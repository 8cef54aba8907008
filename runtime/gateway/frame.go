package gateway

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/parleychat/parley/runtime/gateway/transport"
	parleyv1 "github.com/parleychat/parley/runtime/proto/parley/v1"
	"github.com/parleychat/parley/runtime/wire"
)

// The gateway builds its data frames itself, whole (header and payload),
// so that a fan-out encodes a frame once and every recipient's writer
// writes the same bytes (transport/frame.go says why).

// encodeFrame encodes f for a subprotocol (binary: parley.v1.proto) as a
// complete WebSocket data frame, returning the frame and its payload
// length. Protobuf is marshalled straight after the header; JSON, whose
// length is known only once encoded, is copied behind it.
func encodeFrame(binaryFrame bool, f *parleyv1.ServerFrame) (frame []byte, payload int, err error) {
	if binaryFrame {
		n := proto.Size(f)
		h := transport.HeaderSize(n)
		frame = make([]byte, h, h+n)
		transport.PutHeader(frame, true, n)
		frame, err = proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(frame, f)
		if err != nil {
			return nil, 0, err
		}
		if len(frame) != h+n {
			return nil, 0, fmt.Errorf("encode frame: marshalled %d bytes, sized %d", len(frame)-h, n)
		}
		return frame, n, nil
	}
	data, err := wire.Codec{Binary: false}.EncodeServer(f)
	if err != nil {
		return nil, 0, err
	}
	h := transport.HeaderSize(len(data))
	frame = make([]byte, h+len(data))
	transport.PutHeader(frame, false, len(data))
	copy(frame[h:], data)
	return frame, len(data), nil
}
