package pdu

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// KV is one key=value pair of a text data segment (RFC 7143, Section 6.1).
type KV struct {
	Key, Value string
}

// MaxKeyLen is the longest key name ("at most 63 characters", Section 6.1).
const MaxKeyLen = 63

// ParseText splits a complete (reassembled) text data segment into pairs.
// Each pair is terminated by a NUL; a missing final NUL is tolerated (some
// targets omit it), an empty pair or a key without '=' is an error.
func ParseText(data []byte) ([]KV, error) {
	var kvs []KV
	for len(data) > 0 {
		end := bytes.IndexByte(data, 0)
		var pair []byte
		if end < 0 {
			pair, data = data, nil
		} else {
			pair, data = data[:end], data[end+1:]
		}
		if len(pair) == 0 {
			// Tolerate padding-like trailing NULs.
			if len(bytes.Trim(data, "\x00")) == 0 {
				break
			}
			return nil, fmt.Errorf("%w: empty key=value pair", ErrMalformedText)
		}
		eq := bytes.IndexByte(pair, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("%w: %q has no key=value form", ErrMalformedText, truncate(pair))
		}
		if eq > MaxKeyLen {
			return nil, fmt.Errorf("%w: key longer than %d bytes", ErrMalformedText, MaxKeyLen)
		}
		kvs = append(kvs, KV{Key: string(pair[:eq]), Value: string(pair[eq+1:])})
	}
	return kvs, nil
}

// AppendText appends pairs in wire form ("key=value\x00" each).
func AppendText(b []byte, kvs ...KV) []byte {
	for _, kv := range kvs {
		b = append(b, kv.Key...)
		b = append(b, '=')
		b = append(b, kv.Value...)
		b = append(b, 0)
	}
	return b
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// DecodeBinary decodes a binary-value: hex "0x..." or base64 "0b..."
// (RFC 7143, Section 6.1). maxLen bounds the decoded length.
func DecodeBinary(v string, maxLen int) ([]byte, error) {
	if len(v) < 2 || v[0] != '0' {
		return nil, fmt.Errorf("%w: binary value %q lacks 0x or 0b prefix", ErrMalformedText, v)
	}
	body := v[2:]
	var out []byte
	var err error
	switch v[1] {
	case 'x', 'X':
		if len(body)/2 > maxLen+1 {
			return nil, fmt.Errorf("%w: binary value longer than %d bytes", ErrMalformedText, maxLen)
		}
		if len(body)%2 == 1 {
			body = "0" + body // n hex digits give (n+1)/2 bytes
		}
		out, err = hex.DecodeString(body)
	case 'b', 'B':
		if base64.StdEncoding.DecodedLen(len(body)) > maxLen+3 {
			return nil, fmt.Errorf("%w: binary value longer than %d bytes", ErrMalformedText, maxLen)
		}
		out, err = base64.StdEncoding.DecodeString(body)
		if err != nil {
			out, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(body, "="))
		}
	default:
		return nil, fmt.Errorf("%w: binary value %q lacks 0x or 0b prefix", ErrMalformedText, v)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: binary value: %v", ErrMalformedText, err)
	}
	if len(out) > maxLen {
		return nil, fmt.Errorf("%w: binary value longer than %d bytes", ErrMalformedText, maxLen)
	}
	return out, nil
}

// EncodeHex encodes a binary-value in hex form ("0x...", upper case).
func EncodeHex(b []byte) string { return "0x" + strings.ToUpper(hex.EncodeToString(b)) }
