package rules

import (
	"errors"

	"github.com/parleychat/parley/runtime/wire"
)

// code returns err's wire code, "" for nil, or "other: …" for an error that
// is not a *wire.Error.
func code(err error) string {
	var we *wire.Error
	if errors.As(err, &we) {
		return we.Code
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return ""
}
