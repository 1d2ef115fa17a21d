// Command nbdstandin is a test stand-in for `lunbridge attach/detach` in the VM lab: the same
// command line as the nbd-attach and nbd-reconnect scenarios expect, but the "LUN" is a file in
// the guest (file:///PATH, created with 64 MiB when missing) instead of an iSCSI URL. It lets
// the lab check the guest side of those scenarios — kernel NBD through nbdbridge's netlink
// attach, reconnect after kill -9, mke2fs/mount — before the real attach command exists.
//
//	nbdstandin help attach|detach
//	nbdstandin attach [--reconnect] [--backend=ID] file:///PATH /dev/nbdN    (serves until detached)
//	nbdstandin detach /dev/nbdN
//
// --backend=ID (or NBDSTANDIN_BACKEND=ID) sets NBD_ATTR_BACKEND_IDENTIFIER (AttachOptions.Backend).
// Linux 6.1 then insists on the same identifier in RECONFIGURE ("must specify backend").
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/lunbridge/lunbridge/blockdev/filedev"
	"github.com/lunbridge/lunbridge/nbdbridge"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "nbdstandin:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: nbdstandin help|attach|detach ...")
	}
	switch args[0] {
	case "help":
		if len(args) == 2 && (args[1] == "attach" || args[1] == "detach") {
			fmt.Println("nbdstandin", args[1])
			return nil
		}
		return fmt.Errorf("no help topic")
	case "detach":
		if len(args) != 2 {
			return fmt.Errorf("usage: detach /dev/nbdN")
		}
		idx, err := nbdbridge.ParseDevice(args[1])
		if err != nil {
			return err
		}
		return nbdbridge.Detach(idx)
	case "attach":
		reconnect, backend := false, os.Getenv("NBDSTANDIN_BACKEND")
		rest := args[1:]
		for len(rest) > 0 && strings.HasPrefix(rest[0], "--") {
			switch {
			case rest[0] == "--reconnect":
				reconnect = true
			case strings.HasPrefix(rest[0], "--backend="):
				backend = strings.TrimPrefix(rest[0], "--backend=")
			default:
				return fmt.Errorf("unknown flag %s", rest[0])
			}
			rest = rest[1:]
		}
		if len(rest) != 2 || !strings.HasPrefix(rest[0], "file://") {
			return fmt.Errorf("usage: attach [--reconnect] file:///PATH /dev/nbdN")
		}
		path := strings.TrimPrefix(rest[0], "file://")
		if _, err := os.Stat(path); os.IsNotExist(err) {
			if err := os.WriteFile(path, nil, 0o644); err != nil {
				return err
			}
			if err := os.Truncate(path, 64<<20); err != nil {
				return err
			}
		}
		idx, err := nbdbridge.ParseDevice(rest[1])
		if err != nil {
			return err
		}
		// As lunbridge attach does (the scenarios check it).
		if err := nbdbridge.ReclaimSafe(); err != nil {
			fmt.Fprintf(os.Stderr, "nbdstandin: not reclaim-safe: %v\n", err)
		}
		dev, err := filedev.Open(path, 512, false)
		if err != nil {
			return err
		}
		defer dev.Close()
		srv := nbdbridge.NewServer(dev, nbdbridge.DefaultOptions())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a, err := srv.Attach(ctx, idx, nbdbridge.AttachOptions{
			Reconnect: reconnect, DeadConnTimeout: 2 * time.Minute, Backend: backend,
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "nbdstandin: /dev/nbd%d attached (netlink %v, reconnect %v)\n", a.Index, a.Netlink, reconnect)
		return a.Wait()
	}
	return fmt.Errorf("unknown command %q", args[0])
}
