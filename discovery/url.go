package discovery

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// URL is a libiscsi-style iSCSI URL:
//
//	iscsi://[user[%secret]@]host[:port][/target-iqn[/lun]][?key=value&...]
//
// Query keys as libiscsi has them: header_digest (crc32c, none,
// crc32c-none, none-crc32c), data_digest (lunbridge extension, same
// values), target_user, target_password.
type URL struct {
	Portal       string // host:port (port 3260 when omitted)
	Target       string // target IQN; empty for a portal-only URL
	LUN          uint64
	HasLUN       bool
	User, Secret string
	// TargetUser and TargetSecret are for mutual CHAP.
	TargetUser, TargetSecret string
	HeaderDigest, DataDigest []string // offer lists, nil = default
}

// ErrBadURL is wrapped by every URL parse error.
var ErrBadURL = errors.New("bad iscsi URL")

// ParseURL parses s. A portal alone ("host[:port]") is accepted too.
func ParseURL(s string) (*URL, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w %q: %s (want iscsi://[user[%%secret]@]host[:port]/target-iqn/lun)", ErrBadURL, redact(s), fmt.Sprintf(format, args...))
	}
	rest, ok := strings.CutPrefix(s, "iscsi://")
	if !ok {
		if strings.Contains(s, "://") {
			return nil, bad("scheme must be iscsi://")
		}
	}
	u := &URL{}
	rest, query, _ := strings.Cut(rest, "?")
	authority, path, _ := strings.Cut(rest, "/")
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		cred := authority[:at]
		authority = authority[at+1:]
		user, secret, hasSecret := strings.Cut(cred, "%")
		if user == "" {
			return nil, bad("empty user name before @")
		}
		u.User = user
		if hasSecret {
			u.Secret = secret
		}
	}
	if authority == "" {
		return nil, bad("no host")
	}
	portal, err := normalizePortal(authority)
	if err != nil {
		return nil, bad("%v", err)
	}
	u.Portal = portal
	if path != "" {
		target, lun, hasLUN := strings.Cut(strings.TrimSuffix(path, "/"), "/")
		u.Target = target
		if hasLUN {
			n, err := strconv.ParseUint(lun, 10, 64)
			if err != nil || n > 16383 {
				return nil, bad("LUN %q is not a number from 0 to 16383", lun)
			}
			u.LUN, u.HasLUN = n, true
		}
		if !strings.HasPrefix(u.Target, "iqn.") && !strings.HasPrefix(u.Target, "eui.") && !strings.HasPrefix(u.Target, "naa.") {
			return nil, bad("target name %q does not start with iqn., eui. or naa.", u.Target)
		}
	}
	if query != "" {
		q, err := url.ParseQuery(query)
		if err != nil {
			return nil, bad("query: %v", err)
		}
		for k, vs := range q {
			v := vs[len(vs)-1]
			switch k {
			case "header_digest":
				if u.HeaderDigest, err = digestList(v); err != nil {
					return nil, bad("header_digest: %v", err)
				}
			case "data_digest":
				if u.DataDigest, err = digestList(v); err != nil {
					return nil, bad("data_digest: %v", err)
				}
			case "target_user":
				u.TargetUser = v
			case "target_password":
				u.TargetSecret = v
			case "iser":
				return nil, bad("iSER is not supported")
			default:
				return nil, bad("unknown query argument %q", k)
			}
		}
	}
	return u, nil
}

// digestList turns libiscsi's header_digest values into an offer list.
func digestList(v string) ([]string, error) {
	switch strings.ToLower(v) {
	case "none":
		return []string{"None"}, nil
	case "crc32c":
		return []string{"CRC32C"}, nil
	case "crc32c-none", "crc32c,none":
		return []string{"CRC32C", "None"}, nil
	case "none-crc32c", "none,crc32c":
		return []string{"None", "CRC32C"}, nil
	}
	return nil, fmt.Errorf("%q: want none, crc32c, crc32c-none or none-crc32c", v)
}

// normalizePortal adds the default port 3260 and checks the host part.
func normalizePortal(p string) (string, error) {
	host, port, err := net.SplitHostPort(p)
	if err != nil {
		// No port: a bare host or a bracketed IPv6 address.
		host, port = strings.TrimSuffix(strings.TrimPrefix(p, "["), "]"), "3260"
		if strings.Contains(host, "]") || (strings.Count(host, ":") > 0 && !strings.HasPrefix(p, "[") && net.ParseIP(host) == nil) {
			return "", fmt.Errorf("portal %q is not host[:port]", p)
		}
	}
	if host == "" {
		return "", fmt.Errorf("portal %q has no host", p)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return "", fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return net.JoinHostPort(host, port), nil
}

// String prints the URL without its secrets.
func (u *URL) String() string {
	var b strings.Builder
	b.WriteString("iscsi://")
	if u.User != "" {
		b.WriteString(u.User)
		if u.Secret != "" {
			b.WriteString("%***")
		}
		b.WriteString("@")
	}
	b.WriteString(u.Portal)
	if u.Target != "" {
		b.WriteString("/" + u.Target)
		if u.HasLUN {
			b.WriteString("/" + strconv.FormatUint(u.LUN, 10))
		}
	}
	return b.String()
}

// HasEmbeddedSecret reports whether the URL itself carried a secret (which
// callers should warn about: argv is visible to every local user).
func (u *URL) HasEmbeddedSecret() bool { return u.Secret != "" || u.TargetSecret != "" }

// redact hides a secret in a raw URL string for error messages.
func redact(s string) string {
	rest, ok := strings.CutPrefix(s, "iscsi://")
	if !ok {
		return s
	}
	authority, after, hasPath := strings.Cut(rest, "/")
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		if user, _, has := strings.Cut(authority[:at], "%"); has {
			authority = user + "%***" + authority[at:]
		}
	}
	out := "iscsi://" + authority
	if hasPath {
		out += "/" + after
	}
	if i := strings.Index(out, "target_password="); i >= 0 {
		j := strings.IndexByte(out[i:], '&')
		if j < 0 {
			out = out[:i] + "target_password=***"
		} else {
			out = out[:i] + "target_password=***" + out[i+j:]
		}
	}
	return out
}
