package discovery

import (
	"reflect"
	"testing"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

func TestParseSendTargets(t *testing.T) {
	// istgt's real answer (istgt-discovery.pcap) plus IPv6, link-local
	// and malformed entries.
	text := "TargetName=iqn.2024-01.test.istgt:disk1\x00TargetAddress=127.0.0.1:3263,1\x00" +
		"TargetName=iqn.2024-01.test.istgt:chapdisk\x00TargetAddress=127.0.0.1:3263,1\x00TargetAddress=[::1]:3263,2\x00" +
		"TargetAddress=[fe80::1]:3260,1\x00TargetAddress=[fe80::2%eth0]:3260,1\x00TargetAddress=0.0.0.0:3260,1\x00TargetAddress=169.254.1.1:3260,1\x00TargetAddress=host:notaport,1\x00" +
		"TargetName=iqn.2024-01.test.istgt:digestdisk\x00TargetAddress=10.0.2.15,1\x00"
	kvs, err := pdu.ParseText([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSendTargets(kvs, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Target{
		{Name: "iqn.2024-01.test.istgt:disk1", Portals: []Portal{{"127.0.0.1:3263", 1}}},
		{Name: "iqn.2024-01.test.istgt:chapdisk", Portals: []Portal{{"127.0.0.1:3263", 1}, {"[::1]:3263", 2}}},
		{Name: "iqn.2024-01.test.istgt:digestdisk", Portals: []Portal{{"10.0.2.15:3260", 1}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
	if _, err := ParseSendTargets([]pdu.KV{{Key: "TargetAddress", Value: "1.2.3.4:3260,1"}}, nil); err == nil {
		t.Fatal("address before name accepted")
	}
}
