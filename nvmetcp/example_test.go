package nvmetcp_test

import (
	"context"
	"fmt"

	"github.com/lunbridge/lunbridge/internal/testrig/fakenvme"
	"github.com/lunbridge/lunbridge/nvmetcp"
)

// Open namespace 1 of a subsystem and use it as a blockdev.Device.
func Example() {
	ctrl, _ := fakenvme.Listen(fakenvme.Config{Namespaces: []fakenvme.NSConfig{{BlockSize: 4096, Blocks: 256}}})
	defer ctrl.Close()

	ctx := context.Background()
	c, err := nvmetcp.Dial(ctx, nvmetcp.Config{
		Addr:    ctrl.Addr(), // host[:4420]
		SubNQN:  ctrl.NQN(),
		HostNQN: "nqn.2014-08.org.nvmexpress:uuid:01234567-89ab-cdef-0123-456789abcdef",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ns, err := nvmetcp.OpenNamespace(ctx, c, 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	ns.SetOwnsController(true) // Close closes the controller too
	defer ns.Close()

	buf := make([]byte, ns.BlockSize())
	copy(buf, "hello")
	if err := ns.WriteAt(ctx, buf, 8192, true); err != nil {
		fmt.Println(err)
		return
	}
	got := make([]byte, ns.BlockSize())
	if err := ns.ReadAt(ctx, got, 8192); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%d bytes, %d-byte blocks, read back %q\n", ns.Size(), ns.BlockSize(), got[:5])
	// Output: 1048576 bytes, 4096-byte blocks, read back "hello"
}
