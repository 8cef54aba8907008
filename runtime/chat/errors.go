package chat

import (
	"context"
	"errors"
	"log/slog"

	"github.com/parleychat/parley/runtime/wire"
)

const codeUnavailable = wire.CodeUnavailable

// storeRetryMs is the retry hint of an unavailable reply caused by the store.
const storeRetryMs = 1000

func errInvalid(msg string) *wire.Error { return &wire.Error{Code: wire.CodeInvalid, Message: msg} }

// storeErr logs a store failure and returns what the client may act on:
// the context's own error when the caller gave up, unavailable otherwise.
func storeErr(log *slog.Logger, op, conv string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	log.Warn("store", "op", op, "conversation", conv, "err", err)
	return &wire.Error{Code: wire.CodeUnavailable, Message: "storage unavailable; retry later", RetryAfterMs: storeRetryMs}
}

// asWire maps err to the error a client sees; context errors of the
// sequencer itself mean the store did not answer in time.
func asWire(err error) *wire.Error {
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	return &wire.Error{Code: wire.CodeUnavailable, Message: "not processed; retry later", RetryAfterMs: storeRetryMs}
}
