package initiator

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/subtle"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// CHAP algorithm identifiers (CHAP_A, RFC 7143 Section 12.1.3; 6-8 as used
// by open-iscsi and LIO).
const (
	CHAPMD5     = 5
	CHAPSHA1    = 6
	CHAPSHA256  = 7
	CHAPSHA3256 = 8
)

// MinSecretLen is 12 bytes = 96 bits (RFC 7143, Section 9.2.1).
const MinSecretLen = 12

// maxCHAPBinary bounds CHAP_C and CHAP_R ("at most 1024 bytes", Section 12.1.3).
const maxCHAPBinary = 1024

func chapHash(alg int) (func() hash.Hash, error) {
	switch alg {
	case CHAPMD5:
		return md5.New, nil
	case CHAPSHA1:
		return sha1.New, nil
	case CHAPSHA256:
		return sha256.New, nil
	case CHAPSHA3256:
		return func() hash.Hash { return sha3.New256() }, nil
	}
	return nil, fmt.Errorf("%w: unsupported CHAP algorithm %d", ErrAuth, alg)
}

// chapResponse computes H(id || secret || challenge) (RFC 1994, Section 4.1).
func chapResponse(newHash func() hash.Hash, id byte, secret string, challenge []byte) []byte {
	h := newHash()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	return h.Sum(nil)
}

func (c *CHAP) validate() error {
	if c.User == "" || c.Secret == "" {
		return fmt.Errorf("%w: CHAP needs a user name and a secret", ErrAuth)
	}
	if !c.AllowShortSecret {
		if len(c.Secret) < MinSecretLen {
			return fmt.Errorf("%w: CHAP secret is %d bytes; at least %d are required (RFC 7143 9.2.1), or allow short secrets explicitly", ErrAuth, len(c.Secret), MinSecretLen)
		}
		if c.TargetSecret != "" && len(c.TargetSecret) < MinSecretLen {
			return fmt.Errorf("%w: target CHAP secret is %d bytes; at least %d are required, or allow short secrets explicitly", ErrAuth, len(c.TargetSecret), MinSecretLen)
		}
	}
	if c.TargetSecret != "" && c.TargetSecret == c.Secret {
		// "A secret used to authenticate initiators MUST NOT be configured
		// for authenticating targets" (Section 9.2.1).
		return fmt.Errorf("%w: the target's CHAP secret must differ from the initiator's", ErrAuth)
	}
	return nil
}

// algorithms is the CHAP_A offer. The target takes the first one it
// supports, so the default lists the strongest first: SHA3-256, SHA-1,
// then MD5 for targets that know nothing else (istgt). SHA-256 (7) is left
// out: tgtd (and the IET code it comes from) takes 7 to mean SHA-1, answers
// CHAP_A=7 and then refuses a SHA-256 response with "initiator error"
// (0x0200), so offering it breaks logins there. LIO, which has all four,
// picks SHA3-256. Config.Algorithms can still offer 7.
func (c *CHAP) algorithms() []int {
	if len(c.Algorithms) > 0 {
		return c.Algorithms
	}
	return []int{CHAPSHA3256, CHAPSHA1, CHAPMD5}
}

func (c *CHAP) offerA() string {
	var s []string
	for _, a := range c.algorithms() {
		s = append(s, strconv.Itoa(a))
	}
	return strings.Join(s, ",")
}

// chapExchange holds one CHAP authentication in progress.
type chapExchange struct {
	cfg     *CHAP
	newHash func() hash.Hash
	// mutual: the challenge we sent the target.
	myID        byte
	myChallenge []byte
	theirChal   []byte
}

// respond computes our CHAP_N/CHAP_R (and, for mutual CHAP, our own
// CHAP_I/CHAP_C) from the target's CHAP_A/CHAP_I/CHAP_C.
func (x *chapExchange) respond(keys map[string]string) ([]pdu.KV, error) {
	a, err := strconv.Atoi(keys["CHAP_A"])
	if err != nil || !contains(strings.Split(x.cfg.offerA(), ","), keys["CHAP_A"]) {
		return nil, fmt.Errorf("%w: target chose CHAP_A=%q, not one we offered (%s)", ErrAuth, keys["CHAP_A"], x.cfg.offerA())
	}
	if x.newHash, err = chapHash(a); err != nil {
		return nil, err
	}
	id, err := strconv.ParseUint(keys["CHAP_I"], 0, 8)
	if err != nil {
		return nil, fmt.Errorf("%w: bad CHAP_I %q from target", ErrAuth, keys["CHAP_I"])
	}
	chal, err := pdu.DecodeBinary(keys["CHAP_C"], maxCHAPBinary)
	if err != nil || len(chal) == 0 {
		return nil, fmt.Errorf("%w: bad CHAP_C from target: %v", ErrAuth, err)
	}
	x.theirChal = chal
	out := []pdu.KV{
		kv("CHAP_N", x.cfg.User),
		kv("CHAP_R", pdu.EncodeHex(chapResponse(x.newHash, byte(id), x.cfg.Secret, chal))),
	}
	if x.cfg.TargetSecret != "" {
		var b [1]byte
		rand.Read(b[:])
		x.myID = b[0]
		x.myChallenge = make([]byte, max(16, x.newHash().Size()))
		for {
			rand.Read(x.myChallenge)
			// "An originator MUST NOT reuse the responder's challenge"
			// (Section 9.2.1).
			if subtle.ConstantTimeCompare(x.myChallenge, chal) == 0 {
				break
			}
		}
		out = append(out, kv("CHAP_I", strconv.Itoa(int(x.myID))), kv("CHAP_C", pdu.EncodeHex(x.myChallenge)))
	}
	return out, nil
}

// verifyTarget checks the target's CHAP_N/CHAP_R for mutual CHAP.
func (x *chapExchange) verifyTarget(keys map[string]string) error {
	n, hasN := keys["CHAP_N"]
	r, hasR := keys["CHAP_R"]
	if !hasN || !hasR {
		return fmt.Errorf("%w: mutual CHAP requested but the target did not authenticate itself (no CHAP_N/CHAP_R)", ErrAuth)
	}
	if x.cfg.TargetUser != "" && n != x.cfg.TargetUser {
		return fmt.Errorf("%w: target presented CHAP name %q, expected %q", ErrAuth, n, x.cfg.TargetUser)
	}
	got, err := pdu.DecodeBinary(r, maxCHAPBinary)
	if err != nil {
		return fmt.Errorf("%w: bad CHAP_R from target: %v", ErrAuth, err)
	}
	// Reflection: a response computed with our own secret means the
	// target replayed our challenge back through us (Section 9.2.1).
	if subtle.ConstantTimeCompare(got, chapResponse(x.newHash, x.myID, x.cfg.Secret, x.myChallenge)) == 1 {
		return fmt.Errorf("%w: target's CHAP response was computed with the initiator's secret (reflection attack)", ErrAuth)
	}
	want := chapResponse(x.newHash, x.myID, x.cfg.TargetSecret, x.myChallenge)
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return fmt.Errorf("%w: the target failed mutual CHAP (wrong target secret)", ErrAuth)
	}
	return nil
}
