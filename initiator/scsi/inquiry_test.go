package scsi

import (
	"errors"
	"testing"
)

func TestParseInquiry(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want InquiryData
	}{
		{"tgtd controller LUN 0", capTgtdInquiryLUN0, InquiryData{
			DeviceType: TypeController, Version: 5, HiSup: true, ResponseFormat: 2, AdditionalLength: 0x3d,
			CmdQue: true, Vendor: "IET", Product: "Controller", Revision: "0001"}},
		{"tgtd disk LUN 1", capTgtdInquiryLUN1, InquiryData{
			DeviceType: TypeDisk, Version: 5, HiSup: true, ResponseFormat: 2, AdditionalLength: 0x3d,
			CmdQue: true, Vendor: "IET", Product: "VIRTUAL-DISK", Revision: "0001"}},
		{"istgt", capIstgtInquiry, InquiryData{
			DeviceType: TypeDisk, Version: 5, ResponseFormat: 2, AdditionalLength: 0x5b,
			MultiP: true, CmdQue: true, Vendor: "FreeBSD", Product: "iSCSI DISK", Revision: "0001"}},
		{"LIO", capLioInquiry, InquiryData{
			DeviceType: TypeDisk, Version: 6, ResponseFormat: 2, AdditionalLength: 0x5b,
			SCCS: true, TPGS: TPGSBoth, ThirdPartyCopy: true, CmdQue: true,
			Vendor: "LIO-ORG", Product: "FILEIO", Revision: "4.0"}},
		{"hand-built: no LU, removable, protect, all flags", hx(t, `
			7f 80 07 32 1f c9 50 02`+"41424344454647484950515253545556575859 5a 20 20 20 20 20 20 20 20 20 20 20 20 20 20 00 00 00"),
			InquiryData{Qualifier: 3, DeviceType: TypeNoDevice, Removable: true, Version: 7, NormACA: true,
				HiSup: true, ResponseFormat: 2, AdditionalLength: 0x1f, SCCS: true, ACC: true, TPGS: TPGSNone,
				ThirdPartyCopy: true, Protect: true, EncServ: true, MultiP: true, CmdQue: true,
				Vendor: "ABCDEFGH", Product: "IPQRSTUVWXYZ", Revision: ""}},
	}
	for _, tt := range tests {
		got, err := ParseInquiry(tt.in)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got != tt.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.name, got, tt.want)
		}
	}
	if _, err := ParseInquiry(capTgtdInquiryLUN0[:35]); !errors.Is(err, ErrTruncated) {
		t.Errorf("35-byte INQUIRY: err = %v, want ErrTruncated", err)
	}
	lu0, _ := ParseInquiry(capTgtdInquiryLUN0)
	if !lu0.Present() || lu0.DeviceType.String() != "controller" {
		t.Errorf("tgtd LUN 0: Present %v, type %q", lu0.Present(), lu0.DeviceType)
	}
	for typ, want := range map[DeviceType]string{0: "disk", 0x0c: "controller", 0x0d: "enclosure", 0x05: "cd/dvd", 0x1b: "type 0x1b"} {
		if got := typ.String(); got != want {
			t.Errorf("DeviceType(%#x) = %q, want %q", byte(typ), got, want)
		}
	}
}
