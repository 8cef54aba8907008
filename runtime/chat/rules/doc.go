// Package rules says what a well-formed chat request is, independent of any
// stored state: the conversation id grammar (DMID, ParseDM,
// CheckConversationID), what user text, group titles and reactions may
// contain (CheckText, CheckTitle, CheckEmoji), and the per-request checks
// (ValidateSend, ValidateEdit, ValidateReact, ValidateMute, …). Every
// function returns nil or a *wire.Error with a stable code (invalid,
// too_large) a client can act on.
//
// Decision (issue 15): one rule for every entry point. The gateway and REST
// apply these before a request costs anything; the sequencer (package chat)
// applies them again as the authority. They live apart from package chat so
// that the edge does not link the sequencer.
package rules
