package blockcopy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lunbridge/lunbridge/blockcopy"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
)

// Pull a device to a sparse, resumable image file with its SHA-256, then
// verify the file against the device.
func ExamplePullFile() {
	ctx := context.Background()
	dev := blockdevtest.NewMem(64<<20, 512)
	dev.WriteAt(ctx, []byte("hello, world"+string(make([]byte, 500))), 1<<20, false)

	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "lun.img")
	res, err := blockcopy.PullFile(ctx, dev, path, blockcopy.PullOptions{
		Options:      blockcopy.Options{Checksum: true},
		SourceID:     "naa.example size=67108864", // checked by a later Resume
		ChecksumFile: true,                        // lun.img.sha256
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("read %d bytes, %d bytes of holes\n", res.BytesRead, res.HoleBytes)

	f, _ := os.Open(path)
	defer f.Close()
	vr, _ := blockcopy.Verify(ctx, dev, f, blockcopy.VerifyOptions{})
	fmt.Println("equal:", vr.Equal)
	// Output:
	// read 1048576 bytes, 67104768 bytes of holes
	// equal: true
}
