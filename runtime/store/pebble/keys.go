package pebble

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Key layout. Every key starts with a one-letter table and a slash, so each
// table is one contiguous, ordered range:
//
//	m/<conv>\x00<seq:8 BE>    -> proto-marshalled parleyv1.Message
//	c/<conv>                  -> JSON conversationRecord
//	p/<conv>\x00<user>        -> member: joined seq (8 BE) + role
//	i/<user>\x00<conv>        -> empty (inbox entry)
//	r/<conv>\x00<user>        -> receipt: delivered (8 BE) + read (8 BE)
//	h/<user>                  -> home region (UTF-8)
//	q/<conv>\x00<user>        -> mute: until, Unix ms (8 BE; 0: no end)
//	b/<user>\x00<other>       -> empty (user blocks other)
//	y/<other>\x00<user>       -> empty (the same block, by the blocked user)
//
// Ids may not contain NUL, so "<id>\x00" is a prefix of exactly one id's rows
// and seqs sort numerically inside a conversation.
const (
	tableMessage      = "m/"
	tableConversation = "c/"
	tableMember       = "p/"
	tableInbox        = "i/"
	tableReceipt      = "r/"
	tableUserHome     = "h/"
	tableMute         = "q/"
	tableBlock        = "b/"
	tableBlockedBy    = "y/"
)

// checkID rejects ids the key layout cannot hold.
func checkID(what, id string) error {
	if id == "" {
		return fmt.Errorf("empty %s id", what)
	}
	if strings.IndexByte(id, 0) >= 0 {
		return fmt.Errorf("%s id %q contains NUL", what, id)
	}
	return nil
}

// prefix returns table + id + NUL: the common prefix of one id's rows.
func prefix(table, id string) []byte {
	b := make([]byte, 0, len(table)+len(id)+1+8)
	b = append(b, table...)
	b = append(b, id...)
	return append(b, 0)
}

// prefixEnd returns the smallest key greater than every key starting with p,
// which ends in NUL by construction.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	end[len(end)-1]++
	return end
}

func messageKey(conv string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(prefix(tableMessage, conv), seq)
}

// messageSeq decodes the seq of a message key of conv's prefix length n.
func messageSeq(key []byte, n int) (uint64, error) {
	if len(key) != n+8 {
		return 0, fmt.Errorf("corrupt message key %q", key)
	}
	return binary.BigEndian.Uint64(key[n:]), nil
}

func conversationKey(conv string) []byte {
	return append([]byte(tableConversation), conv...)
}

func memberKey(conv, user string) []byte {
	return append(prefix(tableMember, conv), user...)
}

func inboxKey(user, conv string) []byte {
	return append(prefix(tableInbox, user), conv...)
}

func receiptKey(conv, user string) []byte {
	return append(prefix(tableReceipt, conv), user...)
}

func encodeMember(joinedSeq uint64, role string) []byte {
	b := make([]byte, 8, 8+len(role))
	binary.BigEndian.PutUint64(b, joinedSeq)
	return append(b, role...)
}

func decodeMember(user string, v []byte) (joinedSeq uint64, role string, err error) {
	if len(v) < 8 {
		return 0, "", fmt.Errorf("corrupt member row of %q", user)
	}
	return binary.BigEndian.Uint64(v), string(v[8:]), nil
}

func encodeReceipt(delivered, read uint64) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, delivered)
	binary.BigEndian.PutUint64(b[8:], read)
	return b
}

func decodeReceipt(user string, v []byte) (delivered, read uint64, err error) {
	if len(v) != 16 {
		return 0, 0, fmt.Errorf("corrupt receipt row of %q", user)
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), nil
}
