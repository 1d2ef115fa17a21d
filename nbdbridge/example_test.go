package nbdbridge_test

import (
	"fmt"

	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
	"github.com/lunbridge/lunbridge/nbdbridge"
)

// A server over an in-memory device; Serve(ctx, listener) would export it.
// The flags are what a client sees after negotiating structured replies.
func ExampleNewServer() {
	dev := blockdevtest.NewMem(64<<20, 512)
	opts := nbdbridge.DefaultOptions()
	opts.ExportName = "lun1"
	srv := nbdbridge.NewServer(dev, opts)
	f := srv.TransmissionFlags(true)
	fmt.Println("trim:", f&nbdbridge.FlagSendTrim != 0, "multi-conn:", f&nbdbridge.FlagCanMultiConn != 0, "read-only:", srv.ReadOnly())
	// Output: trim: true multi-conn: true read-only: false
}
