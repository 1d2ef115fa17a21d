package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/filedev"
)

// openDevice opens the device a command works on: an iscsi:// URL (a LUN on
// a target) or a file:// URL (a local image, useful for tests and restores).
func openDevice(c *cli.Context, url string, readOnly bool) (blockdev.Device, error) {
	switch {
	case strings.HasPrefix(url, "file://"):
		return filedev.Open(strings.TrimPrefix(url, "file://"), 512, readOnly)
	case strings.HasPrefix(url, "iscsi://"):
		return openISCSI(c, url, readOnly)
	default:
		return nil, usageErrorf("%q is not a device URL: want iscsi://[user[%%secret]@]host[:port]/target-iqn/lun or file:///path", url)
	}
}

// openISCSI is replaced when the initiator lands.
var openISCSI = func(c *cli.Context, url string, readOnly bool) (blockdev.Device, error) {
	return nil, fmt.Errorf("iscsi URLs are not supported yet")
}
