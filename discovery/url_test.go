package discovery

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	cases := []struct {
		in   string
		want URL
	}{
		{"iscsi://127.0.0.1/iqn.2026-11.x:t/1", URL{Portal: "127.0.0.1:3260", Target: "iqn.2026-11.x:t", LUN: 1, HasLUN: true}},
		{"iscsi://127.0.0.1:3261/iqn.2026-11.x:t/0", URL{Portal: "127.0.0.1:3261", Target: "iqn.2026-11.x:t", HasLUN: true}},
		{"iscsi://u%secretsecret@host:3263/iqn.a:b/300", URL{Portal: "host:3263", Target: "iqn.a:b", LUN: 300, HasLUN: true, User: "u", Secret: "secretsecret"}},
		{"iscsi://u@[::1]:3260/iqn.a:b/2?header_digest=crc32c&target_user=tu&target_password=tp", URL{Portal: "[::1]:3260", Target: "iqn.a:b", LUN: 2, HasLUN: true, User: "u", TargetUser: "tu", TargetSecret: "tp", HeaderDigest: []string{"CRC32C"}}},
		{"iscsi://[::1]", URL{Portal: "[::1]:3260"}},
		{"127.0.0.2:3270", URL{Portal: "127.0.0.2:3270"}},
		{"iscsi://h/iqn.a:b", URL{Portal: "h:3260", Target: "iqn.a:b"}},
	}
	for _, c := range cases {
		got, err := ParseURL(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(*got, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.in, *got, c.want)
		}
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, in := range []string{
		"http://h/iqn.a:b/1", "iscsi://", "iscsi://h:99999/iqn.a:b/1", "iscsi://h/iqn.a:b/x",
		"iscsi://h/target/1", "iscsi://h/iqn.a:b/1?bogus=1", "iscsi://@h/iqn.a:b/1", "iscsi://h/iqn.a:b/1?iser",
	} {
		_, err := ParseURL(in)
		if err == nil || !errors.Is(err, ErrBadURL) {
			t.Errorf("%s: %v", in, err)
		}
	}
	_, err := ParseURL("iscsi://u%topsecret@h/iqn.a:b/x")
	if err == nil || strings.Contains(err.Error(), "topsecret") {
		t.Errorf("secret leaked or accepted: %v", err)
	}
}

func TestURLStringRedacts(t *testing.T) {
	u, _ := ParseURL("iscsi://u%topsecret@h/iqn.a:b/1")
	if s := u.String(); strings.Contains(s, "topsecret") || s != "iscsi://u%***@h:3260/iqn.a:b/1" {
		t.Fatal(s)
	}
	if !u.HasEmbeddedSecret() {
		t.Fatal("embedded secret not reported")
	}
}
