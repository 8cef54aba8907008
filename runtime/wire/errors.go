package wire

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Error is an error with a stable code that crosses the wire as it is: in an
// Error frame over WebSocket and as {"error":{"code","message"}} over REST.
type Error struct {
	Code    string
	Message string
	// RetryAfterMs is a hint for unavailable and rate_limited, milliseconds.
	RetryAfterMs uint32
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an *Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError returns err as an *Error: itself if it is one (anywhere in its
// chain), timeout for a context deadline, and internal otherwise.
func AsError(err error) *Error {
	var we *Error
	if errors.As(err, &we) {
		return we
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Code: CodeTimeout, Message: "the outcome is unknown; retrying is safe (a send with the same client_msg_id, any other request as it was)"}
	}
	return &Error{Code: CodeInternal, Message: "internal error"}
}

// HTTPStatus maps an error code to the REST status that carries it.
func HTTPStatus(code string) int {
	switch code {
	case CodeUnauthenticated, CodeTokenExpired:
		return http.StatusUnauthorized
	case CodeNotMember, CodeForbidden, CodeEditWindowClosed, CodeBlocked:
		return http.StatusForbidden
	case CodeNotFound:
		return http.StatusNotFound
	case CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case CodeRateLimited, CodeTooManySessions:
		return http.StatusTooManyRequests
	case CodeInvalid:
		return http.StatusBadRequest
	case CodeGroupFull, CodeTooManyReactions, CodeTooManyBlocks:
		return http.StatusConflict
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	case CodeTimeout:
		return http.StatusGatewayTimeout
	case CodeMethodNotAllowed:
		return http.StatusMethodNotAllowed
	}
	return http.StatusInternalServerError
}

// RateLimited is the rate_limited error of a request over a per-user budget:
// msg names the budget ("over 20 sends per second"), retry_after_ms is
// retryAfter rounded up to a whole millisecond, at least 1.
func RateLimited(msg string, retryAfter time.Duration) *Error {
	ms := (retryAfter + time.Millisecond - 1) / time.Millisecond
	return &Error{Code: CodeRateLimited, Message: msg, RetryAfterMs: uint32(max(ms, 1))}
}
