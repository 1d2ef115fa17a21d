// Package discovery finds targets: SendTargets discovery sessions
// (RFC 7143, Appendix C) and libiscsi-compatible iscsi:// URLs. It builds on
// the initiator package and must not import the bridges or cmd.
package discovery
