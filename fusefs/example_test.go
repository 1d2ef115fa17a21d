package fusefs_test

import (
	"context"
	"log"
	"os"
	"os/signal"

	"github.com/lunbridge/lunbridge/blockdev/filedev"
	"github.com/lunbridge/lunbridge/fusefs"
)

// Expose an image file (any blockdev.Device: an iSCSI LUN, a mirror) as
// /mnt/lun/disk.img until interrupted, then flush, unmount and close.
func ExampleMount() {
	dev, err := filedev.Open("/var/lib/images/vm.img", 512, false)
	if err != nil {
		log.Fatal(err)
	}
	if err := fusefs.ClearStale("/mnt/lun"); err != nil { // after a crash
		log.Fatal(err)
	}
	mp, err := fusefs.Mount("/mnt/lun", dev, fusefs.Options{})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("serving %s", mp.File())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		if err := mp.Unmount(); err != nil { // flushes the device first
			log.Print(err)
		}
	}()
	mp.Wait() // also returns on `lunbridge umount /mnt/lun`
	mp.Flush(context.Background())
	dev.Close()
}
